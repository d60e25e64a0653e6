"""``llv surface``: the loss (and accuracy) surface around a checkpoint."""

from __future__ import annotations

from llv.config import GridSpec
from llv.tasks._grid import compute_surface, plot_result
from llv.tasks.session import start


def run(cfg):
    """Compute (or resume) ``surface.h5`` in the run directory; returns its path on rank 0."""
    grid = GridSpec.from_cfg(cfg.grid)
    session = start(cfg, "surface.h5", checkpoint=cfg.get("checkpoint") or None)
    try:
        result = compute_surface(session, grid)
        plot_result(session, result, "contour" if grid.ndim == 2 else "1d")
        return result.path if result is not None else None
    finally:
        session.close()
