"""``llv surface``: the loss (and accuracy) surface around a checkpoint."""

from __future__ import annotations

from llv.config import GridSpec
from llv.tasks._grid import check_inputs, compute_surface, plot_result
from llv.tasks.session import running

FILE = "surface.h5"


def run(cfg):
    """Compute (or resume) ``surface.h5`` in the run directory; returns its path on rank 0.

    Everything is checked before the model is built or data are read; ``resume=FILE`` (or an
    ``out=`` holding one) takes every key not given from the file (llv.tasks.session).
    """
    with running(cfg, FILE, prepare=check_inputs) as session:
        grid = GridSpec.from_cfg(session.cfg.grid)
        result = compute_surface(session, grid, FILE)
        plot_result(session, result, "contour" if grid.ndim == 2 else "1d")
        return result.path if result is not None else None
