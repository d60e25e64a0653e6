"""The one per-example loss table: surfaces, Hessians, sharpness and the probe all use it.

A loss maps a model's outputs and the targets of a batch to one value per example:

- ``"ce"``: cross-entropy of the logits (the last dimension of the outputs);
- ``"mse"``: the mean over classes of (output − one-hot)², on the raw outputs, so the loss of
  a linear model is an exact quadratic in its parameters (the reference implementation applies
  a softmax first);
- any callable ``(outputs, batch) -> (B,)`` per-example losses, for models with dict batches
  or losses of their own.

Targets may be class indices ``(B,)`` or sequences of them ``(B, T)`` (a language model's next
tokens); a sequence's loss is the mean over its tokens, skipping :data:`IGNORE_INDEX`. Outputs
may carry leading dimensions before the batch (several grid points evaluated in one vmapped
pass): the result then has them too. The mean over examples of these values is the loss that
surfaces show and whose Hessian ``llv.hessian`` takes, so both always agree.

>>> import torch
>>> per_example_loss(torch.zeros(1, 2), torch.tensor([0]), "mse")
tensor([0.5000])
>>> per_example_loss(torch.zeros(2, 3, 4), torch.tensor([[1, 2, -100], [0, 0, 0]]), "ce")
tensor([1.3863, 1.3863])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from llv.errors import LlvError

#: Label value that token-level losses and accuracies skip (PyTorch's and Hugging Face's).
IGNORE_INDEX = -100

LossFunction = Callable[[object, object], Tensor]
"""``(outputs, batch) -> per-example losses (B,)``: a user's own loss."""

#: Keys of a dict batch that hold the targets, in the order they are looked for.
TARGET_KEYS = ("labels", "label", "targets", "target", "y")


def logits_of(outputs) -> Tensor:
    """The tensor of scores in a model's outputs: the tensor itself, ``.logits`` (Hugging
    Face's model outputs), ``["logits"]`` or the first element of a tuple."""
    if torch.is_tensor(outputs):
        return outputs
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, Sequence) and outputs and torch.is_tensor(outputs[0]):
        logits = outputs[0]
    if not torch.is_tensor(logits):
        raise LlvError(f"cannot find logits in the model's outputs ({type(outputs).__name__}): "
                       "return a tensor, or pass loss=<callable (outputs, batch) -> losses>")
    return logits


def _token_mask(targets: Tensor) -> Tensor:
    return targets != IGNORE_INDEX


def _reduce_tokens(values: Tensor, targets: Tensor) -> Tensor:
    """Mean over the token dimensions of (..., *targets.shape) values, skipping ignored ones."""
    extra = targets.dim() - 1
    if extra <= 0:
        return values
    mask = _token_mask(targets).to(values.dtype)
    dims = tuple(range(values.dim() - extra, values.dim()))
    return (values * mask).sum(dim=dims) / mask.sum(dim=tuple(range(1, targets.dim()))).clamp_min(1)


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    lead = logits.shape[: logits.dim() - targets.dim() - 1]
    flat = logits.reshape(-1, logits.shape[-1])
    if flat.dtype in (torch.bfloat16, torch.float16):
        flat = flat.float()
    expanded = targets.expand(*lead, *targets.shape).reshape(-1)
    per_token = F.cross_entropy(flat, expanded, reduction="none", ignore_index=IGNORE_INDEX)
    return per_token.reshape(*lead, *targets.shape)


def _squared_error(logits: Tensor, targets: Tensor) -> Tensor:
    if targets.is_floating_point():
        goal = targets
        return ((logits - goal) ** 2).mean(dim=-1)
    one_hot = F.one_hot(targets.clamp_min(0), logits.shape[-1]).to(logits.dtype)
    return ((logits - one_hot) ** 2).mean(dim=-1)


#: Loss name -> per-token (or per-example) values; :func:`per_example_loss` reduces tokens.
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "ce": _cross_entropy,
    "mse": _squared_error,
}


def check_loss(loss) -> None:
    """One line for a loss that is neither a known name nor a callable of llv's signature."""
    if isinstance(loss, torch.nn.modules.loss._Loss):
        raise LlvError(f"loss={type(loss).__name__}(): torch's loss modules take (input, target) and "
                       "reduce over the batch; llv calls loss(outputs, batch) and needs one value per "
                       "example, e.g. loss=lambda outputs, batch: F.mse_loss(outputs, batch[1], "
                       "reduction='none').mean(-1), or a named loss: " + ", ".join(LOSSES))
    if callable(loss):
        return
    if loss not in LOSSES:
        raise LlvError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)} or a callable "
                       "(outputs, batch) -> per-example losses")


def per_example_loss(outputs, targets: Tensor, loss: str = "ce") -> Tensor:
    """Per-example loss of named ``loss`` (see the module docstring); shape (*lead, B)."""
    check_loss(loss)
    logits = logits_of(outputs)
    if targets.is_floating_point() and loss == "ce":
        raise LlvError("loss=ce needs integer class targets; use loss=mse for float targets")
    if targets.is_floating_point():
        logits, targets = _matching_values(logits, targets)
    # float targets (N, [T,] C) carry the class dimension last; class indices do not
    index_shaped = targets[..., 0] if targets.is_floating_point() else targets
    return _reduce_tokens(LOSSES[loss](logits, targets), index_shaped)


def _matching_values(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Float targets and outputs with the same trailing shape, one value per example given as
    ``(B,)`` or ``(B, 1)`` on either side; anything else would broadcast into wrong numbers."""
    if targets.dim() == 1:
        targets = targets[:, None]
    if (targets.dim() == 2 and targets.shape[1] == 1 and logits.shape[-1:] == targets.shape[:1]
            and logits.shape[-2:] != targets.shape):
        logits = logits[..., None]  # outputs (B,): one value per example
    if logits.shape[logits.dim() - targets.dim():] != targets.shape:
        raise LlvError(f"loss=mse: the model's outputs {tuple(logits.shape)} do not match the float "
                       f"targets {tuple(targets.shape)} (expected outputs ending in "
                       f"{tuple(targets.shape)}); pass loss=<callable (outputs, batch) -> per-example "
                       "losses> for another pairing")
    return logits, targets


def per_example_correct(outputs, targets: Tensor) -> Tensor:
    """Fraction of correct predictions per example (1 or 0 for class targets, the share of
    correct tokens for sequences); shape (*lead, B)."""
    logits = logits_of(outputs)
    hits = (logits.argmax(dim=-1) == targets).to(torch.float64)
    return _reduce_tokens(hits, targets)


def has_accuracy(loss, targets) -> bool:
    """Accuracy is defined for the named losses on integer class targets."""
    return isinstance(loss, str) and torch.is_tensor(targets) and not targets.is_floating_point()


def mean_and_se(total: float, squares: float, n: int) -> tuple[float, float]:
    """Mean and its standard error from a sum and a sum of squares over ``n`` values.

    >>> mean_and_se(6.0, 14.0, 3)  # values 1, 2, 3
    (2.0, 0.5773502691896257)
    """
    mean = total / n
    variance = max(squares - n * mean * mean, 0.0) / max(n - 1, 1)
    return mean, math.sqrt(variance / n)
