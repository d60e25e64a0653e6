"""``llv direction``: make plot directions and save them (the reference's direction-file layout)."""

from __future__ import annotations

from llv import direction as dirs
from llv.config import GridSpec
from llv.console import log
from llv.params import ParameterSpace
from llv.tasks._grid import DIRECTION_FILE, make_directions
from llv.tasks.session import start


def run(cfg):
    """Write ``directions.h5`` (x, and y for a 2D grid) into the run directory; return its path."""
    grid = GridSpec.from_cfg(cfg.grid)
    session = start(cfg, checkpoint=cfg.get("checkpoint") or None)
    try:
        space = ParameterSpace.of(session.model, str(cfg.direction.type))
        made = make_directions(session, space, max(grid.ndim, 1))
        path = made.save(session.run_dir / DIRECTION_FILE,
                         {"checkpoint": str(session.checkpoint),
                          "checkpoint_sha256": session.checkpoint_sha256,
                          "model": str(cfg.model.name)})
        dirs.log_summary(made)
        log.info(f"wrote {path}")
        return path
    finally:
        session.close()
