"""Automatic extent: how far along ± each plot direction the loss first rises to a level.

A short 1-D search per half-axis replaces guessing ``grid.x``: starting at ``start``, the step
doubles until the loss reaches the level (bracketing), then bisection narrows the crossing to
``tol``. The level is ``rise`` × the centre loss (``grid.auto_rise``) or the centre loss plus
``add`` (``grid.auto_add``). Each evaluation is one pass over the data at one point, so a
half-axis costs about log2(extent/start) + log2(extent/tol) passes.

The search finds the first crossing it brackets: a loss that rises above the level and falls
back between two doubling steps is not seen (the surface computed over the chosen range will
show it). A half-axis whose loss stays below the level up to ``max_extent`` is capped there,
and says so.

``llv.extent`` is this module's :func:`extent` (a module named ``extent`` would hide it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from llv.console import log
from llv.errors import LlvError

AXES = ("x", "y")


@dataclass
class Extent:
    """The chosen range along each axis, in the units of the directions.

    Attributes:
        ranges: ``[(min, max)]`` per axis (x, then y): where the loss first reaches ``level``
            on the negative and the positive side.
        capped: ``[(negative, positive)]`` per axis: True where the loss stayed below the
            level up to ``max_extent`` (the range is ``max_extent`` there).
        centre_loss: the loss at the centre.
        level: the loss the search looked for.
        evaluations: loss evaluations (passes over the data) the search used.
        attrs: the settings (rise, add, tol, max_extent, start, split).
    """

    ranges: list[tuple[float, float]]
    capped: list[tuple[bool, bool]]
    centre_loss: float
    level: float
    evaluations: int
    attrs: dict = field(default_factory=dict)

    @property
    def x(self) -> tuple[float, float]:
        return self.ranges[0]

    @property
    def y(self) -> tuple[float, float] | None:
        return self.ranges[1] if len(self.ranges) > 1 else None

    def grid(self, num: int = 51, symmetric: bool = False) -> tuple:
        """``(x, y)`` axes ``(min, max, num)`` for :func:`llv.surface` (``y`` None in 1-D);
        ``symmetric``: ± the larger side on each axis."""
        axes = []
        for low, high in self.ranges:
            if symmetric:
                low, high = -max(-low, high), max(-low, high)
            axes.append((float(low), float(high), int(num)))
        return axes[0], (axes[1] if len(axes) > 1 else None)

    def record(self) -> dict:
        """Attributes that let a run be repeated exactly: ``auto_x = "min:max"``, the level, ...

        >>> Extent([(-0.5, 0.25)], [(False, True)], 1.0, 2.0, 9, {"rise": 2.0}).record()["auto_x"]
        '-0.5:0.25'
        """
        out = {f"auto_{k}": v for k, v in self.attrs.items() if v is not None}
        for name, (low, high), (cap_low, cap_high) in zip(AXES, self.ranges, self.capped):
            out[f"auto_{name}"] = f"{low!r}:{high!r}"  # repr: the run repeats to the bit
            out[f"auto_{name}_capped"] = ",".join(side for side, hit in (("min", cap_low), ("max", cap_high))
                                                 if hit) or "none"
        out.update(auto_centre_loss=self.centre_loss, auto_level=self.level,
                   auto_evaluations=self.evaluations)
        return out

    def describe(self) -> str:
        parts = []
        for name, (low, high), (cap_low, cap_high) in zip(AXES, self.ranges, self.capped):
            marks = "".join([" (min capped)" if cap_low else "", " (max capped)" if cap_high else ""])
            parts.append(f"{name} = {low:.4g}:{high:.4g}{marks}")
        return (f"automatic extent: {', '.join(parts)} (loss {self.centre_loss:.4g} at the centre, "
                f"level {self.level:.4g}; {self.evaluations} evaluations)")


def search_side(loss_at: Callable[[float], float], level: float, *, start: float = 0.1,
                max_extent: float = 10.0, tol: float = 1e-3) -> tuple[float, bool, int]:
    """The smallest α > 0 (to ``tol``) where ``loss_at(α)`` first reaches ``level`` as found by
    doubling from ``start``, then bisecting. A non-finite loss counts as reached.

    Returns ``(α, capped, evaluations)``; ``capped`` when the loss stays below the level up to
    ``max_extent`` (α is then ``max_extent``).

    >>> alpha, capped, n = search_side(lambda a: a * a, 2.0, tol=1e-6)
    >>> round(alpha, 5), capped
    (1.41421, False)
    >>> search_side(lambda a: a, 50.0, max_extent=3.0)[:2]
    (3.0, True)
    """
    if not (start > 0 and max_extent > 0 and tol > 0):
        raise LlvError(f"start, max_extent and tol must be positive (got {start}, {max_extent}, {tol})")

    def reached(alpha: float) -> bool:
        value = loss_at(alpha)
        return not math.isfinite(value) or value >= level

    low, high, evaluations = 0.0, min(start, max_extent), 0
    while True:
        evaluations += 1
        if reached(high):
            break
        if high >= max_extent:
            return float(max_extent), True, evaluations
        low, high = high, min(2.0 * high, max_extent)
    while high - low > tol:
        middle = 0.5 * (low + high)
        evaluations += 1
        if reached(middle):
            high = middle
        else:
            low = middle
    return float(high), False, evaluations


def search(loss_at: Callable[[list[float]], float], ndim: int, *, rise: float | None = 2.0,
           add: float | None = None, max_extent: float = 10.0, tol: float = 1e-2, start: float = 0.1
           ) -> Extent:
    """The extent of ``loss_at`` (a function of ``ndim`` coefficients): the centre's loss, the
    level (``rise`` × it, or + ``add``) and a :func:`search_side` along ± each axis.

    >>> e = search(lambda c: 1.0 + sum(v * v for v in c), 2, rise=2.0, tol=1e-6)
    >>> [(round(lo, 4), round(hi, 4)) for lo, hi in e.ranges]
    [(-1.0, 1.0), (-1.0, 1.0)]
    """
    centre = loss_at([0.0] * ndim)
    if add is not None:
        if not float(add) > 0:
            raise LlvError(f"add must be positive, got {add}")
        level = centre + float(add)
    else:
        if rise is None:
            raise LlvError("give rise= (a multiple of the centre loss) or add= (an amount)")
        level = float(rise) * centre
        if not level > centre:
            raise LlvError(f"the centre loss is {centre:.4g}: {rise} times it does not rise above it; "
                           "use add= (an absolute amount) instead")
    ranges, capped, evaluations = [], [], 1
    for axis in range(ndim):
        sides = []
        for sign in (-1.0, 1.0):
            def along(alpha: float, axis=axis, sign=sign) -> float:
                row = [0.0] * ndim
                row[axis] = sign * alpha
                return loss_at(row)

            alpha, hit_cap, used = search_side(along, level, start=start, max_extent=max_extent, tol=tol)
            sides.append((sign * alpha, hit_cap))
            evaluations += used
        ranges.append((sides[0][0], sides[1][0]))
        capped.append((sides[0][1], sides[1][1]))
    attrs = {"rise": None if add is not None else float(rise), "add": None if add is None else float(add),
             "tol": float(tol), "max_extent": float(max_extent), "start": float(start)}
    return Extent(ranges, capped, centre, level, evaluations, attrs)


def extent(model: nn.Module, data, directions, *, rise: float | None = 2.0, add: float | None = None,
           max_extent: float = 10.0, tol: float = 1e-2, start: float = 0.1, loss="ce",
           batch_size="auto", device=None, bn: str = "stored", split: str | None = None,
           precision: str = "fp32", accuracy=None, progress: bool = True) -> Extent:
    """The range along ± each axis of ``directions`` where ``model``'s loss first rises to
    ``rise`` × the centre loss (or by ``add``): a 1-D search per half-axis (see
    :mod:`llv.auto_extent`).

    Args:
        directions: :class:`llv.direction.Directions` (one or two axes; an ensemble's first
            member) or a direction file.
        rise: the level as a multiple of the centre loss (ignored when ``add`` is given).
        add: the level as the centre loss plus this amount.
        max_extent: the largest |α| searched; a half-axis below the level there is capped.
        tol: the bisection's final bracket width, in the directions' units.
        start: the first step of the doubling.
        split: the data split whose loss is searched (default: the first).
        loss, batch_size, device, bn, precision, accuracy: as :func:`llv.surface`'s.

    Returns:
        :class:`Extent`; ``.grid(num)`` gives ``llv.surface``'s ``x``/``y``, ``.record()`` the
        attributes to store with the result.
    """
    from llv import direction as dirs
    from llv.batches import as_split_batches
    from llv.curves import device_for
    from llv.evaluate import PointEvaluator
    from llv.params import ParameterSpace

    if isinstance(directions, (str, Path)):
        directions = dirs.load(directions, ParameterSpace.of(model, "weights"))
    if bn not in ("stored", "recompute"):
        raise LlvError(f"unknown bn {bn!r}; valid: stored, recompute")
    device = device_for(model, device)
    wide = torch.float64 if precision == "fp64" else None
    splits = as_split_batches(data, batch_size=batch_size, device=device, float_dtype=wide)
    split = split or next(iter(splits))
    if split not in splits:
        raise LlvError(f"no split {split!r} in the data (they are {', '.join(splits)})")
    space = directions.space
    model_space = ParameterSpace.of(model, space.type)
    if list(model_space.names) != list(space.names):
        raise LlvError(f"the directions are for other tensors than the model's {space.type}")
    ndim = directions.ndim
    values = dict(zip(space.names, (t.to(device) for t in space.values(model))))
    evaluator = PointEvaluator(model, space, values, directions.flat()[:ndim], {split: splits[split]},
                               loss=loss, precision=precision, accuracy=accuracy, device=device,
                               bn_data=splits[split] if bn == "recompute" else None)
    key = f"{split}_loss"

    def loss_at(coefficients) -> float:
        row = torch.tensor([coefficients], dtype=torch.float64)
        return float(evaluator.evaluate(row)[key][0])

    result = search(loss_at, ndim, rise=rise, add=add, max_extent=max_extent, tol=tol, start=start)
    result.attrs.update(split=split, bn=bn)
    if progress:
        log.info(result.describe())
    return result

