"""Sharpness of the training loss at a point, and the generalization gap it is meant to predict.

Three measures of how fast the loss rises around θ, all on the loss the Hessian is taken of
(:func:`llv.hessian.operator_at`: ``hessian.max_samples`` examples of ``eval.splits[0]``, BatchNorm
in eval mode, ``hessian.dtype``), and over every parameter of the model:

- **ε-sharpness** (Keskar et al. 2017): the largest loss in the box
  ``|δᵢ| ≤ ε(|θᵢ| + 1)``, reported as ``100 · (max L − L(θ)) / (1 + L(θ))``;
- **adaptive sharpness** (the neighbourhood ASAM, Kwon et al. 2021, ascends in; ``llv train
  train.optimizer=sam train.sam.adaptive=true``): the largest increase ``max L(θ + δ) − L(θ)``
  over the ellipsoid ``‖T⁻¹δ‖₂ ≤ ρ``, ``T = diag(|θ| + η)`` elementwise over all parameters
  (biases and BatchNorm included, as :class:`llv.training.SAM` does);
- **random-direction increase**: the mean over K filter-normalized random directions d_k (the
  very directions ``llv surface direction.seed=s+k grid.y=null`` uses) of
  ``½ [L(θ + r d_k) + L(θ − r d_k)] − L(θ)``, with its standard deviation over the K directions.

The two maxima are found by projected gradient ascent with an unbounded step — each iterate is
the point of the set that maximizes the loss's linearization at the previous one
(``δ ← w ⊙ sign(∇L)`` on the box, ``δ ← ρ T²∇L / ‖T∇L‖`` on the ellipsoid, ASAM's own ascent
step). For a loss that is convex over the set this never decreases the loss and stops at a
vertex (box) or a stationary point on the boundary (ellipsoid); restart 0 starts at θ (its first
step is the FGSM / ASAM step), the others at seeded random points of the set, and the best loss
seen anywhere is kept, so the reported value is always a loss actually evaluated — a lower bound
on the true maximum.

The core functions take a closure ``δ -> (L(θ + δ), ∇L(θ + δ))`` over flat vectors, so they are
exact on a plain quadratic:

>>> import torch
>>> theta = torch.tensor([1.0, -2.0], dtype=torch.float64)
>>> a = torch.tensor([2.0, 1.0], dtype=torch.float64)
>>> def quadratic(delta):  # L(θ) = ½ Σ aᵢ θᵢ²
...     x = theta + delta
...     return float(0.5 * (a * x * x).sum()), a * x
>>> round(epsilon_sharpness(quadratic, theta, eps=0.1)["value"], 6)  # box max at (1.2, -2.3)
27.125
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from llv.console import LlvError, print_table

__all__ = [
    "LossAndGradient",
    "adaptive_sharpness",
    "ascend",
    "direction_increase",
    "epsilon_box",
    "epsilon_sharpness",
    "generalization_gap",
    "measure_point",
    "report_sharpness",
]

LossAndGradient = Callable[[Tensor], tuple[float, Tensor]]
"""δ (flat, like θ) -> (L(θ + δ), ∇L(θ + δ)); the loss as a Python float."""


# ------------------------------------------------------------------------- ascent over a set


def ascend(objective: LossAndGradient, linear_maximizer: Callable[[Tensor], Tensor],
           starts: list[Tensor], steps: int, converged: Callable[[Tensor, Tensor], bool],
           tol: float = 1e-4) -> dict:
    """The largest loss reached by unit-step conditional-gradient ascent from each start.

    A restart ends after ``steps`` evaluations, when the iterate stops moving, or when a step
    changes the loss by at most ``tol`` times what the restart has gained so far (float32
    gradients keep nudging the iterate long after the loss has settled).

    Args:
        objective: δ -> (loss, gradient).
        linear_maximizer: g -> the point of the set maximizing ⟨g, δ⟩.
        starts: first iterate of each restart.
        steps: loss-and-gradient evaluations per restart, at most.
        converged: (new, old) -> True when the iterate no longer moves.
        tol: relative loss change that ends a restart.

    Returns:
        ``max_loss``, the ``delta`` that reached it, the ``restart`` it came from and the
        ``num_evaluations`` of the objective.
    """
    if steps < 1:
        raise LlvError(f"sharpness.steps must be at least 1, got {steps}")
    best = {"max_loss": -math.inf, "delta": starts[0], "restart": 0, "num_evaluations": 0}
    for restart, delta in enumerate(starts):
        first = previous = None
        for step in range(steps):
            loss, gradient = objective(delta)
            best["num_evaluations"] += 1
            if loss > best["max_loss"]:  # a NaN loss is never the maximum
                best.update(max_loss=loss, delta=delta, restart=restart)
            if step == steps - 1 or not math.isfinite(loss):  # NaN/inf: no direction to follow
                break
            if first is None:
                first = loss
            elif abs(loss - previous) <= tol * (loss - first):
                break
            previous = loss
            following = linear_maximizer(gradient)
            if converged(following, delta):
                break
            delta = following
    return best


def epsilon_box(theta: Tensor, eps: float) -> Tensor:
    """Half-widths of Keskar et al.'s box: ``ε (|θᵢ| + 1)``."""
    if not eps > 0:
        raise LlvError(f"sharpness.eps must be positive, got {eps}")
    return eps * (theta.abs() + 1)


def epsilon_sharpness(objective: LossAndGradient, theta: Tensor, eps: float = 1e-3,
                      steps: int = 20, restarts: int = 2, seed: int = 0,
                      loss: float | None = None, tol: float = 1e-4) -> dict:
    """Keskar et al.'s ε-sharpness: ``100 (max_{|δᵢ| ≤ ε(|θᵢ|+1)} L(θ+δ) − L) / (1 + L)``.

    Args:
        objective: δ -> (L(θ + δ), ∇L(θ + δ)).
        theta: the point, flat.
        eps: relative size of the box.
        steps: loss-and-gradient evaluations per restart, at most.
        restarts: starts: θ itself, then uniform random points of the box.
        seed: seeds the random starts.
        loss: L(θ) if already known (else evaluated).
        tol: end a restart when a step changes the loss by at most ``tol`` times its gain.

    Returns:
        ``value`` (the measure), ``max_loss``, ``loss`` and ``num_evaluations``.
    """
    half = epsilon_box(theta, eps)
    generator = torch.Generator().manual_seed(int(seed))
    starts = [torch.zeros_like(theta)] + [
        ((2 * torch.rand(theta.shape, generator=generator, dtype=torch.float64) - 1)
         .to(theta) * half) for _ in range(max(int(restarts), 1) - 1)]
    found = ascend(objective, lambda g: half * torch.sign(g), starts, int(steps),
                   lambda new, old: bool(torch.equal(new, old)), tol)
    loss = _loss_at_theta(objective, theta, loss)
    maximum = max(found["max_loss"], loss)
    return {"value": 100.0 * (maximum - loss) / (1.0 + loss), "max_loss": maximum, "loss": loss,
            "num_evaluations": found["num_evaluations"], "restart": found["restart"]}


def adaptive_sharpness(objective: LossAndGradient, theta: Tensor, rho: float = 0.05,
                       eta: float = 0.01, steps: int = 20, restarts: int = 2, seed: int = 0,
                       loss: float | None = None, tol: float = 1e-4) -> dict:
    """ASAM's sharpness: ``max_{‖T⁻¹δ‖₂ ≤ ρ} L(θ+δ) − L(θ)`` with ``T = diag(|θ| + η)``.

    Args:
        objective: δ -> (L(θ + δ), ∇L(θ + δ)).
        theta: the point, flat.
        rho: radius of the ellipsoid (in the T-scaled coordinates u = T⁻¹δ).
        eta: ASAM's offset (``train.sam.eta``), so that zero weights may move too.
        steps: loss-and-gradient evaluations per restart, at most.
        restarts: starts: θ itself, then seeded random points on the boundary.
        seed: seeds the random starts.
        loss: L(θ) if already known (else evaluated).
        tol: end a restart when ``‖T⁻¹(δ_new − δ_old)‖ ≤ tol · ρ`` or a step changes the loss
            by at most ``tol`` times its gain.

    Returns:
        ``value`` (the increase), ``max_loss``, ``loss`` and ``num_evaluations``.
    """
    if not rho > 0:
        raise LlvError(f"sharpness.rho must be positive, got {rho}")
    if eta < 0:
        raise LlvError(f"sharpness.eta must be >= 0, got {eta}")
    scale = theta.abs() + eta
    generator = torch.Generator().manual_seed(int(seed))
    starts = [torch.zeros_like(theta)]
    for _ in range(max(int(restarts), 1) - 1):
        u = torch.randn(theta.shape, generator=generator, dtype=torch.float64).to(theta)
        starts.append(scale * u * (rho / u.norm()))

    def linear_maximizer(g: Tensor) -> Tensor:
        scaled = scale * g
        norm = scaled.norm()
        return scale * scaled * (rho / norm) if norm > 0 else torch.zeros_like(g)

    def converged(new: Tensor, old: Tensor) -> bool:
        return bool(((new - old) / scale).norm() <= tol * rho)

    found = ascend(objective, linear_maximizer, starts, int(steps), converged, tol)
    loss = _loss_at_theta(objective, theta, loss)
    maximum = max(found["max_loss"], loss)
    return {"value": maximum - loss, "max_loss": maximum, "loss": loss,
            "num_evaluations": found["num_evaluations"], "restart": found["restart"]}


def _loss_at_theta(objective: LossAndGradient, theta: Tensor, loss: float | None) -> float:
    return float(loss) if loss is not None else float(objective(torch.zeros_like(theta))[0])


def direction_increase(loss: float, plus, minus) -> dict:
    """The average loss increase over K directions at ±r, and its spread over the directions.

    Per direction ``m_k = ½ (L(θ + r d_k) + L(θ − r d_k)) − L(θ)``; returns their ``mean``,
    ``std`` (sample standard deviation, ddof=1; 0 for a single direction) and the ``values``.

    >>> direction_increase(1.0, [1.5, 2.0], [1.5, 1.0])["mean"]
    0.5
    """
    plus, minus = np.asarray(plus, dtype=float), np.asarray(minus, dtype=float)
    values = 0.5 * (plus + minus) - float(loss)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def generalization_gap(train_loss: float, test_loss: float, train_acc: float,
                       test_acc: float) -> dict:
    """``gap_loss = test − train loss``, ``gap_acc = train − test accuracy`` (percentage points),
    ``test_error = 100 − test accuracy``: both gaps are positive when unseen data fare worse.

    >>> generalization_gap(0.1, 0.3, 100.0, 97.5)["gap_acc"]
    2.5
    """
    return {"gap_loss": test_loss - train_loss, "gap_acc": train_acc - test_acc,
            "test_error": 100.0 - test_acc}


# ------------------------------------------------------------------ at a model's point


def operator_objective(make_operator: Callable, base) -> tuple[LossAndGradient, Tensor, float]:
    """(δ -> (L, ∇L), θ, L(θ)) on the Hessian's loss; ``base`` is the operator at θ and
    ``make_operator(state)`` builds one (a :class:`llv.curvature.HessianOperator`) at ``state``.

    Every evaluation builds the operator at ``θ + δ`` (cheap: views of the kept data) and makes one
    forward pass for the loss and one forward-backward pass for the gradient.
    """
    theta = base.flatten(dict(base.model.named_parameters())).detach()

    def objective(delta: Tensor) -> tuple[float, Tensor]:
        op = make_operator(base.unflatten(theta + delta))
        return op.loss_value(), op.gradient()

    return objective, theta, base.loss_value()


def random_direction_losses(model, make_operator: Callable, radius: float, count: int, *,
                            seed: int = 0, norm: str = "filter", ignore: str = "biasbn",
                            type: str = "weights", device=None, dtype: torch.dtype | None = None) -> dict:
    """L(θ ± r d_k) on the Hessian's loss for the K random directions ``llv surface`` would draw
    with ``direction.seed = seed, …, seed + K − 1`` (and the same ``norm``, ``ignore``, ``type``).

    θ ± r d_k is formed in ``dtype``, the operator's own precision by default (a float64
    operator must not see points rounded to float32: the increases are tiny differences)."""
    from llv import direction as dirs
    from llv.evaluate import PointMap
    from llv.params import ParameterSpace

    if count < 1:
        raise LlvError(f"sharpness.directions must be at least 1, got {count}")
    space = ParameterSpace.of(model, type)
    values = space.values(model)
    made = dirs.make_random(space, values, ndim=1, seed=int(seed), norm=norm, ignore=ignore,
                            ensemble=int(count))
    device = device if device is not None else values[0].device
    dtype = dtype if dtype is not None else make_operator(None).dtype
    points = PointMap(space, dict(zip(space.names, values)), made.flat(), device, dtype)
    losses = np.empty((2, count))
    for k in range(count):
        for side, sign in enumerate((1.0, -1.0)):
            row = torch.zeros(1, count)
            row[0, k] = sign * radius
            state = {n: t[0] for n, t in points.tensors(row).items()}
            losses[side, k] = make_operator(state).loss_value()
    return {"plus": losses[0], "minus": losses[1], "seed": int(seed), "norm": norm,
            "ignore": ignore, "type": type}


def measure_point(make_operator: Callable, model, splits: dict, *, eps: float = 1e-3,
                  rho: float = 0.05, eta: float = 0.01, radius: float = 0.1, directions: int = 8,
                  steps: int = 20, restarts: int = 2, seed: int = 0, direction_seed: int = 0,
                  norm: str = "filter", ignore: str = "biasbn", type: str = "weights",
                  device=None) -> dict:
    """Every sharpness measure and the generalization gap at ``model``'s parameters.

    ``make_operator(state=None)`` builds the Hessian operator at ``state`` (the model's point
    by default); ``splits`` holds the train and test ``<split>_loss``/``<split>_acc`` at the
    point (NaN where a split is missing). Returns flat keys (floats, strings, small arrays)
    ready to be HDF5 attributes, and ``seconds`` per measure.
    """
    steps, restarts = int(steps), int(restarts)
    seconds = {}
    start = time.perf_counter()
    base = make_operator(None)
    objective, theta, loss = operator_objective(make_operator, base)
    box = epsilon_sharpness(objective, theta, float(eps), steps, restarts, seed, loss)
    seconds["epsilon_sharpness"] = time.perf_counter() - start
    start = time.perf_counter()
    ball = adaptive_sharpness(objective, theta, float(rho), float(eta), steps, restarts, seed, loss)
    seconds["adaptive_sharpness"] = time.perf_counter() - start
    start = time.perf_counter()
    along = random_direction_losses(model, make_operator, float(radius), int(directions),
                                    seed=direction_seed, norm=norm, ignore=ignore, type=type,
                                    device=device, dtype=base.dtype)
    increase = direction_increase(loss, along["plus"], along["minus"])
    seconds["direction_increase"] = time.perf_counter() - start
    return {
        "epsilon_sharpness": box["value"], "epsilon_sharpness_max_loss": box["max_loss"],
        "epsilon_sharpness_eps": float(eps),
        "num_evaluations_epsilon_sharpness": box["num_evaluations"],
        "adaptive_sharpness": ball["value"], "adaptive_sharpness_max_loss": ball["max_loss"],
        "adaptive_sharpness_rho": float(rho), "adaptive_sharpness_eta": float(eta),
        "num_evaluations_adaptive_sharpness": ball["num_evaluations"],
        "sharpness_steps": steps, "sharpness_restarts": restarts,
        "direction_increase": increase["mean"], "direction_increase_std": increase["std"],
        "direction_increases": increase["values"], "direction_losses_plus": along["plus"],
        "direction_losses_minus": along["minus"], "direction_radius": float(radius),
        "direction_count": int(directions), "direction_seed": along["seed"],
        "direction_norm": along["norm"], "direction_ignore": along["ignore"],
        "direction_type": along["type"],
        **splits,
        **generalization_gap(splits["train_loss"], splits["test_loss"], splits["train_acc"],
                             splits["test_acc"]),
        "seconds": seconds,
    }


def report_sharpness(result: dict) -> None:
    """The measures of :func:`measure_point` as a table on the console."""
    rows = [
        (f"ε-sharpness (ε = {result['epsilon_sharpness_eps']:g})", result["epsilon_sharpness"],
         result["num_evaluations_epsilon_sharpness"]),
        (f"adaptive sharpness (ρ = {result['adaptive_sharpness_rho']:g}, "
         f"η = {result['adaptive_sharpness_eta']:g})", result["adaptive_sharpness"],
         result["num_evaluations_adaptive_sharpness"]),
        (f"random-direction increase (r = {result['direction_radius']:g}, "
         f"K = {result['direction_count']})",
         f"{result['direction_increase']:.6g} ± {result['direction_increase_std']:.2g}",
         2 * result["direction_count"]),
        ("train / test loss", f"{result['train_loss']:.6g} / {result['test_loss']:.6g}", ""),
        ("train / test accuracy (%)", f"{result['train_acc']:.4g} / {result['test_acc']:.4g}", ""),
        ("gap: test − train loss", result["gap_loss"], ""),
        ("gap: train − test accuracy", result["gap_acc"], ""),
    ]
    print_table("Sharpness at the checkpoint", ["figure", "value", "loss evaluations"], rows)
