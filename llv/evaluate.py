"""Loss and accuracy at a batch of grid points: θ + Σ_j c_j d_j, evaluated functionally.

The model is never modified: every point's tensors are computed from kept copies of θ and the
directions and passed to :func:`torch.func.functional_call`; several points share one pass with
:func:`torch.func.vmap` (``points_per_batch``). Sums stay on the device (float64) until a whole
batch of points is done, so there is no host-device synchronisation per data batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from llv.console import LlvError
from llv.params import ParameterSpace, flatten, full_state, unflatten

LOSSES = ("ce", "mse")
PRECISIONS = ("fp32", "fp64", "tf32", "bf16")


def per_sample_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Per-example loss over the last (class) dimension.

    ``ce``: cross-entropy. ``mse``: mean over classes of (output − one-hot)², on the raw outputs,
    so a linear model's loss is an exact quadratic in its parameters (the reference applied a
    softmax first).

    >>> per_sample_loss(torch.zeros(1, 2), torch.tensor([0]), "mse")
    tensor([0.5000])
    """
    if loss == "ce":
        flat = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat.float() if flat.dtype == torch.bfloat16 else flat,
                               targets.expand(logits.shape[:-1]).reshape(-1),
                               reduction="none").reshape(logits.shape[:-1])
    if loss == "mse":
        one_hot = F.one_hot(targets, logits.shape[-1]).to(logits.dtype)
        return ((logits - one_hot) ** 2).mean(dim=-1)
    raise LlvError(f"unknown loss '{loss}'; valid: {', '.join(LOSSES)}")


class PointMap:
    """θ + Σ_j c_j d_j as ``name -> (k, *shape)`` tensors, from kept copies of θ and the directions.

    >>> import torch
    >>> from llv.params import ParameterSpace
    >>> space = ParameterSpace.of(torch.nn.Linear(1, 1, bias=False))
    >>> points = PointMap(space, {"weight": torch.tensor([[2.0]])}, torch.tensor([[1.0], [10.0]]))
    >>> points.tensors(torch.tensor([[1.0, 0.5]]))["weight"]
    tensor([[[8.]]])
    """

    def __init__(self, space: ParameterSpace, base: Mapping[str, torch.Tensor], directions: torch.Tensor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.space = space
        self.theta = flatten(space, [base[n] for n in space.names]).to(device, dtype)
        self.directions = directions.to(device, dtype)

    def tensors(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = self.theta + torch.as_tensor(coefficients).to(self.theta) @ self.directions
        return unflatten(self.space, flat)


@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor


class PointEvaluator:
    """Evaluates ``loss``, ``acc`` (percent) and ``loss_se`` of each split at grid points.

    With ``bn_data`` (training images), BatchNorm running statistics are re-estimated at every
    point before evaluating, by cumulative averaging over batches of ``batch_size`` as
    ``torch.optim.swa_utils.update_bn`` does; points are then evaluated one at a time.

    Args:
        model: the network; put in eval mode (BatchNorm uses its running statistics).
        space: which tensors the directions perturb.
        base: θ as ``name -> tensor`` for ``space.names`` (the checkpoint's values).
        directions: (D, P) flat directions; a point is a row of D coefficients.
        data: ``split -> EvalData`` (tensors already on the device).
    """

    def __init__(self, model: nn.Module, space: ParameterSpace, base: Mapping[str, torch.Tensor],
                 directions: torch.Tensor, data: Mapping[str, object], loss: str = "ce",
                 batch_size: int = 1024, points_per_batch: int = 1, precision: str = "fp32",
                 channels_last: bool = False, bn_data: object | None = None):
        if precision not in PRECISIONS:
            raise LlvError(f"unknown eval.precision '{precision}'; valid: {', '.join(PRECISIONS)}")
        if loss not in LOSSES:
            raise LlvError(f"unknown loss '{loss}'; valid: {', '.join(LOSSES)}")
        if points_per_batch < 1 or batch_size < 1:
            raise LlvError("eval.points_per_batch and eval.batch_size must be at least 1")
        self.model = model.eval()
        self.space = space
        self.loss = loss
        self.batch_size = int(batch_size)
        self.points_per_batch = int(points_per_batch)
        self.precision = precision
        self.device = next(iter(full_state(model).values())).device
        dtype = torch.float64 if precision == "fp64" else torch.float32
        if precision == "fp64":
            model.double()
        state = full_state(model)
        perturbed = set(space.perturbed)
        self.fixed = {n: t for n, t in state.items() if n not in perturbed}
        self.points = PointMap(space, base, directions, self.device, dtype)
        self.theta = self.points.theta
        memory = torch.channels_last if channels_last else torch.contiguous_format
        self.batches = {
            split: [Batch(d.inputs[i:i + self.batch_size].to(self.device, dtype).contiguous(memory_format=memory)
                          if d.inputs.dim() == 4 else d.inputs[i:i + self.batch_size].to(self.device, dtype),
                          d.targets[i:i + self.batch_size].to(self.device))
                    for i in range(0, len(d.targets), self.batch_size)]
            for split, d in data.items()
        }
        self.sizes = {split: len(d.targets) for split, d in data.items()}
        self.bn_batches = [] if bn_data is None else [
            bn_data.inputs[i:i + self.batch_size].to(self.device, dtype)
            for i in range(0, len(bn_data.inputs), self.batch_size)]
        self.bn_modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn_buffers = [f"{name}.{b}" for name, m in model.named_modules()
                           if isinstance(m, nn.modules.batchnorm._BatchNorm)
                           for b in ("running_mean", "running_var", "num_batches_tracked")
                           if getattr(m, b, None) is not None]
        self._forward_one = lambda params, x: functional_call(self.model, {**self.fixed, **params}, (x,))
        self._forward_many = vmap(self._forward_one, in_dims=(0, None))

    @property
    def metrics(self) -> list[str]:
        return [f"{split}_{m}" for split in self.batches for m in ("loss", "acc", "loss_se")]

    def point_tensors(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ + coefficients @ directions as ``name -> (k, *shape)`` tensors."""
        return self.points.tensors(coefficients)

    @torch.no_grad()
    def evaluate(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics of every row of ``coefficients`` (k, D), as device tensors of shape (k,)."""
        coefficients = torch.as_tensor(coefficients)
        parts = [self._evaluate_group(coefficients[i:i + self.points_per_batch])
                 for i in range(0, len(coefficients), self.points_per_batch)]
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def _evaluate_group(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.bn_batches and len(coefficients) > 1:
            parts = [self._evaluate_group(c[None]) for c in coefficients]
            return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        params = self.point_tensors(coefficients)
        if self.bn_batches:
            params.update({n: t[None] for n, t in self.recompute_bn({n: t[0] for n, t in params.items()}).items()})
        k = len(coefficients)
        out = {}
        for split, batches in self.batches.items():
            total = torch.zeros(k, dtype=torch.float64, device=self.device)
            squares = torch.zeros_like(total)
            correct = torch.zeros_like(total)
            for batch in batches:
                with self._autocast():
                    if k == 1:
                        logits = self._forward_one({n: t[0] for n, t in params.items()}, batch.inputs)[None]
                    else:
                        logits = self._forward_many(params, batch.inputs)
                losses = per_sample_loss(logits, batch.targets, self.loss).double()
                total += losses.sum(dim=1)
                squares += (losses ** 2).sum(dim=1)
                correct += (logits.argmax(dim=-1) == batch.targets).sum(dim=1)
            n = self.sizes[split]
            mean = total / n
            variance = (squares - n * mean ** 2).clamp_min(0) / max(n - 1, 1)
            out[f"{split}_loss"] = mean
            out[f"{split}_acc"] = 100.0 * correct / n
            out[f"{split}_loss_se"] = (variance / n).sqrt()
        return out

    def recompute_bn(self, point: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fresh BatchNorm running statistics of the network at ``point``, from ``bn_data``."""
        fresh = {}
        for name in self.bn_buffers:
            like = self.fixed.get(name, point.get(name))
            fill = 1.0 if name.endswith("running_var") else 0.0
            fresh[name] = torch.full(like.shape, fill, dtype=like.dtype, device=like.device)
        state = {**self.fixed, **point, **fresh}
        saved = [(m, m.training, m.momentum) for m in self.bn_modules]
        try:
            for m in self.bn_modules:
                m.train()
                m.momentum = None  # cumulative average over batches
            for x in self.bn_batches:
                with self._autocast():
                    functional_call(self.model, state, (x,))
        finally:
            for m, training, momentum in saved:
                m.train(training)
                m.momentum = momentum
        return fresh

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def configure_precision(precision: str, device: torch.device) -> None:
    """fp32 means true fp32 on CUDA (TF32 off); tf32 allows TF32 matmuls and convolutions."""
    if device.type == "cuda":
        allow = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
