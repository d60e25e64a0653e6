"""Interactive, self-contained HTML figures of 2-D surfaces (plotly, the optional ``html`` extra).

The data go into the page as plain JSON numbers (not base64), so the file can be searched and
reused; plotly.js is embedded, so the page works offline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llv.console import LlvError, log
from llv.plot._figure import PlotOptions, contour_levels, metric_label, value_range
from llv.plot.io import Surface

HTML_KINDS = ("contour", "contourf", "heatmap", "surface3d")


def _plotly():
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise LlvError("--format html needs plotly: pip install 'llv[html]'") from None
    return go


def _json_grid(values: np.ndarray) -> list:
    """Rows of plain floats with None where the value is missing (JSON null)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in values]


def surface_html_figure(
    surface: Surface, kind: str, options: PlotOptions, metric: str | None = None
):
    """A plotly figure of one 2-D surface as ``contour``, ``contourf``, ``heatmap`` or ``surface3d``.

    With ``--log`` the colour scale shows log10 of the value (plotly has no log colour scale).
    """
    go = _plotly()
    if kind not in HTML_KINDS:
        raise LlvError(f"--format html is available for {', '.join(HTML_KINDS)}, not '{kind}'")
    metric = metric or surface.default_metric()
    values = np.array(surface.grid(metric), dtype=float)
    label = metric_label(metric)
    if options.vmax is not None:
        values[values > options.vmax] = options.vmax
    if options.vmin is not None:
        values[values < options.vmin] = options.vmin
    if options.log:
        values[values <= 0] = np.nan
        values = np.log10(values)
        label = f"log10 {label}"
    z = _json_grid(values)
    x, y = surface.x.tolist(), surface.y.tolist()
    colorbar = {"title": {"text": label}}
    if kind == "surface3d":
        trace = go.Surface(x=x, y=y, z=z, colorscale="RdBu_r", colorbar=colorbar)
    elif kind == "heatmap":
        trace = go.Heatmap(x=x, y=y, z=z, colorscale="Viridis", colorbar=colorbar)
    else:
        trace = go.Contour(
            x=x,
            y=y,
            z=z,
            colorscale="Viridis",
            colorbar=colorbar,
            contours=_contours(surface.grid(metric), kind, options),
        )
    figure = go.Figure(trace)
    figure.update_layout(title=surface.describe(), width=800, height=650)
    if kind == "surface3d":
        figure.update_layout(scene={"xaxis_title": "α", "yaxis_title": "β", "zaxis_title": label})
    else:
        figure.update_layout(xaxis_title="α", yaxis_title="β")
    return figure


def _contours(values: np.ndarray, kind: str, options: PlotOptions) -> dict:
    contours = {
        "coloring": "lines" if kind == "contour" else "fill",
        "showlabels": kind == "contour",
    }
    if options.vlevel is None and options.vmin is None and options.vmax is None:
        return contours
    if options.log:
        low, high = np.log10(value_range(values, options))
        size = options.vlevel or (high - low) / 20
    else:
        levels = contour_levels(values, options)
        low, high, size = levels[0], levels[-1], (levels[1] - levels[0])
    return {**contours, "start": float(low), "end": float(high), "size": float(size)}


def write_surface_html(surface: Surface, kind: str, options: PlotOptions, out: Path) -> Path:
    """Write one self-contained HTML page (plotly.js embedded) and return its path."""
    figure = surface_html_figure(surface, kind, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(out, include_plotlyjs=True, full_html=True)
    log.info("wrote %s", out)
    return out
