"""Interactive HTML figures (plotly, the optional ``html`` extra): 2-D maps, 3-D surfaces, 1-D
curves and side-by-side comparisons.

The data go into the page as plain JSON numbers (not base64), so the file can be searched and
reused. Where plotly.js comes from is ``--plotly``: ``cdn`` (the default) links it from
cdn.plot.ly, a page of a few kB that needs the internet to draw; ``inline`` embeds it (about
4.8 MB per file), a page that works offline. Pages size themselves to the browser window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llv.console import LlvError, log
from llv.fsio import atomic_write
from llv.plot._figure import PlotOptions, contour_levels, metric_label, resolve_log, value_range
from llv.plot.io import Surface, load_surface

HTML_KINDS = ("1d", "contour", "contourf", "heatmap", "surface3d", "compare")
PLOTLY_SOURCES = ("cdn", "inline")

_source = {"plotly": "cdn"}


@contextlib.contextmanager
def plotly_source(source: str) -> Iterator[None]:
    """Pages written inside take plotly.js from ``source``: ``cdn`` or ``inline`` (offline)."""
    if source not in PLOTLY_SOURCES:
        raise LlvError(f"--plotly takes {' or '.join(PLOTLY_SOURCES)}, not '{source}' "
                       "(inline: the page works offline)")
    before = _source["plotly"]
    _source["plotly"] = source
    try:
        yield
    finally:
        _source["plotly"] = before


def _plotly():
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise LlvError("--format html needs plotly: pip install 'llv[html]'") from None
    return go


def _json_grid(values: np.ndarray) -> list:
    """Rows of plain floats with None where the value is missing (JSON null)."""
    return [[float(v) if np.isfinite(v) else None for v in row] for row in values]


def _json_line(values: np.ndarray) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]


def _color_values(values: np.ndarray, options: PlotOptions) -> tuple[np.ndarray, str | None]:
    """Values clipped to ``--vmin/--vmax``; log10 of them with ``--log`` (plotly has no log colour
    scale). Returns the values and the prefix of their label."""
    values = np.array(values, dtype=float)
    if options.vmax is not None:
        values[values > options.vmax] = options.vmax
    if options.vmin is not None:
        values[values < options.vmin] = options.vmin
    if options.log:
        values[values <= 0] = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(values), "log10"
    return values, None


def surface_html_figure(
    surface: Surface, kind: str, options: PlotOptions, metric: str | None = None
):
    """A plotly figure of one 2-D surface as ``contour``, ``contourf``, ``heatmap`` or ``surface3d``.

    With ``--log`` the colour scale shows log10 of the value (plotly has no log colour scale).
    """
    go = _plotly()
    if kind not in ("contour", "contourf", "heatmap", "surface3d"):
        raise LlvError(f"--format html draws one 2-D surface as contour, contourf, heatmap or "
                       f"surface3d, not '{kind}'")
    metric = metric or getattr(options, "metric", None) or surface.default_metric()
    raw = surface.grid(metric)
    values, prefix = _color_values(raw, options)
    label = metric_label(metric)
    label = f"{prefix} {label}" if prefix else label
    z = _json_grid(values)
    x, y = surface.x.tolist(), surface.y.tolist()
    colorbar = {"title": {"text": label}}
    if kind == "surface3d":
        trace = go.Surface(x=x, y=y, z=z, colorscale="RdBu_r", colorbar=colorbar)
    elif kind == "heatmap":
        trace = go.Heatmap(x=x, y=y, z=z, colorscale="Viridis", colorbar=colorbar)
    else:
        trace = go.Contour(x=x, y=y, z=z, colorscale="Viridis", colorbar=colorbar,
                           contours=_contours(raw, kind, options))
    figure = go.Figure(trace)
    figure.update_layout(title=surface.describe(), autosize=True)
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


def _x_label(surface: Surface) -> str:
    return "α (interpolation θA → θB)" if surface.is_interpolation else "α"


def figure_1d_html(surfaces: list[Surface], options: PlotOptions, names: list[str] | None = None):
    """Loss (left axis) and accuracy (right axis) of 1-D surfaces against α, every split; one
    legend entry per curve, so clicking hides it."""
    go = _plotly()
    figure = go.Figure()
    for index, surface in enumerate(surfaces):
        if surface.is_2d:
            raise LlvError(f"'1d' needs a 1-D surface, but {surface.path} is 2-D; use contour, "
                           "contourf, heatmap or surface3d")
        prefix = f"{names[index]}: " if names else ""
        x = _json_line(surface.x)
        for metric in surface.metrics("loss"):
            values, _ = _color_values(surface.grid(metric), options)
            figure.add_trace(go.Scatter(x=x, y=_json_line(values), mode="lines",
                                        name=prefix + metric_label(metric)))
        for metric in surface.metrics("acc"):
            figure.add_trace(go.Scatter(x=x, y=_json_line(surface.grid(metric)), mode="lines",
                                        line={"dash": "dash"}, yaxis="y2",
                                        name=prefix + metric_label(metric)))
    loss_title = "log10 loss" if options.log else "loss"
    figure.update_layout(
        title=surfaces[0].describe() if len(surfaces) == 1 else "comparison",
        autosize=True,
        xaxis={"title": {"text": _x_label(surfaces[0])}},
        yaxis={"title": {"text": loss_title}},
        yaxis2={"title": {"text": "accuracy (%)"}, "overlaying": "y", "side": "right"},
        legend={"orientation": "h"},
    )
    return figure


def figure_compare_html(surfaces: list[Surface], options: PlotOptions):
    """2-D surfaces side by side with one shared colour scale (the same levels in every panel),
    or the curves of 1-D surfaces in one plot."""
    go = _plotly()
    names = [_panel_name(s) for s in surfaces]
    if all(not s.is_2d for s in surfaces):
        return figure_1d_html(surfaces, options, names)
    if not all(s.is_2d for s in surfaces):
        raise LlvError("'compare' needs surfaces of one kind: all 1-D or all 2-D")
    from plotly.subplots import make_subplots

    metric = getattr(options, "metric", None)
    grids = [_color_values(s.grid(metric or s.default_metric()), options)[0] for s in surfaces]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    if not finite.size:
        raise LlvError("'compare': no finite values to draw")
    low, high = float(finite.min()), float(finite.max())
    figure = make_subplots(rows=1, cols=len(surfaces), subplot_titles=names, shared_yaxes=True)
    label = metric_label(metric or surfaces[0].default_metric())
    for column, (surface, values) in enumerate(zip(surfaces, grids), start=1):
        figure.add_trace(go.Contour(x=surface.x.tolist(), y=surface.y.tolist(), z=_json_grid(values),
                                    coloraxis="coloraxis", contours={"coloring": "fill"},
                                    name=names[column - 1]), row=1, col=column)
        figure.update_xaxes(title_text="α", row=1, col=column)
    figure.update_yaxes(title_text="β", row=1, col=1)
    figure.update_layout(
        autosize=True,
        coloraxis={"colorscale": "Viridis", "cmin": low, "cmax": high,
                   "colorbar": {"title": {"text": ("log10 " if options.log else "") + label}}},
    )
    return figure


def _panel_name(surface: Surface) -> str:
    """A run's name: its folder (``surface.h5`` is in every run)."""
    return surface.path.parent.name or surface.path.name


def write_figure(figure, out: Path) -> Path:
    """Write ``figure`` as one page that fills the browser window; plotly.js as ``--plotly`` says."""
    inline = _source["plotly"] == "inline"
    page = figure.to_html(include_plotlyjs=True if inline else "cdn", full_html=True,
                          config={"responsive": True}, default_width="100%", default_height="95vh")
    atomic_write(out, lambda handle: handle.write(page), "HTML page", text=True)
    log.info("wrote %s", out)
    return out


def write_surface_html(surface: Surface, kind: str, options: PlotOptions, out: Path) -> Path:
    """Write one HTML page of a 2-D surface and return its path."""
    return write_figure(surface_html_figure(surface, kind, options), out)


def plot_1d_html(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot 1d --format html``."""
    (path,) = paths
    surface = load_surface(path)
    options = resolve_log(options, surface.grid(surface.default_metric()))  # the rules of the PNG
    return [write_figure(figure_1d_html([surface], options), out)]


def plot_compare_html(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot compare --format html``."""
    surfaces = [load_surface(p) for p in paths]
    values = np.concatenate([s.grid(s.default_metric()).ravel() for s in surfaces])
    options = resolve_log(options, values)  # one scale for all panels, as the PNG decides it
    return [write_figure(figure_compare_html(surfaces, options), out)]


def with_plotly(render, source: str):
    """``render`` writing its pages with plotly.js from ``source`` (``cdn`` or ``inline``)."""
    with plotly_source(source):  # checks the name before anything is drawn
        pass

    def rendered(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
        with plotly_source(source):
            return render(paths, out, options)

    return rendered


# Kinds whose HTML this module draws by itself (the others go through llv.plot.surface).
RENDERERS = {"1d": plot_1d_html, "compare": plot_compare_html}
