"""Figures of loss surfaces: 1-D curves, contours, filled contours, heatmaps, 3-D, comparisons.

Each ``*_figure`` function builds and returns a :class:`~matplotlib.figure.Figure` (tests inspect
it); each ``plot_*`` function renders inputs to an output file and returns the files written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from llv.console import LlvError
from llv.plot import html
from llv.plot._figure import (
    PlotOptions,
    add_colorbar,
    color_norm,
    contour_levels,
    extend_for,
    finite_values,
    metric_label,
    new_figure,
    run_label,
    save_figure,
    value_range,
)
from llv.plot.io import Surface, load_surface

CMAP = "viridis"
CMAP_3D = "coolwarm"
_LOSS_COLOR = "tab:blue"
_ACC_COLOR = "tab:red"
_MAP_KINDS = ("contour", "contourf", "heatmap")


def require_2d(surface: Surface, kind: str) -> None:
    """Raise a one-line error when a 2-D figure is asked of 1-D data."""
    if not surface.is_2d:
        raise LlvError(
            f"'{kind}' needs a 2-D surface, but {surface.path} is 1-D "
            f"({len(surface.x)} points); use 'llv plot 1d'"
        )


def require_1d(surface: Surface, kind: str) -> None:
    """Raise a one-line error when a 1-D figure is asked of 2-D data."""
    if surface.is_2d:
        ny, nx = surface.grid_shape
        raise LlvError(
            f"'{kind}' needs a 1-D surface, but {surface.path} is 2-D ({nx}x{ny}); "
            "use contour, contourf, heatmap or surface3d"
        )


def masked_for(values: np.ndarray, options: PlotOptions) -> np.ndarray:
    """Values with NaN (and, on a log scale, non-positive entries) masked out."""
    masked = np.ma.masked_invalid(values)
    return np.ma.masked_less_equal(masked, 0) if options.log else masked


def height(values: np.ndarray, options: PlotOptions) -> tuple[np.ndarray, str]:
    """Heights of a 3-D surface: clipped to ``--vmin/--vmax``; ``--log`` gives ln(loss + 0.1).

    The clip and the log follow the reference implementation's ``h52vtp.py``.
    """
    z = np.array(values, dtype=float)
    if options.vmax is not None:
        z[z > options.vmax] = options.vmax
    if options.vmin is not None:
        z[z < options.vmin] = options.vmin
    if options.log:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(z + 0.1), "ln(loss + 0.1)"
    return z, ""


# ---------------------------------------------------------------------------------- 1-D


def draw_1d(ax_loss: Axes, surface: Surface, options: PlotOptions) -> Axes:
    """Loss (left axis) and accuracy (right axis) along α; train solid, test dashed.

    Returns the accuracy axes (a twin of ``ax_loss``), or ``ax_loss`` when there is no accuracy.
    """
    losses, accuracies = surface.metrics("loss"), surface.metrics("acc")
    if not losses and not accuracies:
        raise LlvError(f"{surface.path} has no loss or accuracy to plot")
    x = surface.x
    for metric in losses:
        _draw_curve(ax_loss, x, surface, metric, _LOSS_COLOR)
    ax_acc = ax_loss.twinx() if accuracies else ax_loss
    for metric in accuracies:
        _draw_curve(ax_acc, x, surface, metric, _ACC_COLOR)
    if options.log:
        ax_loss.set_yscale("log")
    if options.vmin is not None or options.vmax is not None:
        ax_loss.set_ylim(options.vmin, options.vmax)
    ax_loss.set_xlim(np.nanmin(x), np.nanmax(x))
    ax_loss.set_xlabel("α")
    ax_loss.set_ylabel("loss", color=_LOSS_COLOR)
    ax_loss.tick_params(axis="y", colors=_LOSS_COLOR)
    if accuracies:
        ax_acc.set_ylim(0, 100)
        ax_acc.set_ylabel("accuracy (%)", color=_ACC_COLOR)
        ax_acc.tick_params(axis="y", colors=_ACC_COLOR)
    if surface.is_interpolation:
        for alpha, name in ((0.0, "θA"), (1.0, "θB")):
            if x.min() <= alpha <= x.max():
                ax_loss.axvline(alpha, color="0.6", linestyle=":", linewidth=0.8)
                ax_loss.annotate(
                    name,
                    (alpha, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(2, -10),
                    textcoords="offset points",
                    color="0.4",
                )
    handles = ax_loss.get_legend_handles_labels()
    if ax_acc is not ax_loss:
        more = ax_acc.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    ax_loss.legend(*handles, loc="best", fontsize="small")
    return ax_acc


def _draw_curve(ax: Axes, x: np.ndarray, surface: Surface, metric: str, color: str) -> None:
    linestyle = "-" if metric.startswith("train") else "--"
    label = metric_label(metric).replace(" (%)", "")
    members = surface.members(metric)
    if members is not None:
        for member in members:
            ax.plot(x, member, color=color, linestyle=linestyle, linewidth=0.5, alpha=0.2)
        with np.errstate(all="ignore"):
            low, high = np.nanpercentile(members, [10, 90], axis=0)
        ax.fill_between(
            x, low, high, color=color, alpha=0.2, linewidth=0, label=f"{label}, 10–90 %"
        )
        ax.plot(
            x,
            surface.grid(metric),
            color=color,
            linestyle=linestyle,
            linewidth=1.5,
            label=f"{label} (median of {len(members)})",
        )
        return
    values = surface.values[metric]
    errors = surface.values.get(f"{metric}_se")
    if errors is not None and errors.shape == values.shape:
        ax.errorbar(
            x,
            values,
            yerr=errors,
            color=color,
            linestyle=linestyle,
            linewidth=1.2,
            elinewidth=0.8,
            capsize=2,
            label=f"{label} ± s.e.",
        )
    else:
        ax.plot(x, values, color=color, linestyle=linestyle, linewidth=1.2, label=label)


def figure_1d(surface: Surface, options: PlotOptions) -> Figure:
    """Loss and accuracy along one direction or an interpolation, on twin axes."""
    require_1d(surface, "1d")
    figure = new_figure(6.4, 4.4)
    ax = figure.add_subplot()
    draw_1d(ax, surface, options)
    ax.set_title(surface.describe())
    return figure


# ---------------------------------------------------------------------------------- 2-D


def draw_map(
    ax: Axes,
    surface: Surface,
    values: np.ndarray,
    kind: str,
    levels: np.ndarray,
    options: PlotOptions,
    label_lines: bool = True,
):
    """Draw ``values`` over the (α, β) plane as contour lines, filled contours or a heatmap.

    Returns the mappable for a colour bar.
    """
    x, y = surface.x, surface.y
    data = masked_for(values, options)
    norm = color_norm(levels, options.log)
    if kind == "heatmap":
        mappable = ax.pcolormesh(x, y, data, shading="nearest", cmap=CMAP, norm=norm)
    elif kind == "contourf":
        mappable = ax.contourf(
            x,
            y,
            data,
            levels=levels,
            cmap=CMAP,
            norm=norm,
            extend=extend_for(finite_values(data.filled(np.nan)), levels),
        )
        ax.contour(x, y, data, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
    elif kind == "contour":
        mappable = ax.contour(x, y, data, levels=levels, cmap=CMAP, norm=norm, linewidths=1.0)
        if label_lines and len(mappable.levels) <= 40:
            ax.clabel(mappable, inline=True, fontsize=7, fmt="%.3g")
    else:
        raise ValueError(f"not a map kind: {kind}")
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    if kind != "heatmap":  # a heatmap shows whole cells, half a step beyond the outer points
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
    return mappable


def figure_map(
    surface: Surface, kind: str, options: PlotOptions, metric: str | None = None
) -> Figure:
    """One surface as ``contour``, ``contourf`` or ``heatmap`` with a colour bar."""
    require_2d(surface, kind)
    metric = metric or surface.default_metric()
    values = surface.grid(metric)
    levels = _levels_or_range(values, kind, options)
    figure = new_figure(6.0, 4.8)
    ax = figure.add_subplot()
    mappable = draw_map(ax, surface, values, kind, levels, options)
    add_colorbar(figure, mappable, ax=ax, label=metric_label(metric))
    ax.set_title(surface.describe())
    return figure


def _levels_or_range(values: np.ndarray, kind: str, options: PlotOptions) -> np.ndarray:
    if kind == "heatmap":
        return np.array(value_range(values, options))
    return contour_levels(values, options)


def figure_surface3d(surface: Surface, options: PlotOptions, metric: str | None = None) -> Figure:
    """A shaded 3-D surface of the loss over the (α, β) plane."""
    require_2d(surface, "surface3d")
    metric = metric or surface.default_metric()
    z, z_label = height(surface.grid(metric), options)
    if not np.isfinite(z).any():
        raise LlvError(f"{surface.path}: '{metric}' has no finite values to plot")
    xx, yy = np.meshgrid(surface.x, surface.y)
    figure = new_figure(6.4, 5.2)
    ax = figure.add_subplot(projection="3d")
    finite = z[np.isfinite(z)]
    low, high = float(finite.min()), float(finite.max())
    norm = color_norm(np.array([low, high if high > low else low + 1.0]), log_scale=False)
    mappable = ax.plot_surface(
        xx,
        yy,
        np.ma.masked_invalid(z),
        cmap=CMAP_3D,
        norm=norm,
        rstride=1,
        cstride=1,
        linewidth=0,
        antialiased=False,
    )
    z_label = z_label or metric_label(metric)
    add_colorbar(figure, mappable, ax=ax, shrink=0.6, pad=0.08)  # the z axis has the label
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    ax.set_zlabel(z_label)
    ax.set_title(surface.describe())
    return figure


def figure_compare(surfaces: list[Surface], options: PlotOptions) -> Figure:
    """Surfaces side by side (1 x K) with the same contour levels and one shared colour bar.

    The levels come from ``--vmin/--vmax/--vlevel`` or the union of all values, so equal
    colours mean equal loss in every panel (the paper's way to compare minimizers).
    """
    if not surfaces:
        raise LlvError("'compare' needs at least one surface file")
    if all(not s.is_2d for s in surfaces):
        return _compare_1d(surfaces, options)
    for surface in surfaces:
        require_2d(surface, "compare")
    metrics = [s.default_metric() for s in surfaces]
    grids = [s.grid(m) for s, m in zip(surfaces, metrics, strict=True)]
    union = finite_values(*grids)
    levels = contour_levels(union, options)
    norm = color_norm(levels, options.log)
    extend = extend_for(union, levels)
    count = len(surfaces)
    figure = new_figure(3.6 * count + 1.2, 3.9)
    axes = figure.subplots(1, count, squeeze=False)[0]
    mappable = None
    for ax, surface, values in zip(axes, surfaces, grids, strict=True):
        data = masked_for(values, options)
        mappable = ax.contourf(
            surface.x, surface.y, data, levels=levels, cmap=CMAP, norm=norm, extend=extend
        )
        ax.contour(surface.x, surface.y, data, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        ax.set_title(run_label(surface.path), fontsize="medium")
    add_colorbar(figure, mappable, ax=list(axes), label=metric_label(metrics[0]))
    figure.suptitle(surfaces[0].describe())
    return figure


def _compare_1d(surfaces: list[Surface], options: PlotOptions) -> Figure:
    count = len(surfaces)
    figure = new_figure(4.2 * count + 0.6, 3.9)
    axes = figure.subplots(1, count, squeeze=False, sharey=True)[0]
    for ax, surface in zip(axes, surfaces, strict=True):
        draw_1d(ax, surface, options)
        ax.set_title(run_label(surface.path), fontsize="medium")
    if options.vmin is None and options.vmax is None:
        losses = finite_values(*(s.values[m] for s in surfaces for m in s.metrics("loss")))
        if losses.size and not options.log:
            axes[0].set_ylim(0, float(losses.max()) * 1.05)
    figure.suptitle(surfaces[0].describe())
    return figure


# ---------------------------------------------------------------------------------- files


def plot_1d(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot 1d``: loss and accuracy curves of a 1-D surface or interpolation."""
    (path,) = paths
    return [save_figure(figure_1d(load_surface(path), options), out, options.fmt)]


def plot_map(kind: str):
    """The renderer of one map kind (``contour``, ``contourf``, ``heatmap``)."""

    def render(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
        (path,) = paths
        surface = load_surface(path)
        if options.fmt == "html":
            require_2d(surface, kind)
            return [html.write_surface_html(surface, kind, options, out)]
        return [save_figure(figure_map(surface, kind, options), out, options.fmt)]

    render.__name__ = f"plot_{kind}"
    render.__doc__ = f"``llv plot {kind}``: one 2-D surface."
    return render


def plot_surface3d(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot surface3d``: a 3-D surface (matplotlib, or plotly with ``--format html``)."""
    (path,) = paths
    surface = load_surface(path)
    if options.fmt == "html":
        require_2d(surface, "surface3d")
        return [html.write_surface_html(surface, "surface3d", options, out)]
    return [save_figure(figure_surface3d(surface, options), out, options.fmt)]


def plot_compare(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot compare``: several surfaces side by side with shared levels."""
    surfaces = [load_surface(p) for p in paths]
    return [save_figure(figure_compare(surfaces, options), out, options.fmt)]
