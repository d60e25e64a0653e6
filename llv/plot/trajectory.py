"""The optimizer's path projected on its top-2 principal directions, over the loss contours.

A surface drawn under the path must be computed along the path's own directions: its
``direction_sha256`` attribute must equal the SHA-256 of the projection's directions (the
``sha256`` attribute of the projection's ``dir_file``, found beside the projection, or a
``direction_sha256`` attribute of the projection itself). A surface along other directions
(random ones, another run's PCA) is refused, since its α and β are not the path's coordinates.
Where a digest is not available on one side (files of older versions or of the reference
implementation), the check falls back to whether both name the same direction file, and
otherwise draws with a warning (none for the projection's own ``surface_file``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from llv.console import LlvError, log
from llv.plot._figure import (
    PlotOptions,
    add_colorbar,
    contour_levels,
    label_contours,
    new_figure,
    resolve_log,
    save_figure,
    surface_title,
)
from llv.plot.io import Projection, Surface, load_projection, load_surface
from llv.plot.surface import colour_label, draw_map, mark_gaps, require_2d, smoothed, with_note


def axis_label(ordinal: str, ratio: float | None) -> str:
    """``1st PC: 53.20 %`` from an explained-variance ratio (a fraction).

    >>> axis_label("1st", 0.532)
    '1st PC: 53.20 %'
    """
    return f"{ordinal} PC" if ratio is None else f"{ordinal} PC: {100 * ratio:.2f} %"


def figure_trajectory(
    projection: Projection, surface: Surface | None, options: PlotOptions
) -> Figure:
    """The path (line and dots) over the contours of ``surface``; red dots at lr drops."""
    figure = new_figure(6.0, 4.8)
    ax = figure.add_subplot()
    mappable, note = None, None
    if surface is not None:
        require_2d(surface, "trajectory")
        check_same_directions(projection, surface)
        metric = options.metric or surface.default_metric()
        values = surface.grid(metric)
        options = resolve_log(options, values)
        levels = contour_levels(values, options)
        grid, drawn, note = smoothed(surface, values, options)  # with ``smooth``: bicubic, noted
        mappable = draw_map(ax, grid, drawn, "contour", levels, options)
        mark_gaps(ax, surface, values)
        add_colorbar(figure, mappable, ax=ax, label=colour_label(metric, options), levels=levels)
    ax.plot(
        projection.x, projection.y, color="k", linewidth=1.0, marker=".", markersize=4, label="path"
    )
    ax.plot(
        projection.x[:1],
        projection.y[:1],
        "o",
        color="tab:green",
        markersize=6,
        label=f"epoch {projection.epochs[0]}" if projection.epochs.size else "start",
    )
    ax.plot(projection.x[-1:], projection.y[-1:], "*", color="k", markersize=10, label="final")
    drops = np.isin(projection.epochs, projection.lr_drop_epochs)
    if drops.any():
        ax.plot(
            projection.x[drops],
            projection.y[drops],
            "o",
            color="red",
            markersize=5,
            linestyle="none",
            label="lr drop",
        )
    ratio = projection.explained_variance_ratio
    first = float(ratio[0]) if ratio is not None and ratio.size > 0 else None
    second = float(ratio[1]) if ratio is not None and ratio.size > 1 else None
    if surface is not None:
        _show_whole_path(ax, surface, projection)
    ax.set_xlabel(axis_label("1st", first))
    ax.set_ylabel(axis_label("2nd", second))
    legend = ax.legend(loc="best", fontsize="small")
    if surface is not None:
        title = surface_title(surface, metric, omit=("norm",))
    else:
        title = " · ".join(str(projection.attrs[k]) for k in ("model", "dataset")
                           if projection.attrs.get(k)) or projection.path.parent.name
    ax.set_title(with_note(f"optimization path · {title}", note), fontsize="medium")
    if mappable is not None:
        label_contours(ax, mappable, avoid=[_densified(projection.x, projection.y), legend])
    return figure


def _show_whole_path(ax, surface: Surface, projection: Projection, pad: float = 0.03) -> None:
    """Axis limits that hold the surface's box and every point of the path (the path may start
    outside the box: a surface computed over a smaller box, or given by hand)."""
    for set_limits, box, path in ((ax.set_xlim, surface.x, projection.x),
                                  (ax.set_ylim, surface.y, projection.y)):
        box = np.asarray(box, dtype=float)
        path = np.asarray(path, dtype=float)
        path = path[np.isfinite(path)]
        low, high = float(np.nanmin(box)), float(np.nanmax(box))
        if path.size:
            margin = pad * (max(high, path.max()) - min(low, path.min()))
            if path.min() < low:
                low = float(path.min()) - margin
            if path.max() > high:
                high = float(path.max()) + margin
        set_limits(low, high)


def directions_digest(path: Path | None, attrs: dict) -> tuple[str | None, Path | None]:
    """``(SHA-256, direction file)`` of the directions a result was computed along: its
    ``direction_sha256`` attribute, else the ``sha256`` attribute of its ``dir_file`` (computed
    from the file's tensors for a direction file without one); either may be None."""
    from llv.storage.directions import dir_file_candidates, recorded_digest

    found = next(iter(dir_file_candidates(path, attrs)), None)
    recorded = attrs.get("direction_sha256")
    if recorded:
        return str(recorded), found
    if found is None:
        return None, None
    try:
        digest = recorded_digest(found)
    except (LlvError, OSError):
        return None, found
    if digest is None:  # a reference direction file: hash its tensors (reads torch, rarely)
        from llv.direction import file_digest

        return file_digest(found), found
    return digest, found


def check_same_directions(projection: Projection, surface: Surface) -> None:
    """Refuse a surface computed along other directions than the path's (see the module doc).

    Raises:
        LlvError: both digests are known and differ.
    """
    path_digest, path_file = directions_digest(projection.path, projection.attrs)
    surface_digest, surface_file = directions_digest(surface.path, surface.attrs)
    if path_digest and surface_digest:
        if path_digest != surface_digest:
            where = f" ({path_file})" if path_file is not None else ""
            raise LlvError(
                f"{surface.path} was computed along other directions than the path of "
                f"{projection.path}: its direction_sha256 {surface_digest[:12]}… differs from the "
                f"projection's directions{where} {path_digest[:12]}…; draw the trajectory's own "
                "surface, or compute one with dir_file= set to the projection's directions")
        return
    if path_file is not None and surface_file is not None and _same_file(path_file, surface_file):
        return
    own = (projection.surface_file is not None and surface.path is not None
           and _same_file(projection.surface_file, surface.path))
    if not own:
        log.warning(f"cannot check that {surface.path} was computed along the directions of the "
                    f"path in {projection.path} (no direction digest recorded); drawing it anyway")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _densified(x: np.ndarray, y: np.ndarray, per_step: int = 8) -> np.ndarray:
    """Points along a polyline, ``per_step`` per segment: what a label must not cover."""
    t = np.linspace(0, len(x) - 1, max(1, (len(x) - 1) * per_step + 1))
    index = np.arange(len(x))
    return np.column_stack([np.interp(t, index, x), np.interp(t, index, y)])


def plot_trajectory(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot trajectory PROJECTION [SURFACE]``: the surface defaults to the projection's own."""
    if len(paths) > 2:
        raise LlvError("'trajectory' takes a projection file and at most one surface file")
    projection = load_projection(paths[0])
    surface = None
    if len(paths) == 2:
        surface = load_surface(paths[1])
    elif projection.surface_file is not None and projection.surface_file.exists():
        surface = load_surface(projection.surface_file)
    elif projection.surface_file is not None:
        log.warning("surface file %s not found; drawing the path alone", projection.surface_file)
    return [save_figure(figure_trajectory(projection, surface, options), out, options.fmt)]
