"""One figure kind of an in-memory result, drawn onto matplotlib Axes: the API's plots.

:func:`draw` is what ``Result.plot(kind=..., ax=...)`` calls; ``llv plot`` and the end-of-run
figures draw through the same ``draw_*`` functions, so all three follow one set of rules
(:mod:`llv.plot._figure`). :func:`options_tag` names the options that change a picture, for the
default file name of ``llv plot``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llv.console import LlvError
from llv.plot import hessian
from llv.plot import surface as maps
from llv.plot._figure import PlotOptions, finite_values, new_figure, resolve_log
from llv.plot.io import Surface, load_projection, load_surface

AUTO_LOG_KINDS = ("1d", "contour", "contourf", "heatmap", "trajectory", "compare")
"""Kinds whose loss scale :func:`~llv.plot._figure.auto_log` decides when ``log`` is None."""

DRAW_KINDS = ("1d", "contour", "contourf", "heatmap", "surface3d", "hessian", "compare")

_SIZES = {"1d": (6.4, 4.8), "surface3d": (6.4, 5.2)}


def draw(
    kind: str,
    surface: Surface | Sequence[Surface],
    ax=None,
    *,
    metric: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    log: bool | None = None,
    smooth: bool = False,
    share: bool = True,
):
    """Draw ``kind`` of ``surface`` onto ``ax`` (a new figure when None) and return the Axes.

    Args:
        kind: one of :data:`DRAW_KINDS`.
        surface: a :class:`~llv.plot.io.Surface` (as :func:`~llv.plot.io.load_surface` returns);
            for ``compare``, a sequence of them.
        ax: the Axes to draw on (3-D Axes for ``surface3d``; for ``compare`` one Axes per
            surface). None makes a figure like ``llv plot``'s.
        metric: the stored quantity of 2-D kinds (default: the training loss).
        vmin, vmax, vlevel: lowest and highest level/colour and the level spacing.
        log: logarithmic loss scale; None decides by :func:`~llv.plot._figure.auto_log`.
        smooth: ``surface3d``, ``contour``, ``contourf``, ``hessian``: draw the grid upsampled
            by bicubic interpolation (the title says so).
        share: ``compare`` only: the same levels and colours in every panel.

    Returns:
        The Axes drawn on (for ``1d`` the loss axes; for ``compare`` the list of panels).

    Raises:
        LlvError: unknown kind, or data of the wrong shape for it.

    >>> import numpy as np
    >>> s = Surface(path=None, x=np.linspace(-1, 1, 5), y=np.linspace(-1, 1, 5),
    ...             values={"train_loss": np.add.outer(np.linspace(-1, 1, 5)**2, 0.1 + np.linspace(-1, 1, 5)**2)})
    >>> draw("contour", s).get_xlabel()
    'α'
    """
    if kind not in DRAW_KINDS:
        raise LlvError(f"unknown figure kind '{kind}'; valid: {', '.join(DRAW_KINDS)}")
    options = PlotOptions(vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, metric=metric,
                          smooth=smooth)
    if kind == "compare":
        surfaces = list(surface) if isinstance(surface, (list, tuple)) else [surface]
        if ax is None:
            figure = new_figure(3.6 * len(surfaces) + 1.2, 4.1)
            ax = figure.subplots(1, len(surfaces), squeeze=False)[0]
        return maps.draw_compare(ax, surfaces, options, share=share)
    if isinstance(surface, (list, tuple)):
        raise LlvError(f"'{kind}' draws one result; use kind='compare' for several")
    if ax is None:
        figure = new_figure(*_SIZES.get(kind, (6.0, 4.8)))
        ax = figure.add_subplot(projection="3d" if kind == "surface3d" else None)
    if kind == "1d":
        return maps.draw_1d_panel(ax, surface, options)
    if kind == "surface3d":
        return maps.draw_surface3d(ax, surface, options)
    if kind == "hessian":
        return hessian.draw_hessian(ax, surface, options)
    return maps.draw_map_panel(ax, surface, kind, options)


def plotted_values(kind: str, paths: list[Path], options: PlotOptions) -> np.ndarray:
    """The values whose span decides the automatic log scale of ``kind`` drawn from ``paths``:
    the metric drawn (the first loss, training before test, by default), over all panels of
    ``compare``, of the surface under a trajectory (none without one)."""
    if kind == "trajectory":
        projection = load_projection(paths[0])
        source = paths[1] if len(paths) > 1 else projection.surface_file
        if source is None or not Path(source).exists():
            return np.zeros(0)
        paths = [Path(source)]
    arrays = []
    for path in paths if kind in ("compare", "trajectory") else paths[:1]:
        result = load_surface(path)
        if not result.is_2d:  # 1d and compare of 1-D results: the first loss
            if result.metrics("loss"):
                arrays.append(result.grid(result.default_metric()))
        else:
            arrays.append(result.grid(options.metric or result.default_metric()))
    return finite_values(*arrays) if arrays else np.zeros(0)


def options_tag(kind: str, paths: list[Path], options: PlotOptions) -> str:
    """What the default file name adds for options that change the picture, '' for none.

    A figure drawn with the defaults (as at the end of a run) is ``surface_contour.png``; one
    with ``--vmax 10`` is ``surface_contour_vmax10.png``, so ``llv plot`` never replaces a
    figure of other options. ``--log``/``--linear`` count only where they differ from the
    automatic choice (the picture is the same otherwise).

    >>> options_tag("surface3d", [], PlotOptions(vmax=10.0, vlevel=0.5, smooth=True))
    'vmax10_vlevel0.5_smooth'
    """
    parts = []
    if options.metric:
        parts.append(options.metric)
    if options.log is not None:
        automatic = False
        if kind in AUTO_LOG_KINDS:
            undecided = dataclasses.replace(options, log=None)
            automatic = resolve_log(undecided, plotted_values(kind, paths, options)).log
        if options.log != automatic:
            parts.append("log" if options.log else "linear")
    for name in ("vmin", "vmax", "vlevel"):
        value = getattr(options, name)
        if value is not None:
            parts.append(f"{name}{value:g}")
    if options.smooth:
        parts.append("smooth")
    return "_".join(parts)
