"""Curvature figures: the |λmin/λmax| map over a grid (paper §6) and the eigenvalue density.

The ratio tells how non-convex the landscape is at each point: near 0 the Hessian has (almost)
no negative curvature relative to its positive curvature; large values mean strong
non-convexity. The density plot follows PyHessian's (Yao et al., 2020) figure: the smoothed
stochastic-Lanczos-quadrature estimate on a log axis.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from llv.console import LlvError
from llv.plot._figure import (
    PlotOptions,
    add_colorbar,
    check_log_limits,
    contour_levels,
    label_contours,
    new_figure,
    save_figure,
    surface_title,
    value_range,
)
from llv.plot.io import HessianPoint, Surface, load_hessian_point, load_surface
from llv.plot.surface import draw_map, mark_gaps, smoothed, with_note

RATIO_LABEL = "|λmin / λmax|"
_LOG_SCALE = " (log scale)"


def map_hvp_note(surface: Surface) -> str:
    """How many Hessian-vector products a grid map took: the total over the points computed
    and the mean per point, from its ``num_hvp`` dataset (one count per point and member).

    >>> from types import SimpleNamespace
    >>> map_hvp_note(SimpleNamespace(values={"num_hvp": np.array([[40.0, 60.0], [50.0, np.nan]])}))
    '150 Hessian-vector products (50 per point)'
    """
    counts = surface.values.get("num_hvp")
    if counts is None:
        return "Hessian-vector products not recorded"
    counts = np.asarray(counts, dtype=float)
    counts = counts[np.isfinite(counts)]
    if counts.size == 0:
        return "no Hessian-vector products recorded"
    total = int(round(counts.sum()))
    return f"{total:,} Hessian-vector products ({counts.mean():.3g} per point)"


_HVP_PARTS = (("num_hvp_extremes", "λmax/λmin"), ("num_hvp_top_k", "top-k"),
              ("num_hvp_trace", "trace"), ("num_hvp_density", "density"))


def point_hvp_note(attrs: dict) -> str:
    """How many Hessian-vector products a point file's results took: the total and each part,
    from its ``num_hvp_<part>`` attributes (top-k from the same Lanczos run as λmax/λmin,
    ``shared_krylov``, is counted once).

    >>> point_hvp_note({"num_hvp_extremes": 60, "num_hvp_top_k": 60, "shared_krylov": True,
    ...                 "num_hvp_trace": 200, "num_hvp_density": 900})
    '1,160 Hessian-vector products (λmax/λmin and top-k 60, trace 200, density 900)'
    """
    shared = bool(attrs.get("shared_krylov")) and attrs.get("num_hvp_extremes") is not None
    parts, total = [], 0
    known = {key for key, _ in _HVP_PARTS}
    named = list(_HVP_PARTS) + [(k, k.removeprefix("num_hvp_").replace("_", " "))
                                for k in sorted(attrs) if k.startswith("num_hvp_") and k not in known]
    for key, name in named:
        value = attrs.get(key)
        if value is None:
            continue
        try:
            count = int(round(float(value)))
        except (TypeError, ValueError):
            continue
        if key == "num_hvp_top_k" and shared:
            continue  # the same products as λmax/λmin
        if key == "num_hvp_extremes" and shared and attrs.get("num_hvp_top_k") is not None:
            name = "λmax/λmin and top-k"
        parts.append(f"{name} {count:,}")
        total += count
    if not parts:
        return "Hessian-vector products not recorded"
    return f"{total:,} Hessian-vector products ({', '.join(parts)})"


def eigen_ratio(surface: Surface) -> np.ndarray:
    """|λmin/λmax| on the grid (NaN where either is missing or λmax is 0)."""
    if "max_eig" not in surface.values or "min_eig" not in surface.values:
        raise LlvError(
            f"{surface.path} has no max_eig/min_eig: not a Hessian grid "
            "(make one with 'llv hessian ... grid=21x21')"
        )
    largest, smallest = surface.grid("max_eig"), surface.grid("min_eig")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(smallest / largest)
    ratio[~np.isfinite(ratio)] = np.nan
    return ratio


def draw_hessian(ax, surface: Surface, options: PlotOptions):
    """The |λmin/λmax| map on ``ax`` (heatmap with labelled contour lines), or a curve along α
    for 1-D grids. The ratio is never put on a log scale automatically."""
    ratio = eigen_ratio(surface)
    options = dataclasses.replace(options, log=bool(options.log))
    if options.vmin is None and not options.log:
        options = dataclasses.replace(options, vmin=0.0)
    title = with_note(surface_title(surface, "max_eig"), map_hvp_note(surface))
    if not surface.is_2d:
        check_log_limits(options)
        ax.plot(surface.x, ratio, color="tab:purple", marker=".", label=RATIO_LABEL)
        if options.log:
            ax.set_yscale("log")
        ax.set_ylim(options.vmin, options.vmax)
        ax.set_xlabel("α")
        ax.set_ylabel(RATIO_LABEL + (_LOG_SCALE if options.log else ""))
        ax.set_title(f"{RATIO_LABEL} · {title}", fontsize="medium")
        return ax
    low, high = value_range(ratio, options)
    grid, drawn, note = smoothed(surface, ratio, options)  # with ``smooth``: map and lines alike
    heat = draw_map(ax, grid, drawn, "heatmap", np.array([low, high]), options)
    levels = contour_levels(ratio, options, nbins=6)
    lines = ax.contour(
        grid.x,
        grid.y,
        np.ma.masked_invalid(drawn),
        levels=levels,
        colors="0.15",
        linewidths=0.6,
        alpha=0.8,
    )
    gaps = mark_gaps(ax, surface, ratio)
    add_colorbar(ax.figure, heat, ax=ax, label=RATIO_LABEL + (_LOG_SCALE if options.log else ""),
                 levels=levels)
    ax.set_title(with_note(f"{RATIO_LABEL} · {title}", note), fontsize="medium")
    legend = ax.legend(handles=gaps, loc="lower left", fontsize="x-small") if gaps else None
    labels = label_contours(ax, lines, avoid=[legend])
    for text in labels:  # dark text on a light box reads on every colour of the map
        text.set_bbox({"boxstyle": "round,pad=0.1", "facecolor": "white", "alpha": 0.7,
                       "linewidth": 0})
    return ax


def figure_hessian(surface: Surface, options: PlotOptions) -> Figure:
    """The |λmin/λmax| map (heatmap with contour lines), or a curve along α for 1-D grids."""
    figure = new_figure(6.0, 4.8)
    draw_hessian(figure.add_subplot(), surface, options)
    return figure


def spectral_density(
    nodes: np.ndarray, weights: np.ndarray, num: int = 1000, sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-smoothed density of stochastic Lanczos quadrature nodes, averaged over runs.

    ``nodes`` and ``weights`` are (runs, steps); sigma defaults to 1 % of the spectrum's range.
    The density integrates to 1 over the returned grid.
    """
    nodes, weights = np.atleast_2d(nodes).astype(float), np.atleast_2d(weights).astype(float)
    if nodes.shape != weights.shape:
        raise LlvError(f"density_nodes {nodes.shape} and density_weights {weights.shape} differ")
    low, high = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (high - low) if high > low else max(0.01 * abs(high), 1e-6)
    grid = np.linspace(low - 5 * sigma, high + 5 * sigma, num)
    kernel = np.exp(-0.5 * ((grid[None, None, :] - nodes[..., None]) / sigma) ** 2)
    kernel /= sigma * np.sqrt(2 * np.pi)
    density = (weights[..., None] * kernel).sum(axis=1).mean(axis=0)
    density /= np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(grid))
    return grid, density


def point_title(point: HessianPoint) -> str:
    parts = [str(point.attrs[k]) for k in ("model", "dataset") if point.attrs.get(k)]
    return " · ".join(parts) if parts else point.path.name


def figure_spectrum(point: HessianPoint, options: PlotOptions) -> Figure:
    """Eigenvalue density on a log axis, the top eigenvalues as ticks along the bottom."""
    if point.density is not None and point.density_grid is not None:
        grid, density = point.density_grid.ravel(), point.density.ravel()
    elif point.density_nodes is not None and point.density_weights is not None:
        grid, density = spectral_density(point.density_nodes, point.density_weights)
    else:
        raise LlvError(f"{point.path} has no spectral density (density_nodes/density_weights)")
    positive = density[density > 0]
    floor = float(positive.max()) * 1e-7 if positive.size else 1e-12
    figure = new_figure(6.4, 4.4)
    ax = figure.add_subplot()
    ax.semilogy(
        grid, np.maximum(density, floor), color="tab:blue", linewidth=1.2, label="density (SLQ)"
    )
    if point.eigenvalues.size:
        ax.plot(
            point.eigenvalues,
            np.full(point.eigenvalues.shape, floor * 3),
            "|",
            color="tab:red",
            markersize=14,
            label=f"top-{point.eigenvalues.size} eigenvalues",
        )
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log scale)")
    if options.vmin is not None or options.vmax is not None:
        ax.set_xlim(options.vmin, options.vmax)
    notes = []
    for key, symbol in (("lambda_max", "λmax"), ("lambda_min", "λmin")):
        if point.attrs.get(key) is not None:
            notes.append(f"{symbol} = {float(point.attrs[key]):.4g}")
    if point.attrs.get("trace") is not None:
        trace = f"trace = {float(point.attrs['trace']):.4g}"
        if point.attrs.get("trace_stderr") is not None:
            trace += f" ± {float(point.attrs['trace_stderr']):.2g}"
        notes.append(trace)
    if notes:
        ax.text(
            0.98,
            0.97,
            "\n".join(notes),
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize="small",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8},
        )
    ax.legend(loc="upper left", fontsize="small")
    ax.set_title(f"Hessian eigenvalue density · {point_title(point)}\n"
                 f"{point_hvp_note(point.attrs)}", fontsize="medium")
    return figure


def plot_hessian(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot hessian``: |λmin/λmax| over a Hessian grid file."""
    (path,) = paths
    return [save_figure(figure_hessian(load_surface(path), options), out, options.fmt)]


def plot_spectrum(paths: list[Path], out: Path, options: PlotOptions) -> list[Path]:
    """``llv plot spectrum``: the eigenvalue density of a Hessian point file."""
    (path,) = paths
    return [save_figure(figure_spectrum(load_hessian_point(path), options), out, options.fmt)]
