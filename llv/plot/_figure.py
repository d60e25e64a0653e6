"""Shared pieces of every figure: options, Agg figures, saving, and the figure rules.

Every figure follows one set of rules, whether it is drawn at the end of a run, by
``llv plot`` or by ``Result.plot``:

- :func:`auto_log`: a loss spanning more than two decades is drawn on a log scale;
- :func:`nice_levels`: contour levels in 1-2-5 steps, or 1, 2, 5 within each decade on a log
  scale;
- :func:`label_contours`: contour labels that overlap neither each other nor the marked
  minimizer (:func:`mark_minimum`);
- :func:`add_colorbar`: a labelled colour bar with ticks at the levels;
- :func:`title_parts` and :func:`result_notes`: titles that name the model, data,
  normalization and grid, and say when a result is partial or approximate
  (:func:`hatch_missing` shows the points not computed).

Figures are plain :class:`matplotlib.figure.Figure` objects on an explicit Agg canvas, so
plotting never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import (
    FixedFormatter,
    FixedLocator,
    FuncFormatter,
    MaxNLocator,
    NullFormatter,
)

from llv.console import LlvError, log
from llv.fsio import atomic_path

DPI = 150
"""Resolution of raster output: a figure of w x h inches becomes (w*DPI) x (h*DPI) pixels."""

MAX_LEVELS = 1000
LOG_SPAN = 100.0
"""A loss whose largest finite value exceeds LOG_SPAN times its smallest is drawn on a log scale."""

MAX_COLORBAR_LABELS = 11
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_?")


@dataclass(frozen=True)
class PlotOptions:
    """What the user asked for (``--vmin --vmax --vlevel --log --format``, the metric, smoothing).

    ``log=None`` means automatic: :func:`auto_log` decides from the values drawn.
    """

    vmin: float | None = None
    vmax: float | None = None
    vlevel: float | None = None
    log: bool | None = None
    fmt: str = "png"
    metric: str | None = None
    smooth: bool = False

    def __post_init__(self) -> None:
        for flag, value in (("--vmin", self.vmin), ("--vmax", self.vmax), ("--vlevel", self.vlevel)):
            _check_finite(flag, value)
        if self.vlevel is not None and not self.vlevel > 0:
            raise LlvError(f"--vlevel must be positive, got {self.vlevel}")
        if self.vmin is not None and self.vmax is not None and not self.vmin < self.vmax:
            raise LlvError(f"--vmin ({self.vmin}) must be below --vmax ({self.vmax})")
        if self.log and self.vmax is not None and self.vmax <= 0:
            raise LlvError(f"--log needs a positive --vmax, got {self.vmax}")


def _check_finite(flag: str, value) -> None:
    """A colour limit or level spacing must be a finite number: NaN or ±inf has no place on a
    colour scale (it failed deep inside matplotlib, or named a figure ``..._vmaxnan.png``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise LlvError(f"{flag} must be a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise LlvError(f"{flag} must be a finite number, got {float(value)}")


def auto_log(values) -> bool:
    """Whether a loss is drawn on a log scale: its finite values are all positive and span more
    than two decades (largest > :data:`LOG_SPAN` x smallest).

    The one place that decides it, for end-of-run figures, ``llv plot`` and the API alike.

    >>> auto_log([0.0003, 0.5, 32.0]), auto_log([0.2, 3.2]), auto_log([0.0, 5.0])
    (True, False, False)
    """
    data = finite_values(np.asarray(values, dtype=float))
    return bool(data.size and data.min() > 0 and data.max() > LOG_SPAN * data.min())


def resolve_log(options: PlotOptions, values) -> PlotOptions:
    """``options`` with ``log`` decided where the user left it open (None): by :func:`auto_log`
    over the colour range, ``--vmin``..``--vmax`` where given; never with ``--vlevel`` alone
    (a spacing the user gave is linear unless ``--log`` says otherwise)."""
    if options.log is not None:
        return options
    automatic = False
    if options.vlevel is None and finite_values(np.asarray(values, dtype=float)).size:
        linear = dataclasses.replace(options, log=False)
        automatic = auto_log(np.array(value_range(np.asarray(values, dtype=float), linear)))
    return dataclasses.replace(options, log=automatic)


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout on an Agg canvas (no pyplot, no display)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out: Path, fmt: str) -> Path:
    """Write ``figure`` to ``out`` (png/pdf/svg) at :data:`DPI` and log the path.

    The file is written whole or not at all (:func:`llv.fsio.atomic_path`); a full disk, a
    read-only folder or a missing permission is one :class:`LlvError` line saying what could
    not be written, where, why and how much space is free.
    """
    out = Path(out)
    with atomic_path(out, "figure") as tmp:
        figure.savefig(tmp, format=fmt, dpi=DPI)
    log.info("wrote %s", out)
    return out


def finite_values(*arrays: np.ndarray) -> np.ndarray:
    """All finite entries of ``arrays``, flattened together."""
    joined = np.concatenate([np.ma.filled(np.ma.asarray(a, dtype=float), np.nan).ravel()
                             for a in arrays])
    return joined[np.isfinite(joined)]


def value_range(values: np.ndarray, options: PlotOptions) -> tuple[float, float]:
    """(low, high) of the colour scale: ``--vmin/--vmax`` where given, else the data's range.

    With ``--log`` the low end is the smallest positive value (a log scale cannot reach 0);
    a non-positive ``--vmin`` with ``--log`` is an error (:func:`check_log_limits`).
    """
    check_log_limits(options)
    data = finite_values(values)
    if options.log:
        data = data[data > 0]
    if data.size == 0:
        raise LlvError(
            "no finite values to plot" + (" (none positive for --log)" if options.log else "")
        )
    low = float(data.min()) if options.vmin is None else float(options.vmin)
    high = float(data.max()) if options.vmax is None else float(options.vmax)
    if not high > low:
        high = low * 10 if options.log else low + max(abs(low), 1.0) * 1e-3
    return low, high


def check_log_limits(options: PlotOptions) -> None:
    """Refuse a non-positive ``--vmin`` on a log scale: a log colour scale or loss axis cannot
    reach it, and quietly starting at the data's minimum instead would draw other limits than
    asked. (The 3-D kinds' ``--log`` is ln(loss + 0.1), which does not go through here.)"""
    if options.log and options.vmin is not None and not options.vmin > 0:
        raise LlvError(f"--log needs a positive --vmin, got {options.vmin:g} (a log scale cannot "
                       "reach it); leave --vmin out to start at the smallest positive value")


def _round(levels) -> np.ndarray:
    """Levels without float noise (0.30000000000000004 -> 0.3)."""
    return np.array([float(f"{v:.12g}") for v in np.asarray(levels, dtype=float)])


def nice_levels(low: float, high: float, log: bool = False, count: int = 20) -> np.ndarray:
    """Round levels covering [low, high]: steps of 1, 2 or 5 x 10^k (at most about ``count``
    levels), or on a log scale 1, 2, 5 x 10^k (decades alone when that would be more than
    ``count`` levels). The first level is at or below ``low``, the last at or above ``high``.

    >>> nice_levels(0.3, 7.9, count=8).tolist()
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    >>> nice_levels(0.0003, 32.0, log=True).tolist()
    [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    """
    if log and low > 0:
        levels = _log_levels(low, high, count)
        if levels is not None:
            return levels
    levels = _round(MaxNLocator(nbins=count, steps=[1, 2, 5, 10]).tick_values(low, high))
    if log:  # less than a decade: round linear levels, positive ones only
        step = levels[1] - levels[0]
        levels = levels[levels > 0]
        if levels[0] > low:
            levels = np.concatenate([[levels[0] - step if levels[0] > step else low], levels])
    return levels


def _log_levels(low: float, high: float, count: int) -> np.ndarray | None:
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    for mantissas in ((1, 2, 5), (1,)):
        candidates = _round([m * 10.0**k for k in range(first, last + 1) for m in mantissas])
        below = candidates[candidates <= low * (1 + 1e-9)].max()
        above = candidates[candidates >= high * (1 - 1e-9)].min()
        levels = candidates[(candidates >= below) & (candidates <= above)]
        if len(levels) <= count + 1:
            break
    else:  # very many decades: every n-th decade
        step = math.ceil(len(levels) / count)
        levels = levels[::-1][::step][::-1]
    return levels if len(levels) >= 4 else None


def contour_levels(values: np.ndarray, options: PlotOptions, nbins: int = 20) -> np.ndarray:
    """Contour levels over ``values`` honouring ``--vmin/--vmax/--vlevel/--log``.

    ``--vlevel`` is the spacing between levels (in decades with ``--log``); without it
    :func:`nice_levels` covers the range. A bound the user gave is kept exactly.

    >>> contour_levels(np.array([0.0, 1.0]), PlotOptions(vmin=0.0, vmax=1.0, vlevel=0.25))
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    low, high = value_range(values, options)
    if options.vlevel is not None:
        if options.log:
            low, high = np.log10(low), np.log10(high)
        count = int(np.floor((high - low) / options.vlevel + 1e-9)) + 1
        if count > MAX_LEVELS:
            raise LlvError(f"--vlevel {options.vlevel} gives {count} levels; at most {MAX_LEVELS}")
        levels = low + options.vlevel * np.arange(count)
        if count < 2:
            levels = np.array([low, low + options.vlevel])
        return _round(10.0**levels if options.log else levels)
    levels = nice_levels(low, high, bool(options.log), nbins)
    tolerance = 1e-9 * (high - low)
    if options.vmin is not None:
        levels = np.union1d([low], levels[levels > low + tolerance])
    if options.vmax is not None:
        levels = np.union1d(levels[levels < high - tolerance], [high])
    return levels


def format_level(value: float) -> str:
    """A level as a short label: ``0.002``, ``12.5``, ``1e-5``, ``2.5e4``.

    >>> [format_level(v) for v in (0.002, 12.5, 1e-5, 25000.0, 3.0)]
    ['0.002', '12.5', '1e-5', '2.5e4', '3']
    """
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def color_norm(levels: np.ndarray, log_scale: bool) -> Normalize:
    """The colour normalization spanning ``levels`` (logarithmic with ``--log``)."""
    if log_scale:
        return LogNorm(vmin=levels[0], vmax=levels[-1])
    return Normalize(vmin=levels[0], vmax=levels[-1])


def major_levels(levels: np.ndarray, limit: int = MAX_COLORBAR_LABELS) -> np.ndarray:
    """The levels that get a number on a colour bar: all of them when they fit, else every
    n-th counted down from the top (so the top level always has one), decades first on a log
    scale.

    >>> major_levels(np.arange(0.0, 10.5, 0.5), limit=6).tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    """
    levels = np.asarray(levels, dtype=float)
    if len(levels) <= limit:
        return levels
    positive = levels[levels > 0]
    if positive.size == levels.size:
        mantissa = positive / 10.0 ** np.floor(np.log10(positive) + 1e-12)
        decades = levels[np.isclose(mantissa, 1.0)]
        if 3 <= decades.size <= limit:
            return np.union1d(decades, levels[-1:])
    step = math.ceil((len(levels) - 1) / (limit - 1))
    return levels[::-1][::step][::-1]


def spaced_labels(levels: np.ndarray, positions: np.ndarray, gap: float) -> np.ndarray:
    """The ``levels`` (at ``positions``, fractions along the bar) that keep a number when no two
    numbers may be closer than ``gap``: the top level first, then the bottom one (the two ends
    of the scale, e.g. a ``--vmin`` of 0.45), then the others from the top down, each only
    where it clears every number already kept. A level that loses its number keeps its tick.

    >>> spaced_labels(np.array([0.45, 0.5, 1.0, 2.0]), np.array([0.0, 0.02, 0.5, 1.0]), 0.05).tolist()
    [0.45, 1.0, 2.0]
    """
    levels, positions = np.asarray(levels, dtype=float), np.asarray(positions, dtype=float)
    count = len(levels)
    if count <= 1:
        return levels
    kept: list[int] = []
    for index in (count - 1, 0, *range(count - 2, 0, -1)):
        if all(abs(positions[index] - positions[k]) >= gap for k in kept):
            kept.append(index)
    return levels[sorted(kept)]


def _label_gap(figure: Figure, bar) -> float:
    """The least distance, as a fraction of the colour bar's length, between two tick numbers:
    1.4 label heights (at the tick font size) over the bar's length in the figure."""
    from matplotlib import rcParams

    size = FontProperties(size=rcParams["ytick.labelsize"]).get_size_in_points()
    box = bar.ax.get_position()
    vertical = bar.orientation == "vertical"
    length = (box.height * figure.get_figheight() if vertical
              else box.width * figure.get_figwidth())  # inches
    return max(1.4 * size / 72.0 / length, 0.02) if length > 0 else 0.05


def _bar_positions(bar, values: np.ndarray) -> np.ndarray:
    """Where ``values`` sit along the colour bar, as fractions of its length (its own scale:
    linear, logarithmic, or one colour per interval)."""
    vertical = bar.orientation == "vertical"
    points = np.column_stack([np.full(values.size, 0.5), values])
    if not vertical:
        points = points[:, ::-1]
    axes = bar.ax.transAxes.inverted().transform(bar.ax.transData.transform(points))
    return axes[:, 1] if vertical else axes[:, 0]


def add_colorbar(figure: Figure, mappable, ax, label: str = "", levels=None, **kwargs):
    """A labelled colour bar; with ``levels``, a tick at every level (numbered as
    :func:`major_levels` chooses, the top level always, and never two numbers closer than
    about a label's height: :func:`spaced_labels`), else short ``%.3g`` labels."""
    bar = figure.colorbar(mappable, ax=ax, label=label, **kwargs)
    if levels is not None:
        norm = mappable.norm
        levels = np.asarray(levels, dtype=float)
        span = 1e-9 * abs(norm.vmax - norm.vmin)
        inside = levels[(levels >= norm.vmin - span) & (levels <= norm.vmax + span)]
        major = major_levels(inside)
        if major.size > 1:
            major = spaced_labels(major, _bar_positions(bar, major), _label_gap(figure, bar))
        bar.long_axis.set_major_locator(FixedLocator(major))
        bar.long_axis.set_major_formatter(FixedFormatter([format_level(v) for v in major]))
        bar.long_axis.set_minor_locator(FixedLocator(inside))
        bar.long_axis.set_minor_formatter(NullFormatter())
    elif isinstance(mappable.norm, LogNorm):
        bar.long_axis.set_major_formatter(FuncFormatter(lambda value, _: format_level(value)))
        bar.long_axis.set_minor_formatter(NullFormatter())
    return bar


def extend_for(values: np.ndarray, levels: np.ndarray) -> str:
    """Which ends of a filled contour need the over/under colour to show data beyond the levels."""
    data = finite_values(values)
    below = data.size > 0 and data.min() < levels[0]
    above = data.size > 0 and data.max() > levels[-1]
    return {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (bool(below), bool(above)), "both"
    )


def metric_label(metric: str) -> str:
    """Axis label of a stored quantity: ``train_loss`` -> ``training loss``.

    >>> metric_label("test_acc")
    'test accuracy (%)'
    """
    split, _, quantity = metric.rpartition("_")
    split = {"train": "training", "test": "test"}.get(split, split)
    if quantity == "acc":
        return f"{split} accuracy (%)"
    if quantity == "loss":
        return f"{split} loss"
    return metric.replace("_", " ")


def run_label(path: Path) -> str:
    """A short name for a result: the run folder's name without its timestamp, or the file stem.

    >>> run_label(Path("outputs/surface/2024-05-01_12-00-00_sgd_bs128/surface.h5"))
    'sgd_bs128'
    """
    path = Path(path)
    name = path.stem
    if path.suffix == ".h5" and name in {
        "surface",
        "hessian",
        "projection",
        "weights",
        "interpolation",
    }:
        name = path.resolve().parent.name
    elif path.is_dir():
        name = path.resolve().name
    return _TIMESTAMP.sub("", name) or name


# ------------------------------------------------------------------------------ titles and notes


def title_parts(surface) -> dict[str, str]:
    """What a title names, in order: model, data set, normalization (or interpolation), grid.

    ``surface`` is a :class:`llv.plot.io.Surface` (or an object with its ``attrs``,
    ``grid_shape`` and ``is_interpolation``).
    """
    attrs = surface.attrs
    parts = {key: str(attrs[key]) for key in ("model", "dataset") if attrs.get(key)}
    if surface.is_interpolation:
        parts["norm"] = "interpolation"
    elif attrs.get("norm"):
        parts["norm"] = "no normalization" if attrs["norm"] == "none" else f"{attrs['norm']} norm"
    shape = surface.grid_shape
    parts["grid"] = f"{shape[1]}×{shape[0]} grid" if len(shape) == 2 else f"{shape[0]} points"
    return parts


def computed_mask(surface) -> np.ndarray:
    """True where a grid point was computed: the surface's ``done`` mask when it has one, else
    where any stored quantity is finite (a diverged point still has an accuracy)."""
    done = getattr(surface, "done", None)
    shape = tuple(surface.grid_shape)
    if done is not None and np.shape(done)[-len(shape):] == shape:
        done = np.asarray(done, dtype=bool)
        return done.reshape(-1, *shape).all(axis=0) if done.ndim > len(shape) else done
    computed = np.zeros(shape, dtype=bool)
    for array in surface.values.values():
        array = np.asarray(array, dtype=float)
        if array.shape[-len(shape):] == shape:
            computed |= np.isfinite(array.reshape(-1, *shape)).any(axis=0)
    return computed


def _is_true(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value) if value is not None else False


def is_approximate(attrs: dict) -> bool:
    """Whether a result was computed in the fast (approximate) mode: its ``approx`` attribute,
    or ``eval.approx: true`` in the run's stored ``config``.

    >>> is_approximate({"approx": True}), is_approximate({"config": "eval:\\n  approx: true\\n"})
    (True, True)
    >>> is_approximate({"config": "eval:\\n  approx: false\\n"}), is_approximate({})
    (False, False)
    """
    if _is_true(attrs.get("approx")) or _is_true(attrs.get("eval_approx")):
        return True
    config = attrs.get("config")
    if not isinstance(config, str) or "approx" not in config:
        return False
    try:
        import yaml

        evaluation = (yaml.safe_load(config) or {}).get("eval") or {}
    except Exception:  # an unreadable config says nothing either way
        return False
    return isinstance(evaluation, dict) and _is_true(evaluation.get("approx"))


def largest_standard_error(surface, metric: str) -> float | None:
    """The largest stored standard error of ``metric`` (``<metric>_se``), or None."""
    errors = surface.values.get(f"{metric}_se")
    if errors is None:
        return None
    finite = finite_values(errors)
    return float(finite.max()) if finite.size else None


def result_notes(surface, metric: str) -> list[str]:
    """What a figure must say about its result: ``k of N points`` when partial, and
    ``approximate`` with the largest standard error when computed in the fast mode."""
    notes = []
    computed = computed_mask(surface)
    if not computed.all():
        notes.append(f"{int(computed.sum()):,} of {computed.size:,} points")
    if is_approximate(surface.attrs):
        error = largest_standard_error(surface, metric)
        notes.append("approximate" + (f": s.e. ≤ {error:.2g}" if error is not None else ""))
    return notes


def surface_title(surface, metric: str, omit=()) -> str:
    """``model · data · norm · grid``, and on a second line what :func:`result_notes` says."""
    parts = [v for k, v in title_parts(surface).items() if k not in omit]
    title = " · ".join(parts)
    notes = result_notes(surface, metric)
    return title + ("\n" + " · ".join(notes) if notes else "")


# ------------------------------------------------------------------------------ marks on maps


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of the cells around grid coordinates: midpoints, and half a step beyond the ends.

    >>> cell_edges(np.array([0.0, 1.0, 3.0])).tolist()
    [-0.5, 0.5, 2.0, 4.0]
    """
    centres = np.asarray(centres, dtype=float)
    if centres.size == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = 0.5 * (centres[1:] + centres[:-1])
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def hatch_missing(ax, x, y, missing: np.ndarray, label: str = "not computed",
                  hatch: str = "////", color: str = "0.45"):
    """Hatch the cells of the (ny, nx) grid where ``missing`` is True (runs of a row merged).

    Returns the collection, or None when nothing is missing.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    missing = np.asarray(missing, dtype=bool)
    if not missing.any():
        return None
    x_edges, y_edges = cell_edges(x), cell_edges(y)
    cells = []
    for iy, row in enumerate(missing):
        padded = np.concatenate([[False], row, [False]]).astype(int)
        starts = np.flatnonzero(np.diff(padded) == 1)
        stops = np.flatnonzero(np.diff(padded) == -1)
        for start, stop in zip(starts, stops, strict=True):
            cells.append(Rectangle((x_edges[start], y_edges[iy]), x_edges[stop] - x_edges[start],
                                   y_edges[iy + 1] - y_edges[iy]))
    collection = PatchCollection(cells, facecolor="none", edgecolor=color, hatch=hatch,
                                 linewidth=0.0, label=label, zorder=3)
    ax.add_collection(collection)
    return collection


def mark_points(ax, coordinates, labels=None):
    """Mark and label points of the plane, e.g. the three models of a ``kind=plane`` surface
    (its ``plane_coordinates`` and ``plane_labels`` attrs). Returns the marker artists."""
    points = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(points))]
    artists = []
    for (u, v), label in zip(points, labels):
        artists += ax.plot([u], [v], marker="o", ms=6, color="white", mec="black", zorder=5, ls="none")
        ax.annotate(str(label), (u, v), xytext=(5, 5), textcoords="offset points", fontsize=9,
                    fontweight="bold", zorder=6)
    return artists


def mark_minimum(ax, x, y, values: np.ndarray):
    """A white star at the grid point of the smallest finite value; returns the marker or None."""
    values = np.ma.filled(np.ma.asarray(values, dtype=float), np.nan)
    if not np.isfinite(values).any():
        return None
    iy, ix = np.unravel_index(np.nanargmin(values), values.shape)
    (marker,) = ax.plot([x[ix]], [y[iy]], linestyle="none", marker="*", markersize=12,
                        color="white", markeredgecolor="black", markeredgewidth=0.8, zorder=6,
                        label=f"minimum {format_level(float(values[iy, ix]))}")
    return marker


def label_contours(ax, contours, avoid=(), fontsize: float = 7.0) -> list:
    """Label the lines of ``contours`` so that no two labels overlap and none covers what
    ``avoid`` holds: artists (markers, a legend) or (N, 2) arrays of points in data
    coordinates (a path).

    Each level gets at most one label, at the point of its lines farthest from the labels
    already placed; a level with no free place, or whose lines are too short to hold a label,
    stays unlabelled (its value is on the colour bar). Placement works in pixels, so it runs
    after the layout is final: call it last.
    """
    figure = ax.figure
    figure.draw_without_rendering()
    get_renderer = getattr(figure.canvas, "get_renderer", None)  # Agg; others (pdf) lack it
    renderer = get_renderer() if get_renderer else figure._get_renderer()
    font = FontProperties(size=fontsize)
    frame = ax.get_window_extent(renderer)
    to_pixels = ax.transData
    boxes = []
    for item in avoid:
        if isinstance(item, np.ndarray):
            boxes += [(px, py, 4.0, 4.0) for px, py in to_pixels.transform(item.reshape(-1, 2))]
        elif item is not None and (box := _box_of(item, renderer)) is not None:
            boxes.append(box)
    levels, positions = [], []
    pad = 2.0
    for level, path in zip(contours.levels, contours.get_paths(), strict=False):
        if path.vertices.size == 0:
            continue
        width, height, _ = renderer.get_text_width_height_descent(
            format_level(level), font, ismath=False)
        half = 0.5 * math.hypot(width, height) + pad  # a label may turn along its line
        best = None
        for segment in path.to_polygons(closed_only=False):
            pixels = to_pixels.transform(segment)
            steps = np.hypot(*np.diff(pixels, axis=0).T)
            length = float(steps.sum())
            if length < 3 * width:  # a label would hide most of this line
                continue
            along = np.concatenate([[0.0], np.cumsum(steps)])
            stations = np.arange(half, length - half, 4.0)
            points = np.column_stack([np.interp(stations, along, pixels[:, 0]),
                                      np.interp(stations, along, pixels[:, 1])])
            for px, py in points:
                if not (frame.x0 + half <= px <= frame.x1 - half
                        and frame.y0 + half <= py <= frame.y1 - half):
                    continue
                gap = min((max(abs(px - cx) - half - hw, abs(py - cy) - half - hh)
                           for cx, cy, hw, hh in boxes), default=math.inf)
                if gap < 0:
                    continue
                if best is None or gap > best[0]:
                    best = (gap, px, py)
        if best is None:
            continue
        _, px, py = best
        boxes.append((px, py, half, half))
        levels.append(level)
        positions.append(tuple(to_pixels.inverted().transform((px, py))))
    if not levels:
        return []
    return contours.clabel(levels=levels, manual=positions, inline=True, fontsize=fontsize,
                           fmt=format_level)


def _box_of(artist, renderer):
    """(centre x, centre y, half width, half height) of an artist in pixels, or None."""
    try:
        extent = artist.get_window_extent(renderer)
    except (AttributeError, TypeError, RuntimeError):
        return None
    if extent.width == 0 and extent.height == 0 and not np.isfinite(extent.x0):
        return None
    return (0.5 * (extent.x0 + extent.x1), 0.5 * (extent.y0 + extent.y1),
            0.5 * extent.width + 2.0, 0.5 * extent.height + 2.0)
