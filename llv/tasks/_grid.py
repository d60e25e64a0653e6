"""What the grid commands share: config -> API arguments, and the files and figures around a run.

``llv surface``, ``llv interpolate``, ``llv hessian grid=...`` and ``llv trajectory`` read their
directions and data from the config here and call :func:`llv.api.surface` (or
:func:`llv.api.hessian_map`); the curvature cross-check and the end-of-run figure also live
here, outside the engine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from llv import api
from llv import direction as dirs
from llv.config import GridSpec, to_yaml
from llv.console import LlvError, log, print_table
from llv.params import ParameterSpace
from llv.storage.directions import FILE as DIRECTION_FILE
from llv.storage.surface import SurfaceFile
from llv.tasks.session import Session

__all__ = ["DIRECTION_FILE", "compute_surface", "make_directions", "obtain_directions", "plot_result"]


def make_directions(session: Session, space: ParameterSpace, ndim: int) -> dirs.Directions:
    """New directions of ``direction.kind`` at the session's checkpoint (rank 0 calls this)."""
    d = session.cfg.direction
    kind = str(d.kind)
    common = dict(ndim=ndim, seed=int(d.seed), norm=str(d.norm), ignore=str(d.ignore), type=space.type)
    if kind == "random":
        return api.directions(session.model, "random", ensemble=int(d.get("ensemble", 1) or 1),
                              orthogonalize=bool(d.orthogonalize), **common)
    if kind == "target":
        target = d.get("target") or session.cfg.get("checkpoint2")
        if not target:
            raise LlvError("direction.kind=target needs direction.target=PATH (a second checkpoint)")
        made = api.directions(session.model, "target", target=_state_of(session, target), **common)
        made.attrs["target"] = str(target)
        return made
    if kind == "plane":
        vertices = [session.cfg.get("checkpoint2"), session.cfg.get("checkpoint3")]
        if not all(vertices):
            raise LlvError("direction.kind=plane needs checkpoint2=B.pt and checkpoint3=C.pt")
        made = api.directions(session.model, "plane", type=space.type, orthogonalize=bool(d.orthogonalize),
                              targets=[_state_of(session, v) for v in vertices])
        made.attrs.update(checkpoint2=str(vertices[0]), checkpoint3=str(vertices[1]))
        return made
    if kind == "hessian":
        h = session.cfg.hessian
        return api.hessian_directions(hessian_at(session), space, ndim, tol=float(h.tol),
                                      seed=int(session.cfg.seed))
    if kind in ("file", "pca"):
        raise LlvError(f"direction.kind={kind} reads dir_file=PATH"
                       + (" (made by llv trajectory)" if kind == "pca" else ""))
    raise LlvError(f"unknown direction.kind '{kind}'; valid: random, target, pca, hessian, file")


def check_inputs(cfg, run_dir: Path | None = None) -> None:
    """What a grid run reads besides the checkpoint (``dir_file``, a target checkpoint) and its
    grid, checked before anything is built or read (a ``prepare`` of the session)."""
    from llv.tasks.session import check_file

    if GridSpec.from_cfg(cfg.grid).ndim == 0 and str(cfg.command) != "hessian":
        raise LlvError(f"llv {cfg.command} needs a 1D or 2D grid (grid.x=min:max:num), not a single point")
    if cfg.get("dir_file"):
        check_file(cfg.dir_file, "dir_file")
        return
    check_direction_target(cfg)


def check_direction_target(cfg) -> None:
    """``direction.kind`` can be made here: a target checkpoint that exists, no kind that needs a file."""
    from llv.tasks.session import check_file

    kind = str(cfg.direction.kind)
    if kind == "target":
        target = cfg.direction.get("target") or cfg.get("checkpoint2")
        if not target:
            raise LlvError("direction.kind=target needs direction.target=PATH (a second checkpoint)")
        check_file(target, "direction.target")
    elif kind == "plane":
        for key in ("checkpoint2", "checkpoint3"):
            if not cfg.get(key):
                raise LlvError("direction.kind=plane needs checkpoint2=B.pt and checkpoint3=C.pt")
            check_file(cfg.get(key), key)
    elif kind in ("file", "pca"):
        raise LlvError(f"direction.kind={kind} reads dir_file=PATH"
                       + (" (made by llv trajectory)" if kind == "pca" else ""))


def _state_of(session: Session, checkpoint) -> dict:
    from llv.checkpoint import load_into
    from llv.models import build_model

    other = build_model(session.cfg.model)
    load_into(other, checkpoint, str(session.cfg.model.name))
    return other.state_dict()


def hessian_at(session: Session, state: dict | None = None, split: str | None = None):
    """The Hessian of the session's loss (``hessian.max_samples`` of ``eval.splits[0]``)."""
    from llv.spectrum import Hessian

    cfg, h = session.cfg, session.cfg.hessian
    dtype = {"float32": None, "float64": torch.float64}[str(h.dtype)]
    data = session.batches(split or str(cfg.eval.splits[0]), h.get("max_samples"), h.batch_size)
    return Hessian(session.model, data, loss=str(cfg.loss), dtype=dtype, state=state)


def obtain_directions(session: Session, space: ParameterSpace, ndim: int, existing_attrs: dict | None = None
                      ) -> tuple[dirs.Directions, Path]:
    """Directions from ``dir_file=``, from the resumed file's ``dir_file`` (where the session
    found it: as recorded, or beside the result when the run folder moved), or new (saved by
    rank 0)."""
    cfg = session.cfg
    path = cfg.get("dir_file") or session.dir_file or (existing_attrs or {}).get("dir_file")
    if path:
        path = Path(str(path))
        if not path.is_absolute() and not path.exists() and session.existing is not None:
            path = session.run_dir / path
        return dirs.load(path, space, ndim), path
    path = session.run_dir / DIRECTION_FILE
    if path.is_file():  # this run's own, from before a stop (the session checked it is)
        log.info(f"reusing {path}")
        return dirs.load(path, space, ndim), path
    session.comm.barrier()  # every rank has looked before rank 0 writes
    if session.is_root:
        made = make_directions(session, space, ndim)
        made.save(path, {"checkpoint": str(session.checkpoint),
                         "checkpoint_sha256": session.checkpoint_sha256,
                         "model": str(cfg.model.name)})
    session.comm.barrier()
    return dirs.load(path, space, ndim), path


def grid_directions(session: Session, grid: GridSpec, directions: dirs.Directions | None = None,
                    dir_file: Path | None = None) -> tuple[ParameterSpace, dirs.Directions, Path | None]:
    """The parameter space and the plot directions of a grid run (given, from a file, or new)."""
    if grid.ndim == 0:
        raise LlvError(f"llv {session.cfg.command} needs a 1D or 2D grid (grid.x=min:max:num), not a single point")
    space = ParameterSpace.of(session.model, str(session.cfg.direction.type))
    if directions is None:
        directions, dir_file = obtain_directions(session, space, grid.ndim, existing_attrs(session))
    record_where_inputs_are(session, dir_file)
    dirs.log_summary(directions)
    return space, directions, dir_file


def record_where_inputs_are(session: Session, dir_file: Path | None) -> None:
    """A resumed result records where its checkpoint and directions are now (absolute), when
    that differs from what it recorded: its run folder moved and the session found them beside
    it, or an older llv recorded relative paths. Rank 0, before any point is computed; the
    session checked both by SHA-256, and the engine checks them again."""
    if not session.is_root or session.existing is None:
        return
    from omegaconf import OmegaConf

    file = SurfaceFile.open(session.existing)
    now = {"checkpoint": str(Path(session.checkpoint).resolve()),
           "dir_file": str(Path(dir_file).resolve()) if dir_file else None}
    changed = {k: v for k, v in now.items() if v and file.attrs.get(k) and str(file.attrs[k]) != v}
    if not changed:
        return
    try:
        config = OmegaConf.to_container(OmegaConf.create(str(file.attrs.get("config") or "{}")))
    except Exception:  # not a mapping: leave it as it is
        config = None
    if isinstance(config, dict):
        for key in ("checkpoint", "dir_file"):
            value = session.cfg.get(key)
            if config.get(key) and value and str(config[key]) != str(value):
                config[key] = str(value)
        changed["config"] = OmegaConf.to_yaml(OmegaConf.create(config))
    file.set_attrs(**changed)
    file.flush(force=True)


def existing_attrs(session: Session) -> dict:
    attrs = None
    if session.is_root and session.existing is not None:
        attrs = SurfaceFile.open(session.existing).attrs
    return session.comm.bcast(attrs) or {}


def run_attrs(session: Session, directions: dirs.Directions, dir_file: Path | None) -> dict:
    """Provenance every grid file records."""
    cfg = session.cfg
    # absolute paths: ``resume=FILE`` works from any working directory (docs/reliability.md)
    attrs = {"command": str(cfg.command), "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
             "checkpoint": str(Path(session.checkpoint).resolve()),
             "dir_file": str(Path(dir_file).resolve()) if dir_file else None,
             "config": to_yaml(cfg), "checkpoint_sha256": session.checkpoint_sha256}
    if "plane_coordinates" in directions.attrs:  # the three models, for figures to mark
        attrs["plane_coordinates"] = np.asarray(directions.attrs["plane_coordinates"], dtype=np.float64)
    return attrs


def compute_surface(session: Session, grid: GridSpec, filename: str = "surface.h5",
                    coordinate_names: tuple[str, str] = ("xcoordinates", "ycoordinates"),
                    directions: dirs.Directions | None = None, dir_file: Path | None = None,
                    extra_attrs: dict | None = None):
    """Evaluate loss/accuracy over ``grid`` through :func:`llv.api.surface`; the result on rank 0."""
    cfg = session.cfg
    e = cfg.eval
    space, directions, dir_file = grid_directions(session, grid, directions, dir_file)
    data = session.eval_batches()
    bn = str(e.get("bn", "stored"))
    bn_data = session.batches("train", e.get("bn_samples"), e.batch_size) if bn == "recompute" else None
    recorded = (session.checkpoint_meta or {}).get("metrics") or {}
    result = api.surface(
        session.model, data, x=grid.x, y=grid.y, directions=directions, loss=str(cfg.loss), bn=bn,
        bn_data=bn_data, device=session.device, type=space.type, path=session.run_dir / filename,
        **point_options(e), approx=bool(e.get("approx", False)), target_se=float(e.get("target_se", 0.005)),
        approx_rel_tol=e.get("approx_rel_tol"), approx_start=int(e.get("approx_start", 128)),
        resume=session.existing is not None, comm=session.comm,
        stop_after=cfg.get("stop_after_points"), eps=float(cfg.summary.eps),
        attrs={**run_attrs(session, directions, dir_file), **(extra_attrs or {})},
        probe=str(cfg.get("probe", True)), recorded_metrics=recorded if e.max_samples is None else {},
        auto=auto_options(cfg), coordinate_names=coordinate_names, progress=True)
    log_repeat_line(grid, result)
    if result is not None and result.complete and space.type == "weights" and cfg.summary.get("cross_check", True):
        cross_check_curvature(session, directions, result, data)
    return result


def point_options(e) -> dict:
    """``eval``'s keys on how points are computed (and their precision), as
    :func:`llv.api.surface` options."""
    return {"points_per_batch": int(e.points_per_batch), "precision": str(e.precision),
            "channels_last": e.get("channels_last", "auto"), "fold": bool(e.get("fold", True)),
            "compile": _compile_mode(e.get("compile", "auto")), "streams": _streams(e.get("streams", "auto")),
            "chunk_points": int(e.chunk_points)}


def auto_options(cfg) -> dict:
    """``grid.auto_*`` as the API's ``auto=`` options (the search for ``grid.x=auto``)."""
    g = cfg.grid
    return {"rise": float(g.get("auto_rise", 2.0)), "add": g.get("auto_add"),
            "max_extent": float(g.get("auto_max", 10.0)), "tol": float(g.get("auto_tol", 0.01)),
            "symmetric": bool(g.get("auto_symmetric", True))}


def log_repeat_line(grid, result) -> None:
    """After a ``grid.x=auto`` run: the overrides that give its grid again, to the bit."""
    if grid.auto and result is not None:
        log.info(f"to repeat this grid exactly: {repeat_overrides(result)}")


def repeat_overrides(result) -> str:
    """``grid.x=min:max:num grid.y=...`` that give ``result``'s grid to the bit (repr floats).

    >>> class R: x, y = np.linspace(-0.25, 0.5, 3), None
    >>> repeat_overrides(R())
    'grid.x=-0.25:0.5:3 grid.y=null'
    """
    parts = []
    for name in ("x", "y"):
        values = getattr(result, name)
        parts.append(f"grid.{name}=" + ("null" if values is None else
                                        f"{float(values[0])!r}:{float(values[-1])!r}:{len(values)}"))
    return " ".join(parts)


def _compile_mode(value) -> str:
    """``eval.compile``: YAML reads an unquoted on/off as a bool."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _streams(value) -> int | str:
    """``eval.streams``: ``auto`` or a whole number (validated by the schema)."""
    return "auto" if str(value) == "auto" else int(value)


def cross_check_curvature(session: Session, directions: dirs.Directions, result, data: dict) -> None:
    """Second-difference curvature at the centre beside dᵀHd along the same directions (rank 0).

    dᵀHd is the exact second derivative along d, computed forward over forward
    (:meth:`llv.curvature.HessianOperator.curvature_along`): it holds no backward graph, so the
    check costs two forward passes with tangents, in small passes, and no more memory than the
    grid's own.
    """
    from llv.batches import batch_size_of
    from llv.curvature import HessianOperator

    cfg = session.cfg
    split = str(cfg.eval.splits[0])
    dtype = torch.float64 if str(cfg.eval.precision) == "fp64" else None
    op = HessianOperator(session.model, data[split], loss=str(cfg.loss), dtype=dtype)  # the grid's batches
    # nested forward mode holds every layer's activations and their tangents while a batch
    # passes (~16x what a plain evaluation holds at once): passes of 1/16 of the grid's batch
    # keep the check within the grid's own memory (benchmarks/RESULTS.md, memory); at least 16
    # examples a pass, since tiny passes are slow per example (a ResNet-20 on one CPU thread:
    # 14 passes of 3 images took 4.4x one pass of all 40; passes of 16 cost 1.1x one of 128)
    per_pass = max(16, max(batch_size_of(b) for b in op.data.stored) // 16)  # sizes only: no copy to the device
    names = directions.space.names
    count = len(directions.axes)
    log.info(f"curvature cross-check: dᵀHd along {count} direction(s) on the '{split}' split, forward over "
             "forward (on a conv net about 15 plain passes each; summary.cross_check=false leaves it out)")
    started = time.perf_counter()
    exact = []
    for axis in directions.axes:
        by_name = dict(zip(names, axis))
        v = op.flatten({n: by_name[n].to(op.device, op.dtype) for n in op.wrt})
        exact.append(op.curvature_along(v, examples_per_pass=per_pass))
    exact = np.asarray(exact).reshape(directions.ensemble, directions.ndim)
    rows, attrs = [], {"summary_cross_check_seconds": time.perf_counter() - started}
    for a, axis in enumerate("xy"[:directions.ndim]):
        estimate = float(result.attrs.get(f"summary_{split}_curvature_{axis}", np.nan))
        error = float(result.attrs.get(f"summary_{split}_curvature_{axis}_error", np.nan))
        hvp = float(exact[:, a].mean())
        relative = abs(estimate - hvp) / max(abs(hvp), 1e-12)
        attrs.update({f"summary_{split}_curvature_{axis}_hvp": hvp,
                      f"summary_{split}_curvature_{axis}_reldiff": relative})
        rows.append((axis, estimate, error, hvp, relative))
    file = SurfaceFile.open(result.path)
    file.set_attrs(**attrs)
    file.flush(force=True)
    result.attrs.update(attrs)
    print_table("curvature at the centre: grid second difference vs dᵀHd (exact, forward over forward; "
                f"{attrs['summary_cross_check_seconds']:.1f} s)",
                ["axis", "second difference", "± discretization", "dᵀHd", "relative difference"], rows)
    for axis, estimate, error, hvp, relative in rows:
        if not _disagree(estimate, error, hvp):
            continue
        step = _step(result, axis)
        if np.isfinite(error) and abs(error) > 0.25 * max(abs(estimate), abs(hvp), 1e-12):
            # the grid cannot resolve the curvature at its centre: advice, not an alarm
            log.info(f"cross-check along {axis}: the grid's second difference ({estimate:.4g}) and the "
                     f"exact curvature dᵀHd ({hvp:.4g}) differ by {100 * relative:.0f} %, but the grid's "
                     f"own discretization error is ±{abs(error):.2g}: with a step of {step:.3g} it is too "
                     f"coarse to measure curvature at the centre. For a sharp comparison, rerun with a "
                     f"finer grid around 0, e.g. grid.{axis}=-{step:.2g}:{step:.2g}:21")
        else:
            allowed = (f"more than its discretization error (±{abs(error):.2g}) allows" if np.isfinite(error)
                       else "and the grid has too few points around 0 to estimate its discretization error")
            if result.attrs.get("approx"):  # fast mode: the second difference of estimates is noisy
                cause = ("the surface is approximate (eval.approx): a second difference of estimates "
                         "carries their standard errors ÷ step², so this is expected, not a fault")
            else:
                cause = ("the loss is not smooth at the centre (ReLU kinks, a non-finite point) or the "
                         "evaluation is noisy (eval.max_samples); the surface's own values are unaffected")
            say = log.info if result.attrs.get("approx") else log.warning
            say(f"cross-check along {axis}: the grid's second difference ({estimate:.4g}) differs from the "
                f"exact curvature dᵀHd ({hvp:.4g}) by {100 * relative:.0f} %, {allowed}: {cause}")


def _step(result, axis: str) -> float:
    coordinates = result.x if axis == "x" else result.y
    return float(np.diff(coordinates).mean()) if coordinates is not None and len(coordinates) > 1 else float("nan")


def _disagree(estimate: float, error: float, hvp: float) -> bool:
    """More apart than the discretization error allows (10 % when the grid gives no estimate)."""
    tolerance = 3 * error if np.isfinite(error) else 0.1 * abs(hvp)
    return abs(estimate - hvp) > max(tolerance, 1e-9 * abs(hvp))


def plot_result(session: Session, result, kind: str) -> None:
    """The default figure at the end of a run; a plotting problem never loses the results.

    The scale (log when the loss spans more than two decades) is decided by the figure rules
    of :mod:`llv.plot`, so this figure equals ``llv plot KIND FILE``'s.
    """
    if result is None or not session.cfg.get("plot", True) or not result.complete:
        return
    try:
        from llv.plot import make_plot

        make_plot(kind, [str(result.path)])  # the figure rules decide the scale, as llv plot does
    except Exception as exc:  # the results are safe on disk; say why there is no figure
        log.warning(f"could not draw the {kind} plot: {' '.join(str(exc).split())}")
