"""Figures of loss surfaces: 1-D curves, contours, filled contours, heatmaps, 3-D, comparisons.

Each ``draw_*`` function draws one kind onto given Axes and returns them (``llv.plot.draw`` and
``Result.plot`` use these); each ``*_figure`` function builds a
:class:`~matplotlib.figure.Figure` around one (tests inspect it); each ``plot_*`` function
renders inputs to an output file and returns the files written. All follow the rules of
:mod:`llv.plot._figure`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from llv.console import LlvError
from llv.plot import html
from llv.plot._figure import (
    LOG_SPAN,
    PlotOptions,
    add_colorbar,
    cell_edges,
    check_log_limits,
    color_norm,
    computed_mask,
    contour_levels,
    extend_for,
    finite_values,
    format_level,
    hatch_missing,
    label_contours,
    mark_minimum,
    mark_points,
    metric_label,
    new_figure,
    nice_levels,
    resolve_log,
    result_notes,
    run_label,
    save_figure,
    surface_title,
    title_parts,
    value_range,
)
from llv.plot.io import Surface, load_surface

CMAP = "viridis"
CMAP_3D = "coolwarm"
_LOSS_COLOR = "tab:blue"
_ACC_COLOR = "tab:red"
_MAP_KINDS = ("contour", "contourf", "heatmap")
_BAND_ABOVE = 60  # more points than this: standard errors as a band, not error bars
SMOOTH_POINTS = 121  # a smooth 3-D surface has about this many points per axis
CAMERA = {"elev": 35.0, "azim": -55.0}  # close to the paper's Fig. 1


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


def height(values: np.ndarray, options: PlotOptions, mask: bool = False) -> tuple[np.ndarray, str]:
    """Heights of a 3-D surface: clipped to ``--vmin/--vmax`` (``mask``: NaN, i.e. not drawn,
    above ``--vmax``); ``--log`` gives ln(loss + 0.1), as the reference's ``h52vtp.py``.

    Masking instead of clipping ends the walls at ``--vmax``, where clipping would draw a flat
    plateau that is not in the data.
    """
    z = np.array(values, dtype=float)
    if options.vmax is not None:
        z[z > options.vmax] = np.nan if mask else options.vmax
    if options.vmin is not None:
        z[z < options.vmin] = options.vmin
    if options.log:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.log(z + 0.1), "ln(loss + 0.1)"
    return z, ""


def masked_height(values: np.ndarray, options: PlotOptions) -> tuple[np.ndarray, str]:
    """:func:`height` with the part above ``--vmax`` masked (the 3-D figure's rule)."""
    return height(values, options, mask=True)


def surface_polygons(x: np.ndarray, y: np.ndarray, z: np.ndarray, top: float | None = None):
    """The faces of a (ny, nx) height grid, cut off at height ``top``: the grid cells below it
    whole, those crossing it clipped along the line where the (bilinear edge) height equals
    ``top``, those above it and cells touching a missing value left out.

    Returns ``(polygons, mean heights)``: a list of (k, 3) vertex arrays, 3 <= k <= 8.
    """
    z = np.asarray(z, dtype=float)
    xx, yy = np.meshgrid(x, y)
    corners = np.stack([np.stack([xx[r:r + z.shape[0] - 1, c:c + z.shape[1] - 1],
                                  yy[r:r + z.shape[0] - 1, c:c + z.shape[1] - 1],
                                  z[r:r + z.shape[0] - 1, c:c + z.shape[1] - 1]], axis=-1)
                        for r, c in ((0, 0), (0, 1), (1, 1), (1, 0))], axis=2)
    cells = corners.reshape(-1, 4, 3)
    finite = np.isfinite(cells[..., 2]).all(axis=1)
    below = finite if top is None else finite & (cells[..., 2] <= top).all(axis=1)
    polygons = list(cells[below])
    if top is not None:
        crossing = finite & ~below & (cells[..., 2] <= top).any(axis=1)
        polygons += [_clip_below(cell, top) for cell in cells[crossing]]
    heights = np.array([p[:, 2].mean() for p in polygons])
    return polygons, heights


def _clip_below(polygon: np.ndarray, top: float) -> np.ndarray:
    """The part of a polygon at or below height ``top`` (Sutherland-Hodgman, one plane)."""
    kept = []
    for start, end in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        if start[2] <= top:
            kept.append(start)
        if (start[2] <= top) != (end[2] <= top):
            t = (top - start[2]) / (end[2] - start[2])
            kept.append(start + t * (end - start))
    return np.array(kept)


def upsample(x: np.ndarray, y: np.ndarray, values: np.ndarray, points: int = SMOOTH_POINTS,
             log: bool = False):
    """A (ny, nx) grid resampled to about ``points`` per axis by bicubic spline interpolation
    through every grid value; points nearest a missing value stay missing.

    With ``log`` (a log colour scale) and positive values, the spline goes through
    log(values) and is exponentiated, so it is smooth on the scale drawn. A surface with walls
    (positive values whose largest exceeds ``LOG_SPAN`` × their median, as a loss surface
    beyond its basin) is interpolated as its logarithm too, and each new point is kept between
    the values at the corners of its grid cell: a spline through a wall 10⁵ times the basin's
    loss would ring into bands and checkerboards that are not in the data. Otherwise the spline
    is left as it is (a cubic is reproduced exactly); :func:`smoothed`, what figures draw,
    also clips it to the computed values' range.

    Returns ``(x, y, values)`` of the finer grid.
    """
    from scipy.interpolate import RectBivariateSpline
    from scipy.ndimage import distance_transform_edt

    values = np.asarray(values, dtype=float)
    if min(len(x), len(y)) < 4:
        raise LlvError(f"smoothing needs at least 4 points per axis, not {len(x)}x{len(y)}")
    missing = ~np.isfinite(values)
    if missing.all():
        raise LlvError("no finite values to smooth")
    nearest = distance_transform_edt(missing, return_distances=False, return_indices=True)
    filled = values[tuple(nearest)]
    positive = bool((filled > 0).all())
    steep = positive and bool(filled.max() > LOG_SPAN * np.median(filled))
    logarithmic = positive and (steep or bool(log))
    work = np.log(filled) if logarithmic else filled
    fine_x = np.linspace(x[0], x[-1], max(len(x), points))
    fine_y = np.linspace(y[0], y[-1], max(len(y), points))
    spline = RectBivariateSpline(y, x, work, kx=3, ky=3, s=0)
    fine = spline(fine_y, fine_x)
    if steep:
        cell_x = np.clip(np.searchsorted(x, fine_x, side="right") - 1, 0, len(x) - 2)
        cell_y = np.clip(np.searchsorted(y, fine_y, side="right") - 1, 0, len(y) - 2)
        corners = [work[np.ix_(cell_y + i, cell_x + j)] for i in (0, 1) for j in (0, 1)]
        fine = np.clip(fine, np.minimum.reduce(corners), np.maximum.reduce(corners))
    if logarithmic:
        fine = np.exp(fine)
    near_x = np.abs(fine_x[:, None] - x[None, :]).argmin(axis=1)
    near_y = np.abs(fine_y[:, None] - y[None, :]).argmin(axis=1)
    fine[missing[np.ix_(near_y, near_x)]] = np.nan
    return fine_x, fine_y, fine


def smoothed(surface: Surface, values: np.ndarray, options: PlotOptions):
    """What a map draws: ``(grid with .x and .y, values, note)``, upsampled by :func:`upsample`
    with ``smooth`` (the note says so), else the surface's own grid and no note.

    The upsampled values are clipped to the computed values' [min, max]: a bicubic spline
    overshoots on coarse grids and would invent a basin lower (or a wall higher) than anything
    computed. On a log colour scale the spline goes through log(values) (:func:`upsample`).
    """
    if not options.smooth:
        return surface, values, None
    fine_x, fine_y, fine = upsample(surface.x, surface.y, values, log=bool(options.log))
    computed = finite_values(values)
    with np.errstate(invalid="ignore"):
        fine = np.clip(fine, computed.min(), computed.max())  # NaN (missing) stays NaN
    note = (f"interpolated (bicubic, {len(surface.x)}×{len(surface.y)} → "
            f"{len(fine_x)}×{len(fine_y)})")
    return SimpleNamespace(x=fine_x, y=fine_y), fine, note


def with_note(title: str, note: str | None) -> str:
    """``title`` with ``note`` on its notes line (the second), if any."""
    if not note:
        return title
    return title + ("\n" if "\n" not in title else " · ") + note


def colour_label(metric: str, options: PlotOptions) -> str:
    """The colour bar's label: the quantity, and the scale when it is logarithmic."""
    return metric_label(metric) + (" (log scale)" if options.log else "")


def _metric(surface: Surface, options: PlotOptions, metric: str | None) -> str:
    return metric or options.metric or surface.default_metric()


# ---------------------------------------------------------------------------------- 1-D


def draw_1d(ax_loss: Axes, surface: Surface, options: PlotOptions) -> Axes:
    """Loss (left axis) and accuracy (right axis) along α; train solid, test dashed.

    The loss axis is logarithmic when :func:`~llv.plot._figure.auto_log` says so (or
    ``--log``); α where the loss is not finite is shaded, points not computed hatched, the
    minimizer of the first loss marked. Returns the accuracy axes (a twin of ``ax_loss``), or
    ``ax_loss`` when there is no accuracy.
    """
    require_1d(surface, "1d")
    losses, accuracies = surface.metrics("loss"), surface.metrics("acc")
    if not losses and not accuracies:
        raise LlvError(f"{surface.path} has no loss or accuracy to plot")
    x = surface.x
    # the scale follows the first loss (training before test), as on the 2-D kinds
    options = resolve_log(options, surface.grid(losses[0]) if losses else np.zeros(0))
    check_log_limits(options)  # a log loss axis cannot reach a non-positive --vmin
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
    ax_loss.set_ylabel("loss" + (" (log scale)" if options.log else ""), color=_LOSS_COLOR)
    ax_loss.tick_params(axis="y", colors=_LOSS_COLOR)
    if accuracies:
        ax_acc.set_ylim(0, 100)
        ax_acc.set_ylabel("accuracy (%)", color=_ACC_COLOR)
        ax_acc.tick_params(axis="y", colors=_ACC_COLOR)
    if losses:
        _mark_minimum_1d(ax_loss, x, surface.grid(losses[0]))
    _shade_gaps(ax_loss, surface, losses)
    if surface.is_interpolation:
        # θA and θB on a top axis: labels inside the axes collide with the curves
        ends = [alpha for alpha in (0.0, 1.0) if x.min() <= alpha <= x.max()]
        for alpha in ends:
            ax_loss.axvline(alpha, color="0.6", linestyle=":", linewidth=0.8)
        top = ax_loss.secondary_xaxis("top")
        top.set_xticks(ends, labels=[{0.0: "θA", 1.0: "θB"}[a] for a in ends])
        top.tick_params(length=0, colors="0.3")
    handles = ax_loss.get_legend_handles_labels()
    if ax_acc is not ax_loss:
        more = ax_acc.get_legend_handles_labels()
        handles = (handles[0] + more[0], handles[1] + more[1])
    # below the axes: inside, a legend of several curves and shadings hides some of them
    ax_loss.legend(*handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2,
                   fontsize="small", frameon=False)
    return ax_acc


def _mark_minimum_1d(ax: Axes, x: np.ndarray, values: np.ndarray) -> None:
    if not np.isfinite(values).any():
        return
    index = int(np.nanargmin(values))
    ax.plot([x[index]], [values[index]], linestyle="none", marker="*", markersize=11,
            color="white", markeredgecolor="black", markeredgewidth=0.8, zorder=6,
            label=f"minimum {format_level(float(values[index]))} at α = {x[index]:.3g}")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last + 1) of each run of True in a 1-D mask."""
    padded = np.concatenate([[0], np.asarray(mask, dtype=int), [0]])
    changes = np.diff(padded)
    return list(zip(np.flatnonzero(changes == 1), np.flatnonzero(changes == -1), strict=True))


def _shade_gaps(ax: Axes, surface: Surface, losses: list[str]) -> None:
    """Shade α where no loss is finite although computed (red) and hatch α not computed."""
    if not losses:
        return
    edges = cell_edges(surface.x)
    computed = computed_mask(surface)
    finite = np.all([np.isfinite(surface.grid(m)) for m in losses], axis=0)
    gaps = (
        (computed & ~finite, "loss not finite (overflow or NaN)", {"color": "tab:red", "alpha": 0.12}),
        (~computed, "not computed", {"facecolor": "none", "edgecolor": "0.5", "hatch": "////"}),
    )
    floored = np.isin(surface.x, np.asarray(surface.attrs.get("bn_floored_alphas", []), dtype=float))
    if floored.any():  # BatchNorm variances held at their floor (extrapolated statistics)
        gaps += ((floored & computed & finite, "BN variance extrapolated, held at its floor",
                  {"color": "tab:purple", "alpha": 0.08}),)
    for mask, what, style in gaps:
        count = int(mask.sum())
        for number, (first, stop) in enumerate(_runs(mask)):
            ax.axvspan(edges[first], edges[stop], linewidth=0, zorder=0,
                       label=f"{what}: {count} of {mask.size} points" if number == 0 else None,
                       **style)


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
    if errors is not None and errors.shape == values.shape and len(x) <= _BAND_ABOVE:
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
        return
    if errors is not None and errors.shape == values.shape:  # error bars would merge
        ax.fill_between(x, values - errors, values + errors, color=color, alpha=0.25,
                        linewidth=0, label=f"{label}: ± s.e.")
    ax.plot(x, values, color=color, linestyle=linestyle, linewidth=1.2, label=label)


def draw_1d_panel(ax: Axes, surface: Surface, options: PlotOptions) -> Axes:
    """:func:`draw_1d` with the title (model, data, normalization, points, notes)."""
    draw_1d(ax, surface, options)
    metric = surface.default_metric() if surface.metrics("loss") else surface.metrics("acc")[0]
    ax.set_title(surface_title(surface, metric), fontsize="medium")
    return ax


def figure_1d(surface: Surface, options: PlotOptions) -> Figure:
    """Loss and accuracy along one direction or an interpolation, on twin axes."""
    require_1d(surface, "1d")
    figure = new_figure(6.4, 4.8)  # room for the legend below the axes
    draw_1d_panel(figure.add_subplot(), surface, options)
    return figure


# ---------------------------------------------------------------------------------- 2-D


def draw_map(
    ax: Axes,
    surface: Surface,
    values: np.ndarray,
    kind: str,
    levels: np.ndarray,
    options: PlotOptions,
):
    """Draw ``values`` over the (α, β) plane as contour lines, filled contours or a heatmap
    (colours spanning ``levels[0]..levels[-1]``). Returns the mappable for a colour bar.
    """
    x, y = surface.x, surface.y
    data = masked_for(values, options)
    norm = color_norm(levels, bool(options.log))
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
            extend=extend_for(data, levels),
        )
        ax.contour(x, y, data, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
    elif kind == "contour":
        mappable = ax.contour(x, y, data, levels=levels, cmap=CMAP, norm=norm, linewidths=1.0)
    else:
        raise ValueError(f"not a map kind: {kind}")
    ax.set_xlabel("α")
    ax.set_ylabel("β")
    if kind != "heatmap":  # a heatmap shows whole cells, half a step beyond the outer points
        ax.set_xlim(x.min(), x.max())
        ax.set_ylim(y.min(), y.max())
    return mappable


def mark_gaps(ax: Axes, surface: Surface, values: np.ndarray) -> list:
    """Hatch the cells not computed (grey) and those computed but not finite (red); returns
    the collections drawn, for a legend."""
    computed = computed_mask(surface)
    drawn = [
        hatch_missing(ax, surface.x, surface.y, ~computed,
                      label=f"not computed: {int((~computed).sum()):,} points"),
        hatch_missing(ax, surface.x, surface.y, computed & ~np.isfinite(values), hatch="xx",
                      color="tab:red", label="not finite"),
    ]
    return [d for d in drawn if d is not None]


def draw_map_panel(ax: Axes, surface: Surface, kind: str, options: PlotOptions,
                   metric: str | None = None, colorbar: bool = True) -> Axes:
    """One surface as ``contour``, ``contourf`` or ``heatmap`` on ``ax``: levels, colour bar,
    minimizer, missing points, title and contour labels by the figure rules."""
    require_2d(surface, kind)
    if kind not in _MAP_KINDS:
        raise LlvError(f"not a map kind: '{kind}'; valid: {', '.join(_MAP_KINDS)}")
    metric = _metric(surface, options, metric)
    values = surface.grid(metric)
    options = resolve_log(options, values)
    levels = contour_levels(values, options)
    if kind == "heatmap":
        low, high = value_range(values, options)
        mappable = draw_map(ax, surface, values, kind, np.array([low, high]), options)
        ticks = nice_levels(low, high, bool(options.log), count=8)
        note = None  # a heatmap shows the grid's own cells
    else:
        grid, drawn, note = smoothed(surface, values, options)
        mappable = draw_map(ax, grid, drawn, kind, levels, options)
        ticks = levels
    gaps = mark_gaps(ax, surface, values)
    marker = mark_minimum(ax, surface.x, surface.y, values)
    if surface.attrs.get("plane_coordinates") is not None:  # the models a plane runs through
        mark_points(ax, surface.attrs["plane_coordinates"], surface.attrs.get("plane_labels") or "ABC")
    legend = ax.legend(handles=[h for h in (marker, *gaps) if h is not None], loc="lower left",
                       fontsize="x-small", framealpha=0.85)
    if colorbar:
        add_colorbar(ax.figure, mappable, ax=ax, label=colour_label(metric, options), levels=ticks)
    ax.set_title(with_note(surface_title(surface, metric), note), fontsize="medium")
    if kind == "contour":
        label_contours(ax, mappable, avoid=[marker, legend])
    return ax


def figure_map(
    surface: Surface, kind: str, options: PlotOptions, metric: str | None = None
) -> Figure:
    """One surface as ``contour``, ``contourf`` or ``heatmap`` with a colour bar."""
    require_2d(surface, kind)
    figure = new_figure(6.0, 4.8)
    draw_map_panel(figure.add_subplot(), surface, kind, options, metric)
    return figure


def draw_surface3d(ax, surface: Surface, options: PlotOptions, metric: str | None = None):
    """A shaded 3-D surface of the loss over the (α, β) plane on 3-D axes ``ax``.

    Values above ``--vmax`` are not drawn (the walls end there); with ``smooth`` the grid is
    resampled by bicubic interpolation and the figure says so.
    """
    require_2d(surface, "surface3d")
    if getattr(ax, "name", "") != "3d":
        raise LlvError("'surface3d' draws on 3-D axes: add_subplot(projection='3d')")
    metric = _metric(surface, options, metric)
    options = dataclasses.replace(options, log=bool(options.log))  # no automatic log in 3-D
    grid, values, note = smoothed(surface, surface.grid(metric), options)
    x, y = grid.x, grid.y
    # the whole surface, cut at the height of --vmax below (masked_height would drop the cells
    # that cross it whole, leaving a staircase edge)
    z, z_label = masked_height(values, dataclasses.replace(options, vmax=None))
    top = None
    if options.vmax is not None:
        top = float(masked_height(np.array([options.vmax]), options)[0][0])
    finite = z[np.isfinite(z) & (z <= (np.inf if top is None else top))]
    if not finite.size:
        raise LlvError(f"{surface.path}: '{metric}' has no finite values to plot"
                       + (f" at or below --vmax {options.vmax:g}" if top is not None else ""))
    low, high = float(finite.min()), float(finite.max()) if top is None else top
    norm = color_norm(np.array([low, high if high > low else low + 1.0]), log_scale=False)
    polygons, heights = surface_polygons(x, y, z, top)
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    cmap = colormaps[CMAP_3D]
    from matplotlib.colors import LightSource

    # light from high above: shading shows the shape without turning the basin's colours black
    light = LightSource(azdeg=315, altdeg=65)
    # autolim=False: the limits are set below; autoscaling faces of 3 to 8 vertices reads the
    # padding of matplotlib's ragged face array, which can hold NaN (an intermittent ValueError)
    ax.add_collection3d(Poly3DCollection(polygons, facecolors=cmap(norm(heights)), shade=True,
                                         lightsource=light, linewidth=0, antialiased=False),
                        autolim=False)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    z_label = z_label or metric_label(metric)
    bar = add_colorbar(ax.figure, mappable, ax=ax, label=z_label, shrink=0.6, pad=0.1,
                       levels=nice_levels(norm.vmin, norm.vmax, count=6))
    bar.ax.tick_params(labelsize="small")
    ax.set_zlim(low, high)
    for axis, coordinates in ((ax.xaxis, x), (ax.yaxis, y)):
        # round ticks inside the range: the ends of α and β meet at a corner and collide
        first, last = float(np.min(coordinates)), float(np.max(coordinates))
        ticks = nice_levels(first, last, count=4)
        inside = ticks[(ticks > first + 1e-9 * (last - first)) & (ticks < last - 1e-9 * (last - first))]
        axis.set_ticks(inside if inside.size >= 2 else ticks)
    ax.zaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
    ax.tick_params(labelsize="small", pad=1)
    ax.set_xlabel("α", labelpad=2)
    ax.set_ylabel("β", labelpad=2)
    ax.set_zlabel(z_label, labelpad=4)
    ax.view_init(**CAMERA)
    ax.set_box_aspect((1.0, 1.0, 0.7))
    ax.set_title(with_note(surface_title(surface, metric), note), fontsize="medium")
    return ax


def figure_surface3d(surface: Surface, options: PlotOptions, metric: str | None = None) -> Figure:
    """A shaded 3-D surface of the loss over the (α, β) plane."""
    require_2d(surface, "surface3d")
    figure = new_figure(6.4, 5.2)
    draw_surface3d(figure.add_subplot(projection="3d"), surface, options, metric)
    return figure


def shared_titles(surfaces: list[Surface]) -> tuple[str, list[str]]:
    """A super-title of what every panel shares and one title per panel: its run's name and
    what differs (model, data, normalization, grid), so six models are named six times."""
    parts = [title_parts(s) for s in surfaces]
    keys = list(dict.fromkeys(k for p in parts for k in p))
    common = [k for k in keys if all(p.get(k) == parts[0].get(k) for p in parts)]
    suptitle = " · ".join(parts[0][k] for k in common if k in parts[0])
    panels = []
    for surface, part in zip(surfaces, parts, strict=True):
        name = run_label(surface.path) if surface.path is not None else ""
        own = [part[k] for k in keys if k not in common and k in part and part[k] != name]
        panels.append(" · ".join([name, *own]) if name else " · ".join(own))
    return suptitle, panels


def draw_compare(axes, surfaces: list[Surface], options: PlotOptions, share: bool = True):
    """Surfaces side by side on ``axes`` (one each) with the same levels and colours.

    The levels and colour limits come from ``--vmin/--vmax/--vlevel`` or from all panels
    together, and the log scale from all panels' values, so equal colours mean equal loss in
    every panel (the paper's way to compare minimizers). ``share=False`` scales each panel on
    its own. With ``smooth`` each panel is drawn from its bicubic resampling, and says so.
    """
    if not surfaces:
        raise LlvError("'compare' needs at least one surface file")
    axes = list(np.ravel(axes))
    if len(axes) != len(surfaces):
        raise LlvError(f"'compare' needs one Axes per surface: {len(axes)} for {len(surfaces)}")
    for surface in surfaces:
        require_2d(surface, "compare")
    metrics = [_metric(s, options, None) for s in surfaces]
    grids = [s.grid(m) for s, m in zip(surfaces, metrics, strict=True)]
    suptitle, panel_titles = shared_titles(surfaces)
    figure = axes[0].figure
    if not share:
        for ax, surface, metric, title in zip(axes, surfaces, metrics, panel_titles, strict=True):
            draw_map_panel(ax, surface, "contourf", options, metric)
            ax.set_title(title, fontsize="medium")
        figure.suptitle(suptitle)
        return axes
    union = finite_values(*grids)
    options = resolve_log(options, union)
    levels = contour_levels(union, options)
    norm = color_norm(levels, bool(options.log))
    extend = extend_for(union, levels)
    mappable = None
    for ax, surface, values, metric, title in zip(axes, surfaces, grids, metrics, panel_titles,
                                                  strict=True):
        grid, drawn, note = smoothed(surface, values, options)
        data = masked_for(drawn, options)
        mappable = ax.contourf(grid.x, grid.y, data, levels=levels, cmap=CMAP, norm=norm, extend=extend)
        ax.contour(grid.x, grid.y, data, levels=levels, colors="k", linewidths=0.4, alpha=0.6)
        mark_gaps(ax, surface, values)
        mark_minimum(ax, surface.x, surface.y, values)
        ax.set_xlabel("α")
        ax.set_ylabel("β")
        notes = result_notes(surface, metric) + ([note] if note else [])
        ax.set_title("\n".join([title, *([" · ".join(notes)] if notes else [])]),
                     fontsize="medium")
    add_colorbar(figure, mappable, ax=axes, label=colour_label(metrics[0], options), levels=levels)
    figure.suptitle(suptitle)
    return axes


def figure_compare(surfaces: list[Surface], options: PlotOptions, share: bool = True) -> Figure:
    """Surfaces side by side (1 x K) with the same contour levels and one shared colour bar."""
    if not surfaces:
        raise LlvError("'compare' needs at least one surface file")
    if all(not s.is_2d for s in surfaces):
        return _compare_1d(surfaces, options)
    count = len(surfaces)
    figure = new_figure(3.6 * count + 1.2, 4.1)
    axes = figure.subplots(1, count, squeeze=False)[0]
    draw_compare(axes, surfaces, options, share=share)
    return figure


def _compare_1d(surfaces: list[Surface], options: PlotOptions) -> Figure:
    count = len(surfaces)
    figure = new_figure(4.2 * count + 0.6, 3.9)
    axes = figure.subplots(1, count, squeeze=False, sharey=True)[0]
    losses = finite_values(*(s.values[m] for s in surfaces for m in s.metrics("loss")))
    options = resolve_log(options, finite_values(*(s.grid(s.default_metric()) for s in surfaces
                                                   if s.metrics("loss"))))
    suptitle, panel_titles = shared_titles(surfaces)
    for ax, surface, title in zip(axes, surfaces, panel_titles, strict=True):
        draw_1d(ax, surface, options)
        notes = result_notes(surface, surface.default_metric())
        ax.set_title("\n".join([title, *([" · ".join(notes)] if notes else [])]),
                     fontsize="medium")
    if options.vmin is None and options.vmax is None:
        if losses.size and not options.log:
            axes[0].set_ylim(0, float(losses.max()) * 1.05)
    figure.suptitle(suptitle)
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
            options = resolve_log(options, surface.grid(_metric(surface, options, None)))
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
        options = dataclasses.replace(options, log=bool(options.log))
        return [html.write_surface_html(surface, "surface3d", options, out)]
    return [save_figure(figure_surface3d(surface, options), out, options.fmt)]


def plot_compare(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot compare``: several surfaces side by side with shared levels."""
    surfaces = [load_surface(p) for p in paths]
    return [save_figure(figure_compare(surfaces, options), out, options.fmt)]
