"""``llv plot``: figures from stored results, one module per figure family.

:func:`make_plot` looks the kind up in :data:`KINDS` (kind -> renderer) and writes next to the
first input unless ``out`` is given: ``<stem>_<kind>.<fmt>``, e.g. ``surface_contour.png``.
Kinds that show one input per figure (``contour``, ``1d``, ...) make one file per input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llv.console import LlvError
from llv.plot import hessian, html, sharpness, surface, trajectory, vtk, weights
from llv.plot._figure import DPI, PlotOptions, auto_log
from llv.plot.axes import draw, options_tag
from llv.plot.html import HTML_KINDS
from llv.plot.io import Surface, load_hessian_point, load_projection, load_surface

__all__ = [
    "DPI",
    "auto_log",
    "draw",
    "KINDS",
    "PlotOptions",
    "Surface",
    "load_hessian_point",
    "load_projection",
    "load_surface",
    "make_plot",
    "options_tag",
    "output_path",
]

FORMATS = ("png", "pdf", "svg", "html")

Renderer = Callable[[list[Path], Path, PlotOptions], list[Path]]


@dataclass(frozen=True)
class Kind:
    """How one kind is drawn: its renderer, and whether all inputs share one figure."""

    render: Renderer
    all_inputs: bool = False
    extension: str | None = None  # a fixed file type (vtk -> vtp), whatever --format says


KINDS: dict[str, Kind] = {
    "1d": Kind(surface.plot_1d),
    "contour": Kind(surface.plot_map("contour")),
    "contourf": Kind(surface.plot_map("contourf")),
    "heatmap": Kind(surface.plot_map("heatmap")),
    "surface3d": Kind(surface.plot_surface3d),
    "vtk": Kind(vtk.plot_vtk, extension="vtp"),
    "trajectory": Kind(trajectory.plot_trajectory, all_inputs=True),
    "hessian": Kind(hessian.plot_hessian),
    "spectrum": Kind(hessian.plot_spectrum),
    "weights": Kind(weights.plot_weights, all_inputs=True),
    "compare": Kind(surface.plot_compare, all_inputs=True),
    "sharpness": Kind(sharpness.plot_sharpness, all_inputs=True),
}


def output_path(kind: str, first_input: Path, fmt: str, tag: str = "") -> Path:
    """The default output: ``<stem>_<kind>[_<tag>].<ext>`` beside the input (beside a run
    folder); ``tag`` names the options that change the picture (:func:`options_tag`).

    >>> output_path("contour", Path("runs/a/surface.h5"), "png").as_posix()
    'runs/a/surface_contour.png'
    >>> output_path("contour", Path("runs/a/surface.h5"), "png", "vmax10").as_posix()
    'runs/a/surface_contour_vmax10.png'
    """
    extension = KINDS[kind].extension or fmt
    stem = first_input.resolve().name if first_input.is_dir() else first_input.stem
    return first_input.parent / f"{stem}_{kind}{'_' + tag if tag else ''}.{extension}"


def _resolve_format(fmt: str, out: Path | None) -> str:
    if fmt not in FORMATS:
        raise LlvError(f"unknown format '{fmt}'; valid: {', '.join(FORMATS)}")
    suffix = out.suffix.lstrip(".").lower() if out is not None else ""
    if suffix in FORMATS and suffix != fmt:
        if fmt != "png":  # png is the default: an --out suffix overrides it
            raise LlvError(f"--out {out} does not match --format {fmt}")
        return suffix
    return fmt


def _check_suffix(kind: str, fmt: str, out: Path | None) -> None:
    """Refuse an ``--out`` whose suffix is not the type of file written (vtk: .vtp, else --format)."""
    extension = KINDS[kind].extension or fmt
    if out is not None and out.suffix.lower() != f".{extension}":
        raise LlvError(f"--out {out}: 'llv plot {kind}' writes a .{extension} file here; "
                       f"give --out a name ending in .{extension}")


def make_plot(
    kind: str,
    files,
    vmin: float | None = None,
    vmax: float | None = None,
    vlevel: float | None = None,
    log: bool | None = None,
    out: str | Path | None = None,
    fmt: str = "png",
    smooth: bool = False,
    metric: str | None = None,
    plotly: str = "cdn",
) -> list[Path]:
    """Draw ``kind`` from ``files`` and return the files written.

    Args:
        kind: one of :data:`KINDS`.
        files: result files (train run folders for ``weights``).
        vmin, vmax, vlevel: lowest and highest contour level/colour, and the level spacing.
        log: logarithmic loss scale; None (the default) decides by :func:`auto_log`.
        out: output file (default: next to the first input).
        fmt: png, pdf, svg, or html (2-D surface kinds only).
        smooth: ``surface3d``, ``contour``, ``contourf``, ``hessian``, 2-D ``compare``,
            ``trajectory``: draw the grid upsampled by bicubic interpolation (the title says so).
        metric: the stored quantity drawn (e.g. ``test_loss``); default the training loss.
        plotly: html only: ``cdn`` (small page, needs the internet) or ``inline`` (offline).

    Raises:
        LlvError: unknown kind or format, missing or unreadable file, data of the wrong shape.
    """
    if kind not in KINDS:
        raise LlvError(f"unknown plot kind '{kind}'; valid: {', '.join(KINDS)}")
    paths = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not paths:
        raise LlvError(f"'llv plot {kind}' needs at least one input file")
    out_path = Path(out) if out is not None else None
    fmt = _resolve_format(fmt, out_path)
    _check_suffix(kind, fmt, out_path)
    if fmt == "html" and kind not in HTML_KINDS:
        raise LlvError(f"--format html is available for {', '.join(HTML_KINDS)}, not '{kind}'")
    options = PlotOptions(vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, fmt=fmt, smooth=smooth,
                          metric=metric)
    spec = KINDS[kind]
    if fmt == "html":
        spec = dataclasses.replace(spec, render=html.with_plotly(html.RENDERERS.get(kind, spec.render), plotly))
    if spec.all_inputs:
        tag = options_tag(kind, paths, options) if out_path is None else ""
        return spec.render(paths, out_path or output_path(kind, paths[0], fmt, tag), options)
    if out_path is not None and len(paths) > 1:
        raise LlvError(
            f"--out names one file, but '{kind}' makes one figure per input "
            f"({len(paths)} given); leave --out out"
        )
    written = []
    for path in paths:
        tag = options_tag(kind, [path], options) if out_path is None else ""
        written += spec.render([path], out_path or output_path(kind, path, fmt, tag), options)
    return written
