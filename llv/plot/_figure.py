"""Shared pieces of every figure: options, Agg figures, saving, contour levels and labels.

Figures are plain :class:`matplotlib.figure.Figure` objects on an explicit Agg canvas, so
plotting never touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from llv.console import LlvError, log

DPI = 150
"""Resolution of raster output: a figure of w x h inches becomes (w*DPI) x (h*DPI) pixels."""

MAX_LEVELS = 1000
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_?")


@dataclass(frozen=True)
class PlotOptions:
    """What the user asked for on the command line (``--vmin --vmax --vlevel --log --format``)."""

    vmin: float | None = None
    vmax: float | None = None
    vlevel: float | None = None
    log: bool = False
    fmt: str = "png"

    def __post_init__(self) -> None:
        if self.vlevel is not None and not self.vlevel > 0:
            raise LlvError(f"--vlevel must be positive, got {self.vlevel}")
        if self.vmin is not None and self.vmax is not None and not self.vmin < self.vmax:
            raise LlvError(f"--vmin ({self.vmin}) must be below --vmax ({self.vmax})")
        if self.log and self.vmax is not None and self.vmax <= 0:
            raise LlvError(f"--log needs a positive --vmax, got {self.vmax}")


def new_figure(width: float, height: float) -> Figure:
    """A figure with constrained layout on an Agg canvas (no pyplot, no display)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, out: Path, fmt: str) -> Path:
    """Write ``figure`` to ``out`` (png/pdf/svg) at :data:`DPI` and log the path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, format=fmt, dpi=DPI)
    log.info("wrote %s", out)
    return out


def finite_values(*arrays: np.ndarray) -> np.ndarray:
    """All finite entries of ``arrays``, flattened together."""
    joined = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    return joined[np.isfinite(joined)]


def value_range(values: np.ndarray, options: PlotOptions) -> tuple[float, float]:
    """(low, high) of the colour scale: ``--vmin/--vmax`` where given, else the data's range.

    With ``--log`` the low end is the smallest positive value (a log scale cannot reach 0).
    """
    data = values[np.isfinite(values)]
    if options.log:
        data = data[data > 0]
    if data.size == 0:
        raise LlvError(
            "no finite values to plot" + (" (none positive for --log)" if options.log else "")
        )
    low = float(data.min()) if options.vmin is None else float(options.vmin)
    high = float(data.max()) if options.vmax is None else float(options.vmax)
    if options.log and low <= 0:
        low = float(data.min())
    if not high > low:
        high = low * 10 if options.log else low + max(abs(low), 1.0) * 1e-3
    return low, high


def contour_levels(values: np.ndarray, options: PlotOptions, nbins: int = 20) -> np.ndarray:
    """Contour levels over ``values`` honouring ``--vmin/--vmax/--vlevel/--log``.

    ``--vlevel`` is the spacing between levels (in decades with ``--log``); without it about
    ``nbins`` round-numbered levels span the range.

    >>> contour_levels(np.array([0.0, 1.0]), PlotOptions(vmin=0.0, vmax=1.0, vlevel=0.25))
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    low, high = value_range(values, options)
    if options.log:
        low, high = np.log10(low), np.log10(high)
    if options.vlevel is not None:
        count = int(np.floor((high - low) / options.vlevel + 1e-9)) + 1
        if count > MAX_LEVELS:
            raise LlvError(f"--vlevel {options.vlevel} gives {count} levels; at most {MAX_LEVELS}")
        levels = low + options.vlevel * np.arange(count)
        if count < 2:
            levels = np.array([low, low + options.vlevel])
    elif options.log:
        levels = np.linspace(low, high, nbins + 1)
    else:
        # Round numbers that cover the data; a bound the user gave is kept exactly.
        levels = MaxNLocator(nbins=nbins).tick_values(low, high)
        tolerance = 1e-9 * (high - low)
        if options.vmin is not None:
            levels = np.union1d([low], levels[levels > low + tolerance])
        if options.vmax is not None:
            levels = np.union1d(levels[levels < high - tolerance], [high])
    return 10.0**levels if options.log else levels


def color_norm(levels: np.ndarray, log_scale: bool) -> Normalize:
    """The colour normalization spanning ``levels`` (logarithmic with ``--log``)."""
    if log_scale:
        return LogNorm(vmin=levels[0], vmax=levels[-1])
    return Normalize(vmin=levels[0], vmax=levels[-1])


def add_colorbar(figure: Figure, mappable, ax, label: str = "", **kwargs):
    """A colour bar with short tick labels (``%.3g``), also on a log scale."""
    bar = figure.colorbar(mappable, ax=ax, label=label, **kwargs)
    if isinstance(mappable.norm, LogNorm):
        bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
        bar.ax.yaxis.set_minor_formatter(NullFormatter())
    return bar


def extend_for(values: np.ndarray, levels: np.ndarray) -> str:
    """Which ends of a filled contour need the over/under colour to show data beyond the levels."""
    data = values[np.isfinite(values)]
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
