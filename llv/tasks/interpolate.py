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
CURVE_FILE = "curve.h5"


def run(cfg):
    """Compute (or resume) ``interpolation.h5``; returns its path on rank 0. With
    ``path=bezier|polychain``: :func:`run_curve`."""
    if str(cfg.get("path") or "line") != "line":
        return run_curve(cfg)
    with running(cfg, FILE, prepare=_prepare) as session:
        grid = GridSpec.from_cfg(session.cfg.grid)
        result = compute_surface(session, grid, FILE, coordinate_names=("alphas", "ycoordinates"),
                                 extra_attrs={"checkpoint2": str(session.cfg.checkpoint2)})
        plot_result(session, result, "1d")
        return result.path if result is not None else None


def run_curve(cfg):
    """A low-loss curve from model A to model B beside the line (:func:`llv.api.connect`):
    ``curve.h5`` (both paths), ``curve_control.pt`` (θ_M), a checkpoint per epoch in ``curve/``
    (the same command with ``out=`` of the run resumes it) and ``curve.png``; with
    ``curve.plane=n`` also the n x n surface over the plane through A, B and M
    (``curve_plane.h5``, ``curve_plane.png``). Returns ``curve.h5``'s path."""
    from llv import api
    from llv.curves import plot_curve_plane
    from llv.tasks._grid import _state_of, point_options

    with running(cfg, None, prepare=_prepare) as session:
        cfg, c = session.cfg, session.cfg.curve
        if session.comm.size > 1:
            raise LlvError("a curve trains on one process: run it with dist=none")
        splits = ["train", *[s for s in cfg.eval.splits if s != "train"]]  # train trains the curve
        data = {s: (d.inputs, d.targets) for s in splits for d in [session.data(s, cfg.eval.max_samples)]}
        other = _state_of(session, cfg.checkpoint2)
        result = api.connect(session.model, other, data, path=str(cfg.path), epochs=int(c.epochs),
                             lr=float(c.lr), optimizer=str(c.optimizer), momentum=float(c.momentum),
                             weight_decay=float(c.weight_decay), batch_size=int(c.batch_size),
                             seed=int(cfg.seed), points=int(c.points), bn=str(c.bn), loss=str(cfg.loss),
                             checkpoint_dir=session.run_dir / "curve", device=session.device,
                             precision=str(cfg.eval.precision))
        result.attrs.update(command="interpolate", model=str(cfg.model.name), dataset=str(cfg.dataset.name),
                            checkpoint=str(session.checkpoint), checkpoint2=str(cfg.checkpoint2),
                            checkpoint_sha256=session.checkpoint_sha256)
        path = result.save(session.run_dir / CURVE_FILE)
        if cfg.get("plot", True):
            result.plot().figure.savefig(session.run_dir / "curve.png", dpi=150)
        if int(c.plane) > 0:
            through = result.plane(session.model, other)
            (x0, x1), (y0, y1) = through.extent(0.2)
            surface = api.surface(session.model, {"train": data["train"]}, x=(x0, x1, int(c.plane)),
                                  y=(y0, y1, int(c.plane)), directions=through.directions, loss=str(cfg.loss),
                                  bn=str(c.bn), device=session.device, path=session.run_dir / "curve_plane.h5",
                                  attrs={"command": "surface", "checkpoint2": str(cfg.checkpoint2)},
                                  **point_options(cfg.eval))
            if cfg.get("plot", True):
                plot_curve_plane(surface, through).figure.savefig(session.run_dir / "curve_plane.png", dpi=150)
        return path


def _prepare(cfg, run_dir: Path) -> Path:
    """Both checkpoints are files and the grid is 1D; the direction is θB − θA."""
    if not cfg.get("checkpoint") or not cfg.get("checkpoint2"):
        raise LlvError("llv interpolate needs checkpoint=A.pt and checkpoint2=B.pt")
    first = check_file(cfg.checkpoint, "checkpoint")
    check_file(cfg.checkpoint2, "checkpoint2")
    grid = GridSpec.from_cfg(cfg.grid)
    if grid.auto:
        raise LlvError("llv interpolate does not take grid.x=auto: the range of α is set by the two models; "
                       "give grid.x=min:max:num (default -0.5:1.5:401)")
    if grid.ndim != 1:
        raise LlvError("llv interpolate takes a 1D grid: grid.x=min:max:num grid.y=null")
    if cfg.interpolate.get("recompute_bn"):
        cfg.eval.bn = "recompute"
    cfg.direction.kind = "target"
    cfg.direction.target = cfg.checkpoint2
    return first
