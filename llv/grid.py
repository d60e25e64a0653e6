"""Grids of direction coefficients: axes, 0/1/2-D grids, and the coefficients of points.

A grid is given as ``min:max:num`` strings (the CLI) or ``(min, max, num)`` tuples (the API).
Values of a 2-D grid are stored as ``value[iy, ix]`` at ``(x[ix], y[iy])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llv.errors import LlvError


@dataclass(frozen=True)
class Axis:
    """One axis of a grid: ``num`` evenly spaced coordinates from ``min`` to ``max``."""

    min: float
    max: float
    num: int

    @classmethod
    def parse(cls, spec: object, name: str = "grid.x") -> Axis:
        """Parse ``'min:max:num'``.

        >>> Axis.parse("-1:1:5").coordinates().tolist()
        [-1.0, -0.5, 0.0, 0.5, 1.0]
        """
        if isinstance(spec, Axis):
            return spec
        parts = list(spec) if isinstance(spec, (tuple, list)) else str(spec).split(":")
        try:
            if len(parts) != 3 or float(parts[2]) != int(float(parts[2])):
                raise ValueError
            lo, hi, num = float(parts[0]), float(parts[1]), int(float(parts[2]))
        except (ValueError, TypeError, OverflowError):
            raise LlvError(f"bad grid spec {name}={spec!r}: expected min:max:num, e.g. -1:1:51") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise LlvError(f"bad grid spec {name}={spec!r}: min and max must be finite numbers")
        if num < 1:
            raise LlvError(f"bad grid spec {name}={spec!r}: num must be at least 1")
        if num > 1 and not hi > lo:
            raise LlvError(f"bad grid spec {name}={spec!r}: max must be greater than min")
        if num == 1 and hi != lo:
            raise LlvError(f"bad grid spec {name}={spec!r}: one point needs min == max")
        return cls(lo, hi, num)

    def coordinates(self):
        import numpy as np

        return np.linspace(self.min, self.max, self.num)

    def __str__(self) -> str:
        return f"{self.min:g}:{self.max:g}:{self.num}"


@dataclass(frozen=True)
class GridSpec:
    """A 0-D (single point), 1-D or 2-D grid of direction coefficients.

    Values of a 2-D grid are stored as ``value[iy, ix]`` at ``(x[ix], y[iy])``.
    """

    x: Axis | None
    y: Axis | None = None

    @classmethod
    def of(cls, x=None, y=None) -> GridSpec:
        """From ``(min, max, num)`` tuples or ``'min:max:num'`` strings (``None``: no axis).

        >>> GridSpec.of((-1, 1, 3), None).shape
        (3,)
        """
        return cls._parse(x, y, "")

    @classmethod
    def from_cfg(cls, grid) -> GridSpec:
        x = grid.get("x") if hasattr(grid, "get") else None
        y = grid.get("y") if hasattr(grid, "get") else None
        return cls._parse(x, y, "grid.")

    @classmethod
    def _parse(cls, x, y, prefix: str) -> GridSpec:
        if x is None and y is not None:
            missing = "null" if prefix else "not"  # a config says null, Python None
            raise LlvError(f"bad grid spec: {prefix}y is set but {prefix}x is {missing}")
        return cls(Axis.parse(x, f"{prefix}x") if x is not None else None,
                   Axis.parse(y, f"{prefix}y") if y is not None else None)

    @property
    def ndim(self) -> int:
        return 0 if self.x is None else (1 if self.y is None else 2)

    @property
    def shape(self) -> tuple[int, ...]:
        if self.x is None:
            return ()
        if self.y is None:
            return (self.x.num,)
        return (self.y.num, self.x.num)

    @property
    def num_points(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def coefficients(self):
        """(num_points, 2) array of (alpha, beta) in storage (row-major) order."""
        import numpy as np

        if self.x is None:
            return np.zeros((1, 2))
        xs = self.x.coordinates()
        if self.y is None:
            return np.stack([xs, np.zeros_like(xs)], axis=1)
        ys = self.y.coordinates()
        beta, alpha = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([alpha.ravel(), beta.ravel()], axis=1)

    def describe(self) -> str:
        if self.x is None:
            return "a single point"
        if self.y is None:
            return f"1D x={self.x}"
        return f"2D x={self.x} y={self.y} ({self.y.num}x{self.x.num})"




def coefficient_rows(grid: GridSpec, ensemble: int, indices):
    """Coefficients over all ``ensemble * grid.ndim`` axes of flat point indices over
    ``(ensemble, *grid.shape)``: member ``k``'s point moves along its own axes only.

    >>> coefficient_rows(GridSpec.of((0, 1, 2)), 2, [1, 2]).tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    """
    import numpy as np

    ndim = max(grid.ndim, 1)
    base = grid.coefficients()[:, :ndim]
    member, g = np.divmod(np.asarray(indices, dtype=np.int64), grid.num_points)
    rows = np.zeros((len(g), ensemble * ndim))
    for a in range(ndim):
        rows[np.arange(len(g)), member * ndim + a] = base[g, a]
    return rows
