"""Numbers behind a surface: the centre, extremes, and how sharp the minimum looks.

Curvature along an axis is the second difference at the centre, (f(h) − 2f(0) + f(−h)) / h².
The flatness radius is the distance from the centre at which the loss first exceeds the centre
loss by ``eps`` (linear interpolation between grid points, the smaller of the two sides; ``inf``
when it never does inside the grid). Ensembles report mean ± standard deviation over members.
"""

from __future__ import annotations

import numpy as np


def _centre_index(coordinates: np.ndarray) -> int:
    return int(np.argmin(np.abs(coordinates)))


def second_difference(values: np.ndarray, coordinates: np.ndarray) -> float:
    """Curvature at the grid point nearest 0 along one axis (NaN at an edge)."""
    i = _centre_index(coordinates)
    if i == 0 or i == len(coordinates) - 1:
        return float("nan")
    h1, h2 = coordinates[i] - coordinates[i - 1], coordinates[i + 1] - coordinates[i]
    # non-uniform three-point formula; equals (f+ - 2 f0 + f-) / h^2 for uniform spacing
    return float(2 * (h1 * values[i + 1] - (h1 + h2) * values[i] + h2 * values[i - 1]) / (h1 * h2 * (h1 + h2)))


def discretization_error(values: np.ndarray, coordinates: np.ndarray) -> float:
    """Error estimate of :func:`second_difference`: |D(2h) − D(h)| / 3 (Richardson), NaN without ±2h."""
    i = _centre_index(coordinates)
    if i < 2 or i > len(coordinates) - 3:
        return float("nan")
    wide = second_difference(values[i - 2:i + 3:2], coordinates[i - 2:i + 3:2])
    return abs(wide - second_difference(values, coordinates)) / 3


def flatness_radius(values: np.ndarray, coordinates: np.ndarray, eps: float) -> float:
    """Distance from the centre where the loss first exceeds centre + eps (min over both sides)."""
    i = _centre_index(coordinates)
    level = values[i] + eps
    radii = []
    for step in (1, -1):
        j = i
        while 0 <= j + step < len(values):
            k = j + step
            if values[k] > level:  # NaN never exceeds: treated as not computed
                f0, f1 = values[j], values[k]
                t = (level - f0) / (f1 - f0) if f1 != f0 else 0.0
                radii.append(abs(coordinates[j] + t * (coordinates[k] - coordinates[j]) - coordinates[i]))
                break
            j = k
    return float(min(radii)) if radii else float("inf")


def axis_profiles(loss: np.ndarray, x: np.ndarray, y: np.ndarray | None):
    """The loss along x through the centre, and along y (2D only)."""
    if y is None:
        return {"x": (loss, x)}
    iy, ix = _centre_index(y), _centre_index(x)
    return {"x": (loss[iy, :], x), "y": (loss[:, ix], y)}


def summarize(values: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray | None, split: str,
              eps: float, ensemble: int = 1) -> dict[str, float]:
    """Summary attrs (``summary_*``) of one split's loss and accuracy."""
    loss_all = values[f"{split}_loss"]
    acc_all = values.get(f"{split}_acc", np.full_like(loss_all, np.nan))
    members = [loss_all] if ensemble == 1 else list(loss_all)
    accs = [acc_all] if ensemble == 1 else list(acc_all)
    centre = (_centre_index(x),) if y is None else (_centre_index(y), _centre_index(x))
    out = {
        "centre_loss": float(members[0][centre]),
        "centre_acc": float(accs[0][centre]),
        "min_loss": float(np.nanmin(loss_all)) if np.isfinite(loss_all).any() else float("nan"),
        "max_loss": float(np.nanmax(loss_all)) if np.isfinite(loss_all).any() else float("nan"),
        "nan_count": int(np.isnan(loss_all).sum()),
    }
    for axis in ("x", "y") if y is not None else ("x",):
        curvatures, radii, errors = [], [], []
        for loss in members:
            profile, coordinates = axis_profiles(loss, x, y)[axis]
            curvatures.append(second_difference(profile, coordinates))
            errors.append(discretization_error(profile, coordinates))
            radii.append(flatness_radius(profile, coordinates, eps))
        out[f"curvature_{axis}"] = float(np.mean(curvatures))
        out[f"curvature_{axis}_error"] = float(np.mean(errors))
        out[f"flatness_radius_{axis}"] = float(np.mean(radii))
        if ensemble > 1:
            with np.errstate(invalid="ignore"):  # inf radii (flat over the grid) have no spread
                out[f"curvature_{axis}_std"] = float(np.std(curvatures))
                out[f"flatness_radius_{axis}_std"] = float(np.std(radii))
    return {f"{split}_{k}": v for k, v in out.items()}
