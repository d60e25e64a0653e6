"""``llv trajectory``: PCA of a train run's path, the projected path, the surface around it.

Writes into its run directory ``directions.h5`` (kind ``pca``), ``projection.h5`` (the path on
the two directions, the epochs, the epochs where the learning rate dropped) and, unless
``trajectory.surface=false``, ``surface.h5`` over the box that holds the path. The model and
data set are the train run's own (its ``config.yaml``) unless ``trajectory.run_config=false``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from llv.console import LlvError, log, print_table

PROJECTION_FILE = "projection.h5"
SURFACE_FILE = "surface.h5"


def run(cfg):
    """Compute (or, into the same run directory, resume) the trajectory; the projection file on
    rank 0 (None on other ranks)."""
    from llv import direction as dirs
    from llv import path_pca as tr
    from llv.config import GridSpec
    from llv.grid import Axis
    from llv.params import ParameterSpace
    from llv.storage import projection as projection_file
    from llv.tasks._grid import DIRECTION_FILE, compute_surface
    from llv.tasks.session import running

    with running(cfg, SURFACE_FILE, prepare=_prepare) as session:
        cfg = session.cfg
        settings = cfg.trajectory
        run_dir = train_run_dir(cfg)
        points = tr.choose_epochs(run_dir, settings.get("epochs"))
        resolution = GridSpec.from_cfg(cfg.grid)
        space = ParameterSpace.of(session.model, str(cfg.direction.type))
        dir_path = session.run_dir / DIRECTION_FILE
        projection = session.run_dir / PROJECTION_FILE
        rows, error = None, None
        if session.is_root:
            try:
                _refuse_overwrite(session)
                rows = _projection(session, space, points, run_dir, dir_path, projection)
            except Exception as exc:  # every rank stops, not only rank 0
                error = exc
        session.comm.agree(error)
        directions = dirs.load(dir_path, space, 2)
        coordinates, _, _ = session.comm.bcast(
            _coordinates(projection_file.read(projection)) if session.is_root else None)
        file = None
        if settings.surface:
            box = tr.path_box(coordinates, float(settings.margin))
            grid = tr.box_grid(box, resolution)
            if session.existing is not None:  # checked before any point is computed
                axes, error = None, None
                if session.is_root:
                    try:
                        axes = _resumed_axes(session.existing, box, grid, directions,
                                             float(settings.margin))
                    except Exception as exc:
                        error = exc
                session.comm.agree(error)
                grid = GridSpec(*(Axis(*axis) for axis in session.comm.bcast(axes)))
            if rows is not None:
                rows += [("surface box x", _span((grid.x.min, grid.x.max))),
                         ("surface box y", _span((grid.y.min, grid.y.max)))]
            provenance = {"projection_file": PROJECTION_FILE, "run": str(run_dir)}
            file = compute_surface(session, grid, SURFACE_FILE, directions=directions,
                                   dir_file=dir_path, extra_attrs=provenance)
        if session.is_root:
            print_table("trajectory", ["figure", "value"], rows)
            log.info(f"wrote {projection}")
            if file is None or file.complete:
                _plot(cfg, projection)
            return projection
        return None


def _prepare(cfg, out_dir: Path) -> Path:
    """The train run, its model and data set, the epochs and the grid, checked before any work;
    returns θ_n's checkpoint. ``run=`` is recorded as the resolved folder, for a resume."""
    from llv import path_pca as tr
    from llv.config import GridSpec

    run_dir = train_run_dir(cfg)
    cfg.run = str(run_dir)
    trained = with_run_model(cfg, run_dir)
    cfg.model, cfg.dataset = trained.model, trained.dataset
    if GridSpec.from_cfg(cfg.grid).auto:
        raise LlvError("llv trajectory does not take grid.x=auto: its box is fitted to the path; "
                       "grid.x/grid.y give the resolution (e.g. grid=21x21)")
    if cfg.trajectory.surface:
        tr.box_grid(((0.0, 1.0), (0.0, 1.0)), GridSpec.from_cfg(cfg.grid))  # a 1D grid fails here
    return tr.choose_epochs(run_dir, cfg.trajectory.get("epochs"))[-1][1]


def train_run_dir(cfg) -> Path:
    """``run=`` (default ``<outputs>/train/latest``), resolved; a missing one is one line."""
    given = cfg.get("run")
    outputs = Path(str(cfg.get("outputs") or "outputs"))
    path = Path(str(given)) if given else outputs / "train" / "latest"
    if not path.is_dir():
        how = "pass run=outputs/train/<run>" if given else "run `llv train` first or pass run=PATH"
        raise LlvError(f"train run {path} does not exist: {how}")
    return path.resolve()


def with_run_model(cfg, run_dir: Path):
    """``cfg`` with the train run's ``model`` and ``dataset``: its checkpoints are of that model."""
    from omegaconf import OmegaConf, open_dict

    if not cfg.trajectory.get("run_config", True):
        return cfg
    source = run_dir / "config.yaml"
    if not source.is_file():
        log.warning(f"{source} is missing: using model={cfg.model.name} dataset={cfg.dataset.name}")
        return cfg
    trained = OmegaConf.load(source)
    if "model" not in trained or "dataset" not in trained:
        raise LlvError(f"{source} is not a train run's config (no model or dataset)")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model = trained.model
        cfg.dataset = trained.dataset
    from llv.schema import validate

    validate(str(cfg.command), cfg)  # the run's model and data set, checked as typed keys
    return cfg


def _projection(session, space, points, run_dir: Path, dir_path: Path, projection: Path) -> list:
    """Rank 0: PCA of the path and the projection file (reused when resuming the same path)."""
    from llv import path_pca as tr
    from llv.storage import projection as projection_file
    from llv.storage import trainrun

    cfg = session.cfg
    settings = cfg.trajectory
    epochs = [epoch for epoch, _ in points]
    ignore, center = str(cfg.direction.ignore), bool(settings.get("center", False))
    if str(cfg.direction.get("norm", "none")) != "none":
        log.warning(f"direction.norm={cfg.direction.norm} is not applied: PCA directions are unit "
                    "vectors, so the path's coordinates are distances in parameter space")
    reusable = _reusable(session, dir_path, projection, epochs, ignore, center)
    if not reusable and session.existing is not None and dir_path.is_file() and projection.is_file():
        raise LlvError(f"cannot resume {session.existing}: {projection} is of another path "
                       f"(epochs, direction.ignore or trajectory.center differ from this run's "
                       f"{_short_epochs(epochs)}, ignore={ignore}, center={str(center).lower()}): "
                       "pass another out= for a new trajectory")
    if reusable:
        coordinates, _, ratio = _coordinates(projection_file.read(projection))
        loads, seconds = 0, 0.0
        log.info(f"reusing {dir_path.name} and {projection.name} of {session.run_dir}")
    else:
        began = time.perf_counter()
        memory = int(float(settings.get("memory_mb", 2048)) * 1024**2)
        result = tr.path_pca(space, [path for _, path in points], ignore=ignore, center=center,
                             memory_bytes=memory, seed=int(cfg.direction.seed))
        seconds = time.perf_counter() - began
        result.directions.save(dir_path,
                               {"checkpoint": str(session.checkpoint),
                   "checkpoint_sha256": session.checkpoint_sha256, "model": str(cfg.model.name),
                   "run": str(run_dir), "epochs": list(epochs)})
        drops = tr.lr_drop_epochs(trainrun.read_metrics(run_dir))
        if not (run_dir / trainrun.METRICS).is_file():
            log.warning(f"{run_dir / trainrun.METRICS} is missing: no learning-rate drops are marked")
        projection_file.write(projection, result.coordinates, epochs, drops,
                              result.explained_variance_ratio, result.singular_values, result.center, {
            "surface_file": SURFACE_FILE if settings.surface else "", "run": str(run_dir),
            "dir_file": dir_path.name, "ignore": ignore, "type": space.type,
            "model": str(cfg.model.name), "dataset": str(cfg.dataset.name), "pca_seconds": seconds,
            "checkpoint_loads": result.checkpoint_loads})
        coordinates, ratio = result.coordinates, result.explained_variance_ratio
        loads = result.checkpoint_loads
    return [
        ("1st PC explained variance", f"{100 * ratio[0]:.2f} %"),
        ("2nd PC explained variance", f"{100 * ratio[1]:.2f} %"),
        ("PCA convention", "centered (reference)" if center else "uncentered, about θ_n"),
        ("epochs", f"{len(epochs)} ({epochs[0]} … {epochs[-1]})"),
        ("parameters", f"{space.type}, ignore={ignore}"),
        ("checkpoint loads", loads),
        ("PCA seconds", round(seconds, 3)),
        ("path x range", _span((float(coordinates[:, 0].min()), float(coordinates[:, 0].max())))),
        ("path y range", _span((float(coordinates[:, 1].min()), float(coordinates[:, 1].max())))),
    ]


def _reusable(session, dir_path: Path, projection: Path, epochs: list[int], ignore: str,
              center: bool) -> bool:
    """Whether this run resumes its own surface for the same path (then PCA is not redone)."""
    import h5py
    import numpy as np

    if session.existing is None or not dir_path.is_file() or not projection.is_file():
        return False
    with h5py.File(projection, "r") as f:
        return (np.asarray(f["epochs"][()]).tolist() == list(epochs)
                and str(f.attrs.get("ignore")) == ignore and bool(f.attrs.get("center")) == center)


def _refuse_overwrite(session) -> None:
    """A surface file that this run would not resume (not a grid result) is never replaced."""
    if not session.cfg.trajectory.surface or session.existing is not None:
        return
    path = session.run_dir / SURFACE_FILE
    if path.exists():
        raise LlvError(f"{path} exists but is not a surface this run can resume (no done mask): "
                       "move it away or pass another out=")


def _resumed_axes(existing: Path, box, grid, directions, margin: float) -> list[tuple]:
    """Rank 0, before any point is computed: the axes ``(min, max, num)`` of the surface file this
    run resumes, when they are this path's box at this resolution; else one line saying why not.

    The box comes from the path (the reused projection) and ``trajectory.margin``; the grid over
    it is :func:`llv.path_pca.box_grid`'s, widened so that θ_n is a grid point. A file written by
    an llv from before that widening holds the box itself (``num`` points from edge to edge): it
    resumes on its own grid, unchanged, instead of being refused after the probe or recomputed
    over another box.
    """
    import numpy as np

    from llv.grid import Axis, GridSpec
    from llv.storage.surface import SurfaceFile

    stored = SurfaceFile.open(existing)
    digest, mine = stored.attrs.get("direction_sha256"), directions.digest()
    if digest and str(digest) != mine:
        raise LlvError(f"cannot resume {existing}: it was computed along other directions than "
                       f"this run's (direction sha256 {str(digest)[:12]}… vs {mine[:12]}…): pass "
                       "another out= for a new trajectory")
    edge_to_edge = GridSpec(Axis(*box[0], grid.x.num), Axis(*box[1], grid.y.num))
    have = [stored.coordinates.get(name) for name in ("xcoordinates", "ycoordinates")]
    for candidate in (grid, edge_to_edge):
        wanted = [candidate.x.coordinates(), candidate.y.coordinates()]
        if (set(stored.coordinates) == {"xcoordinates", "ycoordinates"}
                and tuple(stored.shape) == (len(wanted[1]), len(wanted[0]))
                and all(h is not None and len(h) == len(w) and np.allclose(h, w, rtol=0, atol=1e-12)
                        for h, w in zip(have, wanted, strict=True))):
            if candidate is edge_to_edge:
                log.info(f"resuming {existing} on its own grid: the path's box from edge to edge, "
                         "as an earlier llv laid it out (θ_n need not be a grid point)")
            return [(a.min, a.max, a.num) for a in (candidate.x, candidate.y)]

    def described(axes) -> str:
        return " ".join(f"{n}={float(a[0]):.6g}:{float(a[-1]):.6g}:{len(a)}" for n, a in axes)

    theirs = described((n, a) for n, a in stored.coordinates.items())
    ours = described((("xcoordinates", grid.x.coordinates()), ("ycoordinates", grid.y.coordinates())))
    raise LlvError(f"cannot resume {existing}: its grid is {theirs}, this run's is {ours} (the "
                   f"path's box with trajectory.margin={margin:g} at "
                   f"{grid.x.num}x{grid.y.num}): pass another out= for a new trajectory")


def _coordinates(projection):
    """(coordinates (n+1, 2), epochs, explained-variance ratio) of a projection."""
    return projection.coordinates, projection.epochs, projection.explained_variance_ratio


def _short_epochs(epochs: list[int]) -> str:
    from llv.path_pca import _short

    return f"epochs {_short(list(epochs))}"


def _span(interval) -> str:
    return f"[{interval[0]:.4g}, {interval[1]:.4g}]"


def _plot(cfg, projection: Path) -> None:
    """The trajectory figure; a plotting problem never loses the results."""
    if not cfg.get("plot", True):
        return
    try:
        from llv.plot import make_plot

        make_plot("trajectory", [str(projection)])
    except Exception as exc:  # the results are safe on disk; say why there is no figure
        log.warning(f"could not draw the trajectory plot: {' '.join(str(exc).split())}")
