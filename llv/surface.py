"""A surface run, start to end: directions → evaluator → result file → point loop → summary.

Shared by ``llv surface``, ``llv interpolate`` (one target direction, ``alphas``), ``llv
trajectory`` (PCA directions over the path's box) and reused for Hessian maps (another point
function over the same grid, file and loop).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from llv import __version__
from llv import directions as dirs
from llv.config import GridSpec, to_yaml
from llv.console import LlvError, log, print_table
from llv.evaluate import PointEvaluator, configure_precision
from llv.grid import LoopStats, run_points
from llv.params import ParameterSpace
from llv.probe import run_probe
from llv.session import Session
from llv.storage import SurfaceFile
from llv.summary import summarize

DIRECTION_FILE = "directions.h5"


# ------------------------------------------------------------------------------ directions


def make_directions(session: Session, space: ParameterSpace, ndim: int) -> dirs.Directions:
    """New directions of ``direction.kind`` at the session's checkpoint (rank 0 calls this)."""
    d = session.cfg.direction
    kind = str(d.kind)
    values = space.values(session.model)
    if kind == "random":
        return dirs.make_random(space, values, ndim, seed=int(d.seed), norm=str(d.norm),
                                ignore=str(d.ignore), ensemble=int(d.get("ensemble", 1) or 1),
                                orthogonal=bool(d.orthogonalize))
    if kind == "target":
        target = d.get("target") or session.cfg.get("checkpoint2")
        if not target:
            raise LlvError("direction.kind=target needs direction.target=PATH (a second checkpoint)")
        other = _values_of(session, space, target)
        axes = [dirs.target_direction(space, values, other)]
        if ndim == 2:
            axes.append(dirs.normalize(dirs.random_direction(space, dirs.axis_seed(int(d.seed), 1)), values,
                                       str(d.norm), str(d.ignore)))
        return dirs.Directions(space, axes, ndim, {"kind": "target", "norm": "none", "ignore": str(d.ignore),
                                                   "type": space.type, "seed": int(d.seed),
                                                   "target": str(target)})
    if kind == "hessian":
        from llv.hessian import hessian_directions

        return hessian_directions(session, space, values, ndim)
    if kind in ("file", "pca"):
        raise LlvError(f"direction.kind={kind} reads dir_file=PATH"
                       + (" (made by llv trajectory)" if kind == "pca" else ""))
    raise LlvError(f"unknown direction.kind '{kind}'; valid: random, target, pca, hessian, file")


def _values_of(session: Session, space: ParameterSpace, checkpoint) -> list[torch.Tensor]:
    from llv.checkpoint import load_into
    from llv.models import build_model

    other = build_model(session.cfg.model)
    load_into(other, checkpoint, str(session.cfg.model.name))
    return space.values(other)


def obtain_directions(session: Session, space: ParameterSpace, ndim: int, existing_attrs: dict | None = None
                      ) -> tuple[dirs.Directions, Path]:
    """Directions from ``dir_file=``, from the resumed file's ``dir_file``, or new (saved by rank 0)."""
    cfg = session.cfg
    path = cfg.get("dir_file") or (existing_attrs or {}).get("dir_file")
    if path:
        path = Path(str(path))
        if not path.is_absolute() and not path.exists() and session.existing is not None:
            path = session.run_dir / path
        return dirs.load(path, space, ndim), path
    path = session.run_dir / DIRECTION_FILE
    if session.is_root:
        made = make_directions(session, space, ndim)
        dirs.save(made, path, {"checkpoint": str(session.checkpoint),
                               "checkpoint_sha256": session.checkpoint_sha256,
                               "model": str(cfg.model.name)})
    session.comm.barrier()
    return dirs.load(path, space, ndim), path


# ------------------------------------------------------------------------------ the surface


def coefficient_rows(grid: GridSpec, ndim: int, ensemble: int, indices: np.ndarray) -> np.ndarray:
    """Coefficients over all ``ensemble * ndim`` axes for flat indices over (K, *grid.shape)."""
    base = grid.coefficients()[:, :ndim]
    member, g = np.divmod(np.asarray(indices, dtype=np.int64), grid.num_points)
    rows = np.zeros((len(g), ensemble * ndim))
    for a in range(ndim):
        rows[np.arange(len(g)), member * ndim + a] = base[g, a]
    return rows


def coordinates_of(grid: GridSpec, names: tuple[str, str] = ("xcoordinates", "ycoordinates")) -> dict:
    coords = {names[0]: grid.x.coordinates()}
    if grid.ndim == 2:
        coords[names[1]] = grid.y.coordinates()
    return coords


def open_result(session: Session, path: Path, coordinates: dict, shape: tuple, metrics: list[str],
                provenance: dict, attrs: dict) -> SurfaceFile | None:
    """Rank 0: the resumed file (checked) or a new one; other ranks: None."""
    if not session.is_root:
        return None
    if session.existing is not None:
        file = SurfaceFile.open(session.existing)
        file.check_matches(coordinates, shape, metrics, provenance)
        done = int(file.done.sum())
        log.info(f"resuming {file.path}: {done}/{file.num_points} points done")
        return file
    file = SurfaceFile(path, coordinates, shape, metrics, {**attrs, **provenance})
    file.flush(force=True)
    return file


def build_evaluator(session: Session, space: ParameterSpace, directions: dirs.Directions,
                    data: dict | None = None) -> PointEvaluator:
    e = session.cfg.eval
    configure_precision(str(e.precision), session.device)
    base = dict(zip(space.names, space.values(session.model)))
    bn = str(e.get("bn", "stored"))
    if bn not in ("stored", "recompute"):
        raise LlvError(f"unknown eval.bn '{bn}'; valid: stored, recompute")
    bn_data = session.data("train", e.get("bn_samples")) if bn == "recompute" else None
    return PointEvaluator(session.model, space, base, directions.flat(), data or session.eval_data(),
                          loss=str(session.cfg.loss), batch_size=session.batch_size(e.batch_size),
                          points_per_batch=int(e.points_per_batch), precision=str(e.precision),
                          channels_last=bool(e.get("channels_last", False)), bn_data=bn_data)


def compute_surface(session: Session, grid: GridSpec, filename: str = "surface.h5",
                    coordinate_names: tuple[str, str] = ("xcoordinates", "ycoordinates"),
                    directions: dirs.Directions | None = None, dir_file: Path | None = None,
                    extra_attrs: dict | None = None) -> SurfaceFile | None:
    """Evaluate loss/accuracy over ``grid``; returns the finished file on rank 0 (None elsewhere)."""
    cfg = session.cfg
    space, directions, dir_file = grid_directions(session, grid, directions, dir_file)
    evaluator = build_evaluator(session, space, directions)
    probe = run_probe(evaluator, directions, space, space.values(session.model), session.checkpoint_meta,
                      list(cfg.eval.splits), cfg.eval.max_samples, str(cfg.get("probe", True)))
    file = compute_grid(session, grid, space, directions, dir_file, evaluator.metrics,
                        lambda rows: evaluator.evaluate(rows), filename, coordinate_names,
                        {**probe, **(extra_attrs or {})})
    _verify_theta_untouched(session, space, evaluator)
    if file is not None and file.done.all() and space.type == "weights" and cfg.summary.get("cross_check", True):
        cross_check_curvature(session, directions, file, grid)
    return file


def cross_check_curvature(session: Session, directions: dirs.Directions, file: SurfaceFile, grid: GridSpec) -> None:
    """Second-difference curvature at the centre beside dᵀHd along the same directions (rank 0)."""
    from llv.hessian import directional_curvatures

    split = str(session.cfg.eval.splits[0])
    exact = np.asarray(directional_curvatures(session, directions, split)).reshape(directions.ensemble,
                                                                                   directions.ndim)
    rows, attrs = [], {}
    for a, axis in enumerate("xy"[:directions.ndim]):
        estimate = float(file.attrs.get(f"summary_{split}_curvature_{axis}", np.nan))
        error = float(file.attrs.get(f"summary_{split}_curvature_{axis}_error", np.nan))
        hvp = float(exact[:, a].mean())
        relative = abs(estimate - hvp) / max(abs(hvp), 1e-12)
        attrs.update({f"summary_{split}_curvature_{axis}_hvp": hvp,
                      f"summary_{split}_curvature_{axis}_reldiff": relative})
        rows.append((axis, estimate, error, hvp, relative))
    file.set_attrs(**attrs)
    file.flush(force=True)
    print_table("curvature at the centre: grid second difference vs dᵀHd (one Hessian-vector product)",
                ["axis", "second difference", "± discretization", "dᵀHd", "relative difference"], rows)
    if any(_disagree(estimate, error, hvp) for _, estimate, error, hvp, _ in rows):
        log.warning("the grid's curvature differs from dᵀHd by more than its discretization error: "
                    "the grid is too coarse near the centre or the loss is not smooth there")


def _disagree(estimate: float, error: float, hvp: float) -> bool:
    """More apart than the discretization error allows (10 % when the grid gives no estimate)."""
    tolerance = 3 * error if np.isfinite(error) else 0.1 * abs(hvp)
    return abs(estimate - hvp) > max(tolerance, 1e-9 * abs(hvp))


def grid_directions(session: Session, grid: GridSpec, directions: dirs.Directions | None = None,
                    dir_file: Path | None = None) -> tuple[ParameterSpace, dirs.Directions, Path | None]:
    """The parameter space and the plot directions of a grid run (given, from a file, or new)."""
    if grid.ndim == 0:
        raise LlvError(f"llv {session.cfg.command} needs a 1D or 2D grid (grid.x=min:max:num), not a single point")
    space = ParameterSpace.of(session.model, str(session.cfg.direction.type))
    if directions is None:
        directions, dir_file = obtain_directions(session, space, grid.ndim, _existing_attrs(session))
    dirs.log_summary(directions)
    return space, directions, dir_file


def compute_grid(session: Session, grid: GridSpec, space: ParameterSpace, directions: dirs.Directions,
                 dir_file: Path | None, metrics: list[str], point_function: Callable,
                 filename: str, coordinate_names: tuple[str, str] = ("xcoordinates", "ycoordinates"),
                 extra_attrs: dict | None = None) -> SurfaceFile | None:
    """Any per-point function over a grid of direction coefficients: file, resume, ranks, summary.

    ``point_function(rows)`` takes a (k, D) tensor of coefficients over the directions' D axes
    and returns ``metric -> (k,)`` values (tensors or arrays).
    """
    cfg = session.cfg
    ensemble = directions.ensemble
    shape = grid.shape if ensemble == 1 else (ensemble, *grid.shape)
    provenance = {"checkpoint_sha256": session.checkpoint_sha256, "direction_sha256": directions.digest()}
    attrs = {
        "command": str(cfg.command), "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
        "norm": directions.attrs.get("norm"), "type": space.type, "kind": directions.attrs.get("kind"),
        "ignore": directions.attrs.get("ignore"), "checkpoint": str(session.checkpoint),
        "dir_file": str(dir_file) if dir_file else None, "config": to_yaml(cfg), "llv_version": __version__,
        "world_size": session.comm.size, "dist_backend": session.comm.backend, "seconds": 0.0,
        "loss": str(cfg.loss), "ensemble": ensemble,
        "splits": ",".join(cfg.eval.splits), "bn": str(cfg.eval.get("bn", "stored")), **(extra_attrs or {}),
    }
    file = open_result(session, session.run_dir / filename, coordinates_of(grid, coordinate_names), shape,
                       metrics, provenance, attrs)

    def compute(indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = torch.from_numpy(coefficient_rows(grid, grid.ndim, ensemble, indices))
        return {k: np.asarray(v.cpu() if torch.is_tensor(v) else v) for k, v in point_function(rows).items()}

    stats = run_points(session.comm, file, compute, int(cfg.eval.chunk_points),
                       description=f"{cfg.command} {grid.describe()}", stop_after=cfg.get("stop_after_points"))
    if file is not None:
        finish(session, file, grid, stats, coordinate_names, ensemble)
    return file


def _existing_attrs(session: Session) -> dict:
    attrs = None
    if session.is_root and session.existing is not None:
        attrs = SurfaceFile.open(session.existing).attrs
    return session.comm.bcast(attrs) or {}


def _verify_theta_untouched(session: Session, space: ParameterSpace, evaluator: PointEvaluator) -> None:
    from llv.params import flatten

    now = flatten(space, space.values(session.model)).to(evaluator.theta)
    if not torch.equal(now, evaluator.theta):
        raise RuntimeError("the model's weights changed during evaluation (please report this)")


def finish(session: Session, file: SurfaceFile, grid: GridSpec, stats: LoopStats,
           coordinate_names: tuple[str, str], ensemble: int) -> None:
    """Summary attrs, the console table, timing; flushed."""
    cfg = session.cfg
    seconds = float(file.attrs.get("seconds") or 0.0) + stats.seconds
    file.set_attrs(seconds=seconds, world_size=session.comm.size, dist_backend=session.comm.backend,
                   points_per_second=stats.points_per_second, nonfinite_count=int(stats.nonfinite))
    x = file.coordinates[coordinate_names[0]]
    y = file.coordinates.get(coordinate_names[1])
    rows = []
    if file.done.all():
        for split in [s for s in cfg.eval.splits if f"{s}_acc" in file.values]:
            summary = summarize(file.values, x, y, str(split), float(cfg.summary.eps), ensemble)
            file.set_attrs(**{f"summary_{k}": v for k, v in summary.items()})
            rows += [(k, v) for k, v in summary.items()]
    else:
        log.info(f"stopped with {int((~file.done).sum())} points to go: resume with resume={file.path}")
    rows += [("points computed", stats.computed), ("points/s", stats.points_per_second),
             ("non-finite losses", stats.nonfinite)]
    file.flush(force=True)
    print_table(f"{cfg.command} summary", ["figure", "value"], rows)
    log.info(f"wrote {file.path}")


def plot_result(session: Session, file: SurfaceFile | None, kind: str) -> None:
    """The default figure at the end of a run; a plotting problem never loses the results.

    A loss spanning more than two decades is drawn on a log scale, so the basin around the
    minimizer is not a single contour.
    """
    if file is None or not session.cfg.get("plot", True) or not file.done.all():
        return
    try:
        from llv.plot import make_plot

        loss = file.values.get(f"{session.cfg.eval.splits[0]}_loss")
        finite = loss[np.isfinite(loss)] if loss is not None else np.zeros(0)
        log_scale = kind in ("contour", "1d") and bool(
            finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
        make_plot(kind, [str(file.path)], log=log_scale)
    except Exception as exc:  # the results are safe on disk; say why there is no figure
        log.warning(f"could not draw the {kind} plot: {' '.join(str(exc).split())}")
