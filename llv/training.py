"""Training pieces: optimizers (SGD-Nesterov, Adam, SAM/ASAM), the schedule, one epoch, evaluation.

SAM (Foret et al. 2021) takes two forward/backward passes per step: the gradient ``g`` at ``w``
gives the ascent ``e = rho g / ||g||``; the gradient ``g'`` at ``w + e`` is then applied from
``w`` by the base optimizer. ASAM (Kwon et al. 2021) scales elementwise with ``T = |w| + eta``:
``e = rho T^2 g / ||T g||``. ``g`` is the loss gradient only; the base optimizer adds weight
decay. BatchNorm running statistics are updated by the first pass only.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import Counter
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from llv.console import LlvError
from llv.losses import per_example_correct, per_example_loss

OPTIMIZERS = ("sgd", "adam", "sam")
SAM_BASES = ("sgd", "adam")


class SAM:
    """Sharpness-aware minimization around a base optimizer (ASAM with ``adaptive=True``).

    Use :meth:`first_step` after the first backward pass (moves to ``w + e``) and
    :meth:`second_step` after the second (back to ``w``, then the base step with ``g'``).
    ``param_groups`` are the base optimizer's, so learning-rate schedules act on both.

    Args:
        base: The optimizer that makes the actual update (SGD or Adam over the same parameters).
        rho: Radius of the neighbourhood.
        adaptive: ASAM: scale the ascent elementwise by ``T = |w| + eta``.
        eta: ASAM's offset that lets zero weights move (Kwon et al. use 0.01).
    """

    def __init__(self, base: torch.optim.Optimizer, rho: float = 0.05, adaptive: bool = False,
                 eta: float = 0.01):
        if rho < 0:
            raise LlvError(f"train.sam.rho must be >= 0, got {rho}")
        self.base = base
        self.rho = float(rho)
        self.adaptive = bool(adaptive)
        self.eta = float(eta)
        self._ascent: dict[torch.nn.Parameter, torch.Tensor] = {}

    @property
    def param_groups(self) -> list[dict]:
        return self.base.param_groups

    def _params(self) -> Iterator[torch.nn.Parameter]:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield p

    def _scale(self, p: torch.Tensor) -> torch.Tensor:
        return p.detach().abs() + self.eta

    @torch.no_grad()
    def first_step(self) -> None:
        """Move every parameter to ``w + e`` (the gradients must be those at ``w``)."""
        params = list(self._params())
        if not params:
            return
        scaled = [(self._scale(p) * p.grad if self.adaptive else p.grad) for p in params]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
        factor = self.rho / (norm + 1e-12)
        for p, s in zip(params, scaled, strict=True):
            ascent = (self._scale(p) * s if self.adaptive else s) * factor
            p.add_(ascent)
            self._ascent[p] = ascent

    @torch.no_grad()
    def second_step(self) -> None:
        """Return to ``w`` and let the base optimizer step with the gradients taken at ``w + e``."""
        for p, ascent in self._ascent.items():
            p.sub_(ascent)
        self._ascent.clear()
        self.base.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "rho": self.rho, "adaptive": self.adaptive,
                "eta": self.eta}

    def load_state_dict(self, state: Mapping) -> None:
        self.base.load_state_dict(state["base"])


def build_optimizer(model: nn.Module, kind: str = "sgd", lr: float = 0.1, *,
                    momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0,
                    sam_base: str = "sgd", sam_rho: float = 0.05, sam_adaptive: bool = False,
                    sam_eta: float = 0.01) -> torch.optim.Optimizer | SAM:
    """The optimizer ``kind``: ``sgd`` (Nesterov momentum), ``adam`` or ``sam`` around ``sam_base``.

    Args:
        model: Its parameters are optimized.
        kind: ``sgd``, ``adam`` or ``sam``.
        lr: Learning rate (finite, > 0).
        momentum: SGD momentum; Nesterov only when ``nesterov`` and ``momentum > 0``.
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 coefficient added by the (base) optimizer.
        sam_base: SAM's base optimizer, ``sgd`` or ``adam``.
        sam_rho, sam_adaptive, sam_eta: See :class:`SAM`.

    Raises:
        LlvError: An unknown kind or a non-finite or out-of-range number.
    """
    kind = str(kind).lower()
    if kind not in OPTIMIZERS:
        raise LlvError(f"unknown train.optimizer '{kind}'; valid: {', '.join(OPTIMIZERS)}")
    _check_finite_numbers(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if not float(lr) > 0:
        raise LlvError(f"train.lr must be > 0, got {lr}")
    settings = {"lr": float(lr), "momentum": float(momentum), "nesterov": bool(nesterov),
                "weight_decay": float(weight_decay)}
    if kind != "sam":
        return _base_optimizer(kind, model.parameters(), **settings)
    base_kind = str(sam_base).lower()
    if base_kind not in SAM_BASES:
        raise LlvError(f"unknown train.sam.base '{sam_base}'; valid: {', '.join(SAM_BASES)}")
    _check_finite_numbers(**{"sam.rho": sam_rho, "sam.eta": sam_eta})
    base = _base_optimizer(base_kind, model.parameters(), **settings)
    return SAM(base, rho=float(sam_rho), adaptive=bool(sam_adaptive), eta=float(sam_eta))


def _check_finite_numbers(**values) -> None:
    for name, value in values.items():
        if not math.isfinite(float(value)):
            raise LlvError(f"train.{name} must be a finite number, got {value}")


def _base_optimizer(kind: str, params, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                           weight_decay=weight_decay)


def base_optimizer(optimizer: torch.optim.Optimizer | SAM) -> torch.optim.Optimizer:
    """The optimizer that updates the weights (SAM's base, else the optimizer itself)."""
    return optimizer.base if isinstance(optimizer, SAM) else optimizer


def build_scheduler(optimizer: torch.optim.Optimizer | SAM, milestones=(), gamma: float = 0.1):
    """MultiStepLR: the learning rate times ``gamma`` after each epoch in ``milestones``."""
    _check_finite_numbers(gamma=gamma)
    return torch.optim.lr_scheduler.MultiStepLR(base_optimizer(optimizer),
                                                milestones=sorted(int(m) for m in milestones or ()),
                                                gamma=float(gamma))


def current_lr(optimizer: torch.optim.Optimizer | SAM) -> float:
    return float(optimizer.param_groups[0]["lr"])


# ------------------------------------------------------------------------------- BatchNorm


@contextlib.contextmanager
def running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode passes inside leave BatchNorm running statistics exactly as they were.

    Like davda54/sam's ``disable_running_stats`` (momentum 0), but the buffers are restored
    exactly, ``num_batches_tracked`` included.
    """
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            buffers = (module.running_mean, module.running_var, module.num_batches_tracked)
            saved.append((buffers, [b.clone() if b is not None else None for b in buffers]))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffers, copies in saved:
                for live, copy in zip(buffers, copies, strict=True):
                    if live is not None:
                        live.copy_(copy)


# ------------------------------------------------------------------------------ steps, epochs


def _forward_backward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor):
    logits = model(inputs)
    loss = per_example_loss(logits, targets, "ce").mean()  # tokens too: (B, T, V) logits
    loss.backward()
    return loss.detach(), logits.detach()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer | SAM, inputs: torch.Tensor,
               targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns (loss, number correct) at the weights before it.

    Both results stay on the device (no host synchronisation per batch).
    """
    optimizer.zero_grad(set_to_none=True)
    loss, logits = _forward_backward(model, inputs, targets)
    if isinstance(optimizer, SAM):
        optimizer.first_step()
        optimizer.zero_grad(set_to_none=True)
        with running_stats_frozen(model):
            _forward_backward(model, inputs, targets)
        optimizer.second_step()
    else:
        optimizer.step()
    return loss, per_example_correct(logits, targets).sum()


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer | SAM,
                device: torch.device, on_step=None) -> tuple[float, float]:
    """One pass over ``loader`` in train mode; mean batch loss and accuracy (%) along the way."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    non_blocking = device.type == "cuda"
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=non_blocking)
        targets = targets.to(device, non_blocking=non_blocking)
        loss, hits = train_step(model, optimizer, inputs, targets)
        loss_sum += loss.double() * targets.shape[0]
        correct += hits
        seen += targets.shape[0]
        if on_step is not None:
            on_step()
    if seen == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


@torch.no_grad()
def evaluate_model(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (%) in eval mode over tensors already on the device."""
    was_training = model.training
    model.eval()
    n = int(targets.shape[0])
    loss_sum = torch.zeros((), dtype=torch.float64, device=targets.device)
    correct = torch.zeros((), dtype=torch.float64, device=targets.device)
    try:
        for start in range(0, n, batch_size):
            logits = model(inputs[start:start + batch_size])
            batch_targets = targets[start:start + batch_size]
            loss_sum += per_example_loss(logits, batch_targets, "ce").double().sum()
            correct += per_example_correct(logits, batch_targets).sum()
    finally:
        model.train(was_training)
    if n == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / n, 100.0 * correct.item() / n


# ------------------------------------------------------------------------ RNG state (resume)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """Every random stream training draws from, in types that ``weights_only`` loading accepts."""
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype("int64")),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": _python_rng_state(),
    }
    if generator is not None:
        state["loader"] = generator.get_state()
    return state


def set_rng_state(state: Mapping, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype("uint32"),
                         numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if generator is not None and "loader" in state:
        generator.set_state(state["loader"])


def _python_rng_state() -> tuple:
    version, internal, gauss = random.getstate()
    return (version, list(internal), gauss)


def scheduler_state(scheduler) -> dict:
    """The scheduler's state with its ``Counter`` of milestones as a plain dict (safe to load)."""
    state = dict(scheduler.state_dict())
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = {int(k): int(v) for k, v in state["milestones"].items()}
    return state


def load_scheduler_state(scheduler, state: Mapping) -> None:
    state = dict(state)
    if isinstance(state.get("milestones"), Mapping):
        state["milestones"] = Counter({int(k): int(v) for k, v in state["milestones"].items()})
    scheduler.load_state_dict(state)
