"""The tensors a direction perturbs, and flat views of them.

``type="weights"`` perturbs ``model.parameters()`` (in ``named_parameters()`` order);
``type="states"`` perturbs every floating entry of ``state_dict()`` (in its order), so BatchNorm
running statistics move too. Integer entries (``num_batches_tracked``) keep their place in the
order, as in the reference implementation's direction files, but are never perturbed.

A tensor registered under several names (tied weights, e.g. a language model's embedding and
output layer) appears once, under its first name, as in ``named_parameters()``: the
``state_dict`` lists every alias, but ``torch.func.functional_call`` takes a tied tensor
under one name only. Another model's or a checkpoint's values are read by that first name.
0-dim tensors (a learnable temperature, a scalar buffer) are entries of one element.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from llv.errors import LlvError

DIRECTION_TYPES = ("weights", "states")


@dataclass(frozen=True)
class ParameterSpace:
    """Names and shapes of the tensors a direction is made of, in file order.

    >>> space = ParameterSpace.of(nn.Linear(3, 2), "weights")
    >>> space.names, space.numel
    (['weight', 'bias'], 8)
    """

    type: str
    names: list[str]
    shapes: list[torch.Size]
    floating: list[bool]

    @classmethod
    def of(cls, model: nn.Module, type: str = "weights") -> ParameterSpace:
        if type == "weights":
            entries = [(n, p) for n, p in model.named_parameters()]
        elif type == "states":
            entries = _unique_state(model)
        else:
            raise LlvError(f"unknown direction.type '{type}'; valid: {', '.join(DIRECTION_TYPES)}")
        return cls(type, [n for n, _ in entries], [t.shape for _, t in entries],
                   [t.is_floating_point() for _, t in entries])

    @property
    def perturbed(self) -> list[str]:
        """Names that directions move (floating tensors only)."""
        return [n for n, f in zip(self.names, self.floating) if f]

    @property
    def numel(self) -> int:
        return sum(int(torch.Size(s).numel()) for s, f in zip(self.shapes, self.floating) if f)

    def values(self, model: nn.Module) -> list[torch.Tensor]:
        """Detached copies of the model's tensors in this space's order."""
        state = model.state_dict()
        return [state[n].detach().clone() for n in self.names]


def _unique_state(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``state_dict()``'s entries with each tied tensor once, under its first name.

    >>> net = nn.Sequential(nn.Embedding(4, 2), nn.Linear(2, 4, bias=False))
    >>> net[1].weight = net[0].weight
    >>> [name for name, _ in _unique_state(net)]
    ['0.weight']
    """
    seen, entries = set(), []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if isinstance(tensor, torch.Tensor):
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
        entries.append((name, tensor))
    return entries


def values_of(other, space: ParameterSpace) -> list[torch.Tensor]:
    """Another model's (or a state dict's) tensors in ``space``'s order, checked by name."""
    state = other.state_dict() if isinstance(other, nn.Module) else dict(other)
    missing = [n for n in space.names if n not in state]
    if missing:
        raise LlvError(f"the other model has no tensor {missing[0]} (+{len(missing) - 1} more): "
                       "is it another architecture?")
    wrong = [n for n, shape in zip(space.names, space.shapes) if tuple(state[n].shape) != tuple(shape)]
    if wrong:
        name = wrong[0]
        raise LlvError(f"the other model's {name} is {tuple(state[name].shape)}, this model's "
                       f"{tuple(space.shapes[space.names.index(name)])} (+{len(wrong) - 1} more): "
                       "is it another architecture or width?")
    return [state[n].detach().clone() for n in space.names]


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name (detached), the input of ``functional_call``."""
    state = {n: p.detach() for n, p in model.named_parameters()}
    state.update({n: b.detach() for n, b in model.named_buffers()})
    return state


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, dtypes, shapes and bytes): a
    resumed result file must come from the same model, not only the same directions.

    >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> state_digest(a) == state_digest(a), state_digest(a) == state_digest(b)
    (True, False)
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in full_state(model).items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def flatten(space: ParameterSpace, tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate the perturbed tensors of ``tensors`` (aligned with ``space.names``) into 1-D."""
    parts = [t.reshape(-1) for t, f in zip(tensors, space.floating) if f]
    return torch.cat(parts) if parts else torch.zeros(0)


def unflatten(space: ParameterSpace, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Views of a flat vector (or of each row of a (k, P) matrix) as ``name -> tensor``."""
    batch = vector.shape[:-1]
    out, start = {}, 0
    for name, shape, floating in zip(space.names, space.shapes, space.floating):
        if not floating:
            continue
        size = int(torch.Size(shape).numel())
        out[name] = vector[..., start:start + size].reshape(tuple(batch) + tuple(shape))
        start += size
    if start != vector.shape[-1]:
        raise ValueError(f"vector has {vector.shape[-1]} entries, the space {start}")
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the duration; every submodule's own flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training
