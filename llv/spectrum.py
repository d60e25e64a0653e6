"""The Hessian of a model's loss at a point: what ``llv.hessian(model, data)`` returns.

Each method returns its values together with the number of Hessian-vector products it used
and its error estimate (Ritz residuals, the Hutchinson standard error), so that a figure can
say what it cost and how far to trust it. The math is in :mod:`llv.curvature`.

>>> import torch
>>> model = torch.nn.Linear(2, 1, bias=False)
>>> h = Hessian(model, (torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, dtype=torch.long)),
...             loss="mse", dtype=torch.float64)
>>> [round(float(v), 6) for v in h.eigenvalues(which="extremes").values]  # H = diag(1, 4)
[4.0, 1.0]
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from llv.curvature import (
    HessianOperator,
    bottom_eigenpairs,
    hutchinson_trace,
    smooth_density,
    spectral_density,
    spectrum_ends,
    top_eigenpairs,
)
from llv.errors import LlvError
from llv.results import Density, Eigenvalues, Trace

WHICH = ("top", "bottom", "extremes")
#: What ``llv hessian`` can compute at a point (``hessian.compute``).
COMPUTE = ("extremes", "top_k", "trace", "density", "sharpness")


def check_top_k(k, dimension: int) -> None:
    """Refuse more eigenvalues than the Hessian has (one per parameter): clamping them to the
    count silently turned a typo into the whole spectrum, minutes of dense work."""
    if int(k) < 1:
        raise LlvError(f"top_k must be at least 1, got {k}")
    if int(k) > int(dimension):
        raise LlvError(f"{int(k):,} eigenvalues asked for (hessian.top_k, or k= of "
                       f"Hessian.eigenvalues), but the Hessian has only {int(dimension):,}, one per "
                       f"parameter of the model: ask for at most {int(dimension):,}")


class Hessian:
    """The Hessian of the mean loss over ``data`` with respect to every parameter of ``model``.

    Args:
        model: any ``nn.Module`` (never modified; evaluated as in eval mode).
        data: a DataLoader, Dataset, ``(inputs, targets)`` pair or iterable of batches.
        loss: ``"ce"``, ``"mse"`` or a callable ``(outputs, batch) -> per-example losses``.
        batch_size: examples per pass for tensors and datasets (``"auto"``).
        dtype: e.g. ``torch.float64`` for exact small cases (default: the model's).
        state: another point than the model's own tensors (``name -> tensor``).
        device: where products run (default: the model's device).
    """

    def __init__(self, model: nn.Module, data, *, loss="ce", batch_size="auto",
                 dtype: torch.dtype | None = None, state: dict | None = None,
                 device: torch.device | str | None = None, wrt=None):
        if device is not None:
            base = {**{n: p.detach() for n, p in model.named_parameters()},
                    **{n: b.detach() for n, b in model.named_buffers()}, **(state or {})}
            state = {n: t.to(device) for n, t in base.items()}
        self.operator = HessianOperator(model, data, None, wrt=wrt, state=state, loss=loss,
                                        batch_size=batch_size, dtype=dtype)

    @property
    def dimension(self) -> int:
        return self.operator.n

    @property
    def num_hvp(self) -> int:
        """Hessian-vector products done so far by every method."""
        return self.operator.num_hvp

    def loss(self) -> float:
        """The mean loss at the point."""
        return self.operator.loss_value()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """H v for a flat vector (parameter order of ``model.named_parameters()``)."""
        return self.operator.matvec(v)

    def eigenvalues(self, k: int = 1, which: str = "top", tol: float = 1e-3, seed: int = 0,
                    vectors: bool = False) -> Eigenvalues:
        """Eigenvalues by Lanczos with thick restart, to relative tolerance ``tol``.

        ``which="top"``: the ``k`` largest, largest first; ``"bottom"``: the ``k`` smallest,
        smallest first; ``"extremes"``: ``[λmax, λmin]`` from one Krylov space.
        """
        if which not in WHICH:
            raise LlvError(f"which must be one of {', '.join(WHICH)}, got {which!r}")
        if int(k) < 1:
            raise LlvError(f"k must be at least 1, got {k}")
        if which != "extremes":
            check_top_k(k, self.dimension)  # before any product
        if not np.isfinite(tol) or tol <= 0:
            raise LlvError(f"tol must be a positive finite number, got {tol}")
        op = self.operator
        if which == "extremes":
            ends = spectrum_ends(op, 1, 1, tol=tol, seed=seed, pairs=vectors)
            values = np.array([ends["top"][0], ends["bottom"][0]])
            if not ends["converged"]:
                values[:] = np.nan
            # the run's own (no product): the Ritz pairs' residuals when the vectors are returned,
            # else the refined bound the stopping test used
            residuals = ends["residuals" if vectors else "error_bounds"] if ends["converged"] else None
            return Eigenvalues(values, ends["num_hvp"], residuals,
                               ends["vectors"] if vectors else None)
        k = int(k)
        find = top_eigenpairs if which == "top" else bottom_eigenpairs
        values, rows, used = find(op, k=k, tol=tol, seed=seed)
        residuals = self._residuals(values, rows)
        return Eigenvalues(np.asarray(values), used, residuals, rows if vectors else None)

    def _residuals(self, values, rows) -> np.ndarray:
        """‖Hv − λv‖ / max(|λ|, tiny) of each pair (costs one product each, not counted)."""
        op = self.operator
        before = op.num_hvp
        out = []
        for value, row in zip(values, rows):
            hv = op.matvec(row)
            out.append(float((hv - float(value) * row.to(hv)).norm()) / max(abs(float(value)), 1e-30))
        op.num_hvp = before
        return np.asarray(out)

    def trace(self, probes: int = 50, seed: int = 0) -> Trace:
        """Hutchinson's estimate with Rademacher probes, with its standard error."""
        if int(probes) < 2:
            raise LlvError(f"probes must be at least 2 (for a standard error), got {probes}")
        result = hutchinson_trace(self.operator, probes=int(probes), seed=seed)
        return Trace(result["trace"], result["stderr"], result["num_hvp"], int(probes))

    def density(self, runs: int = 2, steps: int = 48, sigma: float = 0.01, seed: int = 0,
                points: int = 1000) -> Density:
        """The eigenvalue density by stochastic Lanczos quadrature (Ghorbani et al. 2019),
        smoothed with a Gaussian of width ``sigma`` times the spectrum's range."""
        if int(runs) < 1 or int(steps) < 1:
            raise LlvError(f"runs and steps must be at least 1, got {runs} and {steps}")
        result = spectral_density(self.operator, runs=int(runs), steps=int(steps), seed=seed)
        nodes, weights = result["nodes"], result["weights"]
        spread = float(nodes.max() - nodes.min()) or max(abs(float(nodes.max())), 1.0)
        width = float(sigma) * spread
        grid = np.linspace(nodes.min() - 5 * width, nodes.max() + 5 * width, int(points))
        return Density(grid, smooth_density(nodes, weights, grid, width), nodes, weights, width,
                       result["num_hvp"])

    def analyse(self, *, tol: float = 1e-3, top_k: int = 3, trace_probes: int = 50,
                density_runs: int = 2, density_steps: int = 48, density_sigma: float = 0.01,
                seed: int = 0, compute=("extremes", "top_k", "trace", "density")) -> dict:
        """What ``llv hessian`` stores at a point, as flat keys (with seconds per part)."""
        unknown = sorted(set(compute) - set(COMPUTE))
        if unknown:
            raise LlvError(f"unknown hessian.compute entries {unknown}; valid: {', '.join(COMPUTE)}")
        if "top_k" in compute:
            check_top_k(top_k, self.dimension)  # before any work, the loss included
        result = {"loss": self.loss(), "dimension": self.dimension, "compute": ",".join(compute)}
        seconds = {}
        if "extremes" in compute and "top_k" in compute and int(top_k) < self.dimension:
            # one Krylov space serves λmax, λmin and the top-k (top_k + 1 <= the dimension)
            start = time.perf_counter()
            ends = spectrum_ends(self.operator, int(top_k), 1, tol=tol, seed=seed)
            seconds["extremes"] = seconds["top_k"] = time.perf_counter() - start
            result.update(lambda_max=float(ends["top"][0]), lambda_min=float(ends["bottom"][0]),
                          num_hvp_extremes=ends["num_hvp"], eigenvalues=ends["top"],
                          num_hvp_top_k=ends["num_hvp"], shared_krylov=True)  # the same products
            compute = [c for c in compute if c not in ("extremes", "top_k")]
        if "extremes" in compute:
            start = time.perf_counter()
            ends = self.eigenvalues(which="extremes", tol=tol, seed=seed)
            seconds["extremes"] = time.perf_counter() - start
            result.update(lambda_max=float(ends.values[0]), lambda_min=float(ends.values[1]),
                          num_hvp_extremes=ends.num_hvp)
        if "top_k" in compute:
            start = time.perf_counter()
            top = self.eigenvalues(k=top_k, which="top", tol=tol, seed=seed)
            seconds["top_k"] = time.perf_counter() - start
            result.update(eigenvalues=top.values, num_hvp_top_k=top.num_hvp)
        if "trace" in compute:
            start = time.perf_counter()
            trace = self.trace(probes=trace_probes, seed=seed)
            seconds["trace"] = time.perf_counter() - start
            result.update(trace=trace.value, trace_stderr=trace.stderr, num_hvp_trace=trace.num_hvp)
        if "density" in compute:
            start = time.perf_counter()
            density = self.density(density_runs, density_steps, density_sigma, seed)
            seconds["density"] = time.perf_counter() - start
            result.update(density_nodes=density.nodes, density_weights=density.weights,
                          density_grid=density.grid, density=density.density,
                          density_sigma=density.sigma, num_hvp_density=density.num_hvp)
        result["seconds"] = seconds
        return result
