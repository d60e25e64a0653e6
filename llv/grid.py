"""Grids of direction coefficients: axes, 0/1/2-D grids, and the coefficients of points.

A grid is given as ``min:max:num`` strings (the CLI) or ``(min, max, num)`` tuples (the API).
Values of a 2-D grid are stored as ``value[iy, ix]`` at ``(x[ix], y[iy])``. On the command line
an axis may also be ``auto`` or ``auto:num`` (:class:`AutoAxis`): its range is chosen at run
time by :func:`llv.extent` (``grid.auto_*``) and the grid is then :meth:`GridSpec.resolve`-d.
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


AUTO_NUM = 21
"""Points of an ``auto`` axis when no count is given (``auto:51`` gives 51)."""


@dataclass(frozen=True)
class AutoAxis:
    """An axis whose range is chosen at run time (``auto`` / ``auto:num``): only its count is known.

    >>> AutoAxis.parse("auto:51"), AutoAxis.parse("auto").num
    (AutoAxis(num=51), 21)
    """

    num: int = AUTO_NUM

    @classmethod
    def parse(cls, spec: object, name: str = "grid.x") -> AutoAxis:
        head, _, count = str(spec).strip().partition(":")
        if head != "auto":
            raise LlvError(f"bad grid spec {name}={spec!r}: expected auto or auto:num")
        try:
            num = int(count) if count else AUTO_NUM
        except ValueError:
            raise LlvError(f"bad grid spec {name}={spec!r}: expected auto or auto:num, e.g. auto:51") from None
        if num < 2:
            raise LlvError(f"bad grid spec {name}={spec!r}: an automatic axis needs at least 2 points")
        return cls(num)

    def __str__(self) -> str:
        return f"auto:{self.num}"


def parse_axis(spec: object, name: str = "grid.x") -> Axis | AutoAxis:
    """``'min:max:num'`` / ``(min, max, num)`` → :class:`Axis`; ``'auto'`` / ``'auto:num'`` →
    :class:`AutoAxis`.

    >>> parse_axis("auto:11"), parse_axis("0:1:2")
    (AutoAxis(num=11), Axis(min=0.0, max=1.0, num=2))
    """
    if isinstance(spec, (Axis, AutoAxis)):
        return spec
    if isinstance(spec, str) and spec.strip().partition(":")[0] == "auto":
        return AutoAxis.parse(spec, name)
    return Axis.parse(spec, name)


@dataclass(frozen=True)
class GridSpec:
    """A 0-D (single point), 1-D or 2-D grid of direction coefficients.

    Values of a 2-D grid are stored as ``value[iy, ix]`` at ``(x[ix], y[iy])``.
    """

    x: Axis | AutoAxis | None
    y: Axis | AutoAxis | None = None

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
        return cls(parse_axis(x, f"{prefix}x") if x is not None else None,
                   parse_axis(y, f"{prefix}y") if y is not None else None)

    @property
    def auto(self) -> bool:
        """Whether an axis is ``auto`` (its range is not known until :meth:`resolve`)."""
        return isinstance(self.x, AutoAxis) or isinstance(self.y, AutoAxis)

    def resolve(self, ranges) -> GridSpec:
        """This grid with each ``auto`` axis given its ``(min, max)`` from ``ranges`` (x, then y).

        >>> GridSpec.of("auto:3", "-1:1:5").resolve([(-0.5, 0.5), None]).x
        Axis(min=-0.5, max=0.5, num=3)
        """
        axes = []
        for axis, span in zip((self.x, self.y), list(ranges) + [None] * 2):
            if isinstance(axis, AutoAxis):
                axis = Axis(float(span[0]), float(span[1]), axis.num)
            axes.append(axis)
        return GridSpec(*axes)

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

        if self.auto:
            raise LlvError(f"the grid {self.describe()} has an automatic axis: resolve it first")

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
