"""``llv direction``: make plot directions and save them (the reference's direction-file layout)."""

from __future__ import annotations

from pathlib import Path

from llv import direction as dirs
from llv.config import GridSpec
from llv.console import LlvError, log
from llv.params import ParameterSpace
from llv.tasks._grid import DIRECTION_FILE, check_direction_target, make_directions
from llv.tasks.session import running


def run(cfg):
    """Write ``directions.h5`` (x, and y for a 2D grid) into the run directory; return its path.

    An ``out=`` that already holds a ``directions.h5`` is refused unless ``overwrite=true``: a
    surface computed along the old directions could never be finished otherwise.
    """
    with running(cfg, prepare=_refuse_overwrite, inherit=False) as session:
        grid = GridSpec.from_cfg(session.cfg.grid)
        space = ParameterSpace.of(session.model, str(session.cfg.direction.type))
        made = make_directions(session, space, max(grid.ndim, 1))
        path = made.save(session.run_dir / DIRECTION_FILE,
                         {"checkpoint": str(session.checkpoint),
                          "checkpoint_sha256": session.checkpoint_sha256,
                          "model": str(session.cfg.model.name)})
        dirs.log_summary(made)
        log.info(f"wrote {path}")
        return path


def _refuse_overwrite(cfg, run_dir: Path) -> None:
    found = run_dir / DIRECTION_FILE
    if found.exists() and not cfg.get("overwrite", False):
        raise LlvError(f"{found} exists: pass overwrite=true to replace it, or another out=")
    check_direction_target(cfg)
