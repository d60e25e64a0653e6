"""``llv interpolate``: f(α) = L((1−α)·θA + α·θB), the paper's §5 linear interpolation.

The surface engine with one direction, θB − θA, over ``alphas`` (:func:`llv.api.interpolate`
does the same from Python). With the default ``direction.type=states`` BatchNorm running
statistics are interpolated too (never ``num_batches_tracked``);
``interpolate.recompute_bn=true`` re-estimates them at every α instead.
"""

from __future__ import annotations

from pathlib import Path

from llv.config import GridSpec
from llv.console import LlvError
from llv.tasks._grid import compute_surface, plot_result
from llv.tasks.session import check_file, running

FILE = "interpolation.h5"


def run(cfg):
    """Compute (or resume) ``interpolation.h5``; returns its path on rank 0."""
    with running(cfg, FILE, prepare=_prepare) as session:
        grid = GridSpec.from_cfg(session.cfg.grid)
        result = compute_surface(session, grid, FILE, coordinate_names=("alphas", "ycoordinates"),
                                 extra_attrs={"checkpoint2": str(session.cfg.checkpoint2)})
        plot_result(session, result, "1d")
        return result.path if result is not None else None


def _prepare(cfg, run_dir: Path) -> Path:
    """Both checkpoints are files and the grid is 1D; the direction is θB − θA."""
    if not cfg.get("checkpoint") or not cfg.get("checkpoint2"):
        raise LlvError("llv interpolate needs checkpoint=A.pt and checkpoint2=B.pt")
    first = check_file(cfg.checkpoint, "checkpoint")
    check_file(cfg.checkpoint2, "checkpoint2")
    if GridSpec.from_cfg(cfg.grid).ndim != 1:
        raise LlvError("llv interpolate takes a 1D grid: grid.x=min:max:num grid.y=null")
    if cfg.interpolate.get("recompute_bn"):
        cfg.eval.bn = "recompute"
    cfg.direction.kind = "target"
    cfg.direction.target = cfg.checkpoint2
    return first
