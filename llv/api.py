"""The public Python API: any ``nn.Module`` and any data in, result objects out. No config.

Every ``llv`` command computes through these functions (``llv/tasks/`` only turns a config
into their arguments and their results into files and figures), so a notebook and the command
line give the same numbers for the same seed.

The caller's model is never modified (weights, dtype, train/eval flags), and process-wide
precision flags are restored on return.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from llv import direction as dirs
from llv.batches import Batches, as_split_batches, split_batch, to_device
from llv.console import log, print_table, shows_output
from llv.engine import LoopStats, run_grid
from llv.errors import LlvError
from llv.evaluate import PRECISIONS, PointEvaluator, PointMap
from llv.grid import GridSpec, coefficient_rows
from llv.params import ParameterSpace, eval_mode, flatten, full_state, state_digest, values_of
from llv.results import Projection, Surface
from llv.spectrum import Hessian
from llv.storage.surface import SurfaceFile
from llv.summary import summarize

__all__ = ["directions", "hessian", "hessian_map", "interpolate", "surface", "trajectory"]

BN_MODES = ("stored", "recompute")
GridAxis = tuple[float, float, int] | str | None


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None and str(device) != "auto":
        return torch.device(device)
    if device is not None and str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _model_values(model: nn.Module, space: ParameterSpace, device: torch.device) -> dict:
    return {n: t.to(device) for n, t in zip(space.names, space.values(model))}


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise LlvError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")


def _check_whole(name: str, value, low: int = 0) -> int:
    """``value`` as an int of at least ``low``: seeds and counts are whole numbers (1.5 is not
    silently 1, -1 is not an opaque NumPy error)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise LlvError(f"{name} must be a whole number of at least {low}, got {value!r}")
    return int(value)


def _check_directions(value) -> None:
    if value is not None and not isinstance(value, (dirs.Directions, str, Path)):
        raise LlvError(f"directions must be llv.Directions (llv.directions(...)), a direction file's "
                       f"path or None, not {value.__class__.__name__}")


# ------------------------------------------------------------------------------ directions


def directions(model: nn.Module, kind: str = "random", *, ndim: int = 2, seed: int = 0,
               norm: str = "filter", ignore: str = "biasbn", type: str = "weights",
               ensemble: int = 1, orthogonalize: bool = False, target=None, path=None,
               data=None, loss="ce", tol: float = 1e-3, batch_size="auto",
               checkpoints: Sequence | None = None, center: bool = False,
               targets: Sequence | None = None) -> dirs.Directions:
    """Plot directions at ``model``'s parameters.

    Args:
        kind: ``random`` (seeded Gaussian, normalized by ``norm``/``ignore``), ``target``
            (x = θ_target − θ, where ``target`` is a model or a state dict), ``pca`` (the top
            two principal directions of ``checkpoints``, a training path ending at θ),
            ``hessian`` (the top and bottom Hessian eigenvectors of the loss on ``data``),
            ``plane`` (the plane through ``model`` and ``targets=(model_b, model_c)``: x = θ_B − θ_A,
            y = θ_C − θ_A; ``orthogonalize=True`` an orthonormal basis of it, the three models'
            coordinates in ``attrs["plane_coordinates"]``) or ``file`` (read ``path``, llv's or
            the reference's layout).
        ndim: 1 (x only) or 2 (x and y).
        type: ``weights`` (parameters) or ``states`` (the whole state dict, BN statistics too).

    Returns:
        :class:`llv.direction.Directions`; ``.save(path)`` writes the reference's layout and
        ``Directions.load(path, model)`` reads one back.

    >>> d = directions(torch.nn.Linear(3, 2), ndim=1, norm="layer")
    >>> d.ndim, d.attrs["kind"], [tuple(t.shape) for t in d.axes[0]]
    (1, 'random', [(2, 3), (2,)])
    """
    if ndim not in (1, 2):
        raise LlvError(f"ndim must be 1 or 2, got {ndim}")
    _check_whole("seed", seed)
    _check_whole("ensemble", ensemble, 1)
    space = ParameterSpace.of(model, type)
    values = space.values(model)
    if kind == "random":
        return dirs.make_random(space, values, ndim, seed=int(seed), norm=norm, ignore=ignore,
                                ensemble=int(ensemble), orthogonal=bool(orthogonalize))
    if kind == "target":
        if target is None:
            raise LlvError("kind='target' needs target= (a second model or its state dict)")
        axes = [dirs.target_direction(space, values, values_of(target, space))]
        if ndim == 2:
            axes.append(dirs.normalize(dirs.random_direction(space, dirs.axis_seed(int(seed), 1)),
                                       values, norm, ignore))
        return dirs.Directions(space, axes, ndim, {"kind": "target", "norm": "none", "ignore": ignore,
                                                   "type": space.type, "seed": int(seed)})
    if kind == "plane":
        if targets is None or len(targets) != 2:
            raise LlvError("kind='plane' needs targets=(model_b, model_c) (models or state dicts)")
        if ndim != 2:
            raise LlvError("kind='plane' spans two axes: ndim must be 2")
        vertices = [values_of(other, space) for other in targets]
        return dirs.plane_directions(space, values, *vertices, orthogonalize=bool(orthogonalize))
    if kind == "file":
        if path is None:
            raise LlvError("kind='file' needs path= (a direction file)")
        return dirs.load(path, space, ndim)
    if kind == "pca":
        if not checkpoints:
            raise LlvError("kind='pca' needs checkpoints= (the training path, θ_0 first)")
        from llv.path_pca import path_pca

        return path_pca(space, list(checkpoints), ignore=ignore, center=center, seed=int(seed)).directions
    if kind == "hessian":
        if data is None:
            raise LlvError("kind='hessian' needs data= (the loss's data)")
        return hessian_directions(Hessian(model, data, loss=loss, batch_size=batch_size), space,
                                  ndim, tol=tol, seed=int(seed))
    raise LlvError(f"unknown direction kind {kind!r}; valid: random, target, plane, pca, hessian, file")


def hessian_directions(h: Hessian, space: ParameterSpace, ndim: int, tol: float = 1e-3,
                       seed: int = 0) -> dirs.Directions:
    """The top eigenvector (x) and the bottom eigenvector (y) of ``h`` as plot directions."""
    top = h.eigenvalues(k=1, which="top", tol=tol, seed=seed, vectors=True)
    vectors, eigenvalues = [top.vectors[0]], [float(top.values[0])]
    if ndim == 2:
        bottom = h.eigenvalues(k=1, which="bottom", tol=tol, seed=seed, vectors=True)
        vectors.append(bottom.vectors[0])
        eigenvalues.append(float(bottom.values[0]))
    axes = []
    for vector in vectors:
        named = h.operator.unflatten(vector)
        axes.append([named[n].detach().to("cpu", torch.float32) if n in named else torch.zeros(shape)
                     for n, shape in zip(space.names, space.shapes)])
    log.info(f"Hessian directions: eigenvalues {', '.join(f'{v:.6g}' for v in eigenvalues)}")
    return dirs.Directions(space, axes, ndim, {"kind": "hessian", "norm": "none", "ignore": "none",
                                               "type": space.type, "seed": int(seed),
                                               "eigenvalues": np.asarray(eigenvalues)})


# ------------------------------------------------------------------------------ grids


def _open_file(comm, path, coordinates: dict, shape: tuple, metrics: list[str], provenance: dict,
               attrs: dict, resume: bool) -> SurfaceFile | None:
    """Rank 0: the result (the resumed file, checked, or a new one); other ranks: None."""
    if not comm.is_root:
        return None
    if path is not None and resume and Path(path).is_file():
        file = SurfaceFile.open(path)
        file.check_matches(coordinates, shape, metrics, provenance)
        log.info(f"resuming {file.path}: {int(file.done.sum())}/{file.num_points} points done")
        return file
    file = SurfaceFile(path, coordinates, shape, metrics, {**attrs, **provenance})
    file.flush(force=True)
    return file


def run_points(point_function: Callable, grid: GridSpec, directions_: dirs.Directions, metrics: list[str],
               *, comm=None, path=None, resume: bool = True, attrs: dict | None = None,
               provenance: dict | None = None, coordinate_names=("xcoordinates", "ycoordinates"),
               chunk_points: int = 64, stop_after: int | None = None, progress: bool = True,
               description: str = "points") -> tuple[SurfaceFile | None, LoopStats]:
    """Any point function over a grid of direction coefficients, through the grid runner.

    ``point_function(rows)`` takes a (k, D) tensor of coefficients over the directions' D axes
    and returns ``metric -> (k,)`` values. Returns the result file on rank 0 (None elsewhere)
    and the loop's statistics.
    """
    from llv.distributed import Comm

    comm = comm or Comm()
    if chunk_points < 1:
        raise LlvError(f"chunk_points must be at least 1, got {chunk_points}")
    if stop_after is not None and int(stop_after) < 0:
        raise LlvError(f"stop_after must be at least 0, got {stop_after}")
    ensemble = directions_.ensemble
    shape = grid.shape if ensemble == 1 else (ensemble, *grid.shape)
    coordinates = {coordinate_names[0]: grid.x.coordinates()}
    if grid.ndim == 2:
        coordinates[coordinate_names[1]] = grid.y.coordinates()
    provenance = {"direction_sha256": directions_.digest(), **(provenance or {})}
    attrs = {"world_size": comm.size, "dist_backend": comm.backend, **dict(attrs or {})}
    file = _open_file(comm, path, coordinates, shape, metrics, provenance, attrs, resume)

    def compute(indices: np.ndarray) -> dict[str, np.ndarray]:
        rows = torch.from_numpy(coefficient_rows(grid, ensemble, indices))
        return {k: np.asarray(v.detach().cpu() if torch.is_tensor(v) else v)
                for k, v in point_function(rows).items()}

    stats = run_grid(comm, file, compute, int(chunk_points), description=description,
                     stop_after=stop_after, show_progress=progress)
    return file, stats


def finish(file: SurfaceFile, stats: LoopStats, splits: Sequence[str], eps: float = 0.1,
           world_size: int = 1, backend: str = "none", report: bool = True) -> list:
    """Summary attrs of a finished grid (``summary_*``), timing; flushed. Returns table rows."""
    seconds = float(file.attrs.get("seconds") or 0.0) + stats.seconds
    file.set_attrs(seconds=seconds, world_size=world_size, dist_backend=backend,
                   points_per_second=stats.points_per_second, nonfinite_count=int(stats.nonfinite))
    names = list(file.coordinates)
    x, y = file.coordinates[names[0]], file.coordinates.get(names[1]) if len(names) > 1 else None
    ensemble = file.shape[0] if len(file.shape) > (1 if y is None else 2) else 1
    rows = []
    if file.done.all():
        for split in [s for s in splits if f"{s}_loss" in file.values]:
            summary = summarize(file.values, x, y, str(split), float(eps), ensemble)
            if file.attrs.get("approx") and f"{split}_n" in file.values:
                # fast mode: every number above is an estimate; say so, with its largest s.e.
                se, n = file.values[f"{split}_loss_se"], file.values[f"{split}_n"]
                summary[f"{split}_approximate_max_loss_se"] = float(np.nanmax(se)) if np.isfinite(se).any() else float("nan")
                summary[f"{split}_approximate_mean_examples"] = float(np.nanmean(n))
            file.set_attrs(**{f"summary_{k}": v for k, v in summary.items()})
            rows += [(k, v) for k, v in summary.items()]
    rows += [("points computed", stats.computed), ("points/s", stats.points_per_second),
             ("non-finite losses", stats.nonfinite)]
    file.flush(force=True)
    return rows


def surface(model: nn.Module, data, *, x: GridAxis = (-1, 1, 51), y: GridAxis = (-1, 1, 51),
            directions: dirs.Directions | str | Path | None = None, norm: str = "filter",
            ignore: str = "biasbn", seed: int = 0, loss="ce", bn: str = "stored",
            batch_size="auto", device=None, progress: bool = True, type: str = "weights",
            ensemble: int = 1, orthogonalize: bool = False, points_per_batch: int = 1,
            precision: str = "fp32", channels_last: bool | str = "auto", bn_data=None, accuracy=None,
            path: str | Path | None = None, resume: bool = True, comm=None, chunk_points: int = 64,
            stop_after: int | None = None, eps: float = 0.1, attrs: Mapping | None = None,
            probe: str | bool = False, recorded_metrics: Mapping | None = None,
            fold: bool = True, compile: str = "auto", approx: bool = False,
            target_se: float = 0.005, approx_rel_tol: float | None = None, approx_start: int = 128,
            auto: Mapping | None = None, streams: int | str = "auto",
            coordinate_names: tuple[str, str] = ("xcoordinates", "ycoordinates")) -> Surface | None:
    """The loss (and accuracy) surface f(α, β) = L(θ + αδ + βη) around ``model``'s parameters.

    Args:
        model: any ``nn.Module``; θ is its parameters (``type="states"``: its whole state
            dict). It is evaluated as in eval mode and never modified.
        data: a DataLoader (a reshuffling one is frozen to one order), a Dataset, an
            ``(inputs, targets)`` pair of tensors, an iterable of tuple or dict batches, or a
            mapping ``{"train": ..., "test": ...}`` (metrics are named ``<split>_loss``; one
            data set is the ``train`` split).
        x, y: ``(min, max, num)`` (or ``"min:max:num"``) along each direction; ``y=None``: 1-D.
            ``"auto"`` / ``"auto:num"``: the range where the loss first rises to a level, found
            before the grid by :func:`llv.extent`'s search on the first split (exact, on rank 0)
            and stored as ``auto_x``/``auto_y`` (resuming reuses the file's range).
        auto: options of that search: ``rise`` (default 2: the level is 2× the centre loss),
            ``add`` (the level is the centre loss + add), ``max_extent``, ``tol``, ``start``;
            ``symmetric`` (default True): ± the larger crossing on each axis, so that with an
            odd number of points the centre is a grid point (False: each side its own).
        directions: None (random, seeded by ``seed``, normalized by ``norm``/``ignore``), a
            :class:`llv.direction.Directions` (from :func:`directions`), or a direction file.
        loss: ``"ce"``, ``"mse"`` or a callable ``(outputs, batch) -> per-example losses``.
        bn: ``stored`` (the running statistics as trained) or ``recompute`` (re-estimated at
            every point on ``bn_data``, default the training data).
        batch_size: examples per forward pass for tensors and datasets (``"auto"``).
        device: where to compute (default: the model's device); the model is not moved.
        path: write the result file there as the run goes (and resume it when it exists and
            ``resume``); None keeps it in memory.
        comm: an :mod:`llv.distributed` communicator (points are sharded over its ranks;
            rank 0 gets the result, the others None).
        stop_after: stop after this many points (a later call with the same ``path`` resumes).
        probe: ``False``, ``True`` or ``"strict"``: pre-flight checks of the picture.
        fold: fold BatchNorm into the layer before it at every point (exact in eval mode;
            :mod:`llv.fold` says which pairs and why others are not).
        approx: the certified fast mode (:class:`llv.evaluate.Approximation`): each point on a
            seeded subset that grows until the standard error of its loss is at most
            ``target_se`` × the surface's range (and ``approx_rel_tol`` × the loss, if given);
            ``<split>_n`` and ``<split>_loss_se``/``<split>_acc_se`` record what each point used.
        compile: ``auto`` compiles the one-point forward with ``torch.compile`` when the grid
            has enough passes to repay the compile time (reported as ``compile_seconds``),
            ``on``/``off`` force it.
        streams: on a CPU, how many points (or one point's batches) run at once, each op on one
            thread; ``"auto"``: the torch thread count where that is safe (the file's
            ``streams`` and ``streams_reason`` say what ran). Values are unchanged: each point's
            arithmetic is the same, on one thread. With ``streams`` > 1, ``compile="auto"``
            does not compile.

    Returns:
        :class:`llv.results.Surface` (on rank 0).

    >>> import torch
    >>> net = torch.nn.Linear(4, 3)
    >>> s = surface(net, (torch.randn(20, 4), torch.randint(0, 3, (20,))), x=(-1, 1, 3), y=None,
    ...             progress=False)
    >>> s.x.tolist(), s["train_loss"].shape
    ([-1.0, 0.0, 1.0], (3,))
    """
    _check_choice("bn", bn, BN_MODES)
    _check_choice("precision", precision, PRECISIONS)
    precision = model_precision(model, precision)
    _check_whole("seed", seed)
    _check_whole("ensemble", ensemble, 1)
    _check_whole("points_per_batch", points_per_batch, 1)
    _check_directions(directions)
    grid = GridSpec.of(x, y)
    if grid.ndim == 0:
        raise LlvError("a surface needs at least an x axis: x=(min, max, num)")
    device = _device_of(model, device)
    float_dtype = torch.float64 if precision == "fp64" else None
    splits = as_split_batches(data, batch_size=batch_size, device=device, float_dtype=float_dtype)
    channels_last = channels_last_rule(channels_last, splits, device, model)
    if bn == "recompute":
        bn_batches = (as_split_batches(bn_data, batch_size=batch_size, device=device)["train"]
                      if bn_data is not None else splits[next(iter(splits))])
    else:
        bn_batches = None
    space = ParameterSpace.of(model, type)
    if directions is None:
        directions = dirs.make_random(space, space.values(model), grid.ndim, seed=int(seed), norm=norm,
                                      ignore=ignore, ensemble=int(ensemble), orthogonal=bool(orthogonalize))
    elif isinstance(directions, (str, Path)):
        directions = dirs.load(directions, space, grid.ndim)
    if directions.ndim != grid.ndim:
        raise LlvError(f"the directions have {directions.ndim} axes but the grid has {grid.ndim}")
    if list(directions.space.names) != list(space.names):
        raise LlvError("the directions are for other tensors than the model's "
                       f"{space.type} (direction type {directions.space.type})")
    if compile == "auto" and comm is not None and getattr(comm, "size", 1) > 1:
        compile = "off"  # each rank would time (and decide) on its own: ranks must agree to the bit
    approximation = None
    if approx:
        from llv.evaluate import Approximation

        approximation = Approximation(target_se, approx_rel_tol, approx_start, seed=int(seed),
                                      batch_size=min(b.stored[0][1].shape[0] if isinstance(b.stored[0], tuple)
                                                     else 128 for b in splits.values()))
    evaluator = PointEvaluator(model, space, _model_values(model, space, device), directions.flat(),
                               splits, loss=loss, points_per_batch=int(points_per_batch),
                               precision=precision, channels_last=channels_last, bn_data=bn_batches,
                               accuracy=accuracy, device=device, fold=fold, compile=compile,
                               expected_points=grid.num_points * directions.ensemble,
                               approx=approximation, streams=streams)
    extent_attrs = {}
    if grid.auto:
        grid, extent_attrs = _resolve_auto(partial(_exact_loss, evaluator, f"{next(iter(splits))}_loss"), grid,
                                           directions.flat().shape[0], path, resume, comm, auto, progress,
                                           next(iter(splits)))
    approx_attrs = {}
    if approximation is not None:
        pilots = _Pilots(evaluator, grid, directions.flat().shape[0])
        approx_attrs = _approximation_scale(evaluator, pilots, path, resume, splits)
    probe_attrs = {}
    if probe and str(probe).lower() not in ("false", "0", "off", "none"):
        from llv.probe import run_probe

        probe_attrs = run_probe(evaluator, directions, space, space.values(model),
                                {"metrics": dict(recorded_metrics or {})}, list(splits), None,
                                str(probe))
    from llv import __version__

    run_attrs = {"norm": directions.attrs.get("norm"), "type": space.type,
                 "kind": directions.attrs.get("kind"), "ignore": directions.attrs.get("ignore"),
                 "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable"),
                 "ensemble": directions.ensemble, "splits": ",".join(splits), "bn": bn,
                 "llv_version": __version__, "seconds": 0.0, "precision": precision,
                 "bn_folded": len(evaluator.folded.folded_pairs) if evaluator.folded else 0,
                 **_compile_attrs(evaluator.compile), **_stream_attrs(evaluator), **extent_attrs, **approx_attrs, **probe_attrs,
                 **dict(attrs or {})}
    run_attrs.setdefault("command", "surface")
    for key in ("plane_coordinates", "plane_labels"):  # figures mark the models a plane runs through
        if key in directions.attrs:
            run_attrs.setdefault(key, directions.attrs[key])
    before = flatten(space, space.values(model))
    if evaluator.variance_floors:
        run_attrs.update(_floored_range(evaluator, grid, directions.ensemble))
    if path is not None and "checkpoint_sha256" not in run_attrs:
        run_attrs["model_sha256"] = state_digest(model)  # a resume must continue the same model
    provenance = {k: v for k, v in run_attrs.items() if k.endswith("_sha256")}
    file, stats = run_points(evaluator.evaluate, grid, directions, evaluator.metrics,
                             comm=comm, path=path, resume=resume, attrs=run_attrs, provenance=provenance,
                             coordinate_names=coordinate_names, chunk_points=chunk_points,
                             stop_after=stop_after, progress=progress,
                             description=f"{run_attrs['command']} {grid.describe()}")
    if not _same_bits(before, flatten(space, space.values(model))):
        raise RuntimeError("the model's weights changed during evaluation (please report this)")
    if file is None:
        return None
    rows = finish(file, stats, list(splits), eps, getattr(comm, "size", 1), getattr(comm, "backend", "none"))
    if progress:
        print_table(f"{run_attrs['command']} summary", ["figure", "value"], rows)
        if not file.done.all():
            log.info(f"stopped with {int((~file.done).sum())} points to go"
                     + (f": resume with resume={Path(file.path).resolve()}" if file.path else ""))
    return Surface.of(file.to_surface(), directions)


def _hessian_estimate(h: Hessian, points: int, tol: float, seed: int) -> dict:
    """Products per point (a cold run at the centre) × the measured seconds of one product."""
    from llv.curvature import spectrum_ends

    op = h.operator
    began = time.perf_counter()
    ends = spectrum_ends(op, 1, 1, tol=tol, seed=seed)
    seconds = time.perf_counter() - began
    per = max(ends["num_hvp"], 1)
    hvp_seconds = seconds / per
    return {"num_hvp": per, "hvp_seconds": hvp_seconds, "seconds": points * per * hvp_seconds}


def _exact_loss(evaluator: PointEvaluator, key: str, row: torch.Tensor) -> float:
    """One point's ``key`` evaluated exactly (on the whole split, also in the fast mode)."""
    approximation, evaluator.approx = evaluator.approx, None
    try:
        return float(evaluator.evaluate(row)[key][0])
    finally:
        evaluator.approx = approximation


def _resolve_auto(loss_of_row: Callable[[torch.Tensor], float], grid: GridSpec, width: int, path,
                  resume: bool, comm, options: Mapping | None, progress: bool, split: str
                  ) -> tuple[GridSpec, dict]:
    """``grid`` with its ``auto`` axes' ranges: the file's when resuming one, else found by
    :func:`llv.auto_extent.search` on ``loss_of_row`` (a (1, width) row of coefficients → the
    loss; the first ``grid.ndim`` axes are searched), on rank 0 and broadcast."""
    from llv.auto_extent import search

    options = dict(options or {})
    symmetric = bool(options.pop("symmetric", True))
    unknown = set(options) - {"rise", "add", "max_extent", "tol", "start"}
    if unknown:
        raise LlvError(f"unknown auto option(s) {', '.join(sorted(unknown))}; "
                       "valid: rise, add, max_extent, tol, start, symmetric")
    found = None
    if comm is None or getattr(comm, "rank", 0) == 0:
        if path is not None and resume and Path(path).is_file():
            stored = SurfaceFile.open(path)
            ranges = [(float(c[0]), float(c[-1])) for c in stored.coordinates.values()]
            keep = {k: v for k, v in stored.attrs.items() if k.startswith("auto_")}
            found = (ranges, keep, f"automatic extent: resuming {path} over its stored range")
        else:
            def loss_at(coefficients) -> float:
                row = torch.zeros(1, width, dtype=torch.float64)
                row[0, :grid.ndim] = torch.tensor(coefficients, dtype=torch.float64)
                return loss_of_row(row)

            extent_ = search(loss_at, grid.ndim, **options)
            extent_.attrs.update(split=split, symmetric=symmetric)
            ranges = [(-max(-lo, hi), max(-lo, hi)) if symmetric else (lo, hi) for lo, hi in extent_.ranges]
            text = extent_.describe()
            if symmetric:
                text += "; the grid takes the larger side on both (symmetric, so the centre is a grid point)"
            found = (ranges, extent_.record(), text)
    if comm is not None and getattr(comm, "size", 1) > 1:
        found = comm.bcast(found)
    ranges, record, text = found
    if progress:
        log.info(text)
    return grid.resolve(ranges), record


#: The fast mode's range comes from the centre and corners, each evaluated on a growing subset
#: until its standard error is at most this share of the range found so far (capped at 4 ×
#: ``target_se``): the range then carries a few per cent of error, which moves every point's
#: stopping threshold by as much and no more.
PILOT_SE = 0.02


class _Pilots:
    """The fast mode's pilot points: the centre and the corners, whose losses give the surface's
    range (the scale of ``target_se``).

    They are estimated the way every point is, on growing seeded subsets, in rounds: first on
    ``eval.approx_start`` examples each, then each until its standard error is at most
    :data:`PILOT_SE` of the previous round's range, again until the range stops shrinking by
    more than half. A round continues the previous one's subsets (the running sums after each
    stage are kept: :meth:`llv.evaluate.Approximation.remember`), and so does the grid where a
    pilot is a grid point (the corners always, the centre when 0 is a coordinate): the grid
    applies its own stopping rule to it, like any point, but no example is forwarded twice.
    Exact pilots cost five whole passes, most of a coarse fast grid's cost. The subsets depend
    only on the seed and the coordinates, so every rank finds the same range and the same
    values, and a resumed run reads the range stored with the file.
    """

    def __init__(self, evaluator: PointEvaluator, grid: GridSpec, width: int):
        self.evaluator = evaluator
        xs = [grid.x.min, grid.x.max]
        ys = [grid.y.min, grid.y.max] if grid.ndim == 2 else [0.0]
        pilot = [(0.0, 0.0)] + [(x, y) for x in xs for y in ys]
        self.rows = torch.zeros(len(pilot), width, dtype=torch.float64)
        for i, (x, y) in enumerate(pilot):
            self.rows[i, 0] = x
            if grid.ndim == 2:
                self.rows[i, 1] = y
        evaluator.approx.remember(self.rows)  # the grid continues the corners' subsets
        self.reached = np.zeros(len(self.rows))  # examples forwarded at each pilot, every split

    def losses(self, key: str, scale: float, target_se: float) -> np.ndarray:
        """The pilots' ``key`` with every point stopping at standard error ``target_se × scale``
        (``scale=inf``: the first stage only)."""
        approximation = self.evaluator.approx
        saved = approximation.scale, approximation.target_se, approximation.rel_tol
        approximation.scale, approximation.target_se, approximation.rel_tol = scale, target_se, None
        try:
            values = self.evaluator.evaluate(self.rows)
        finally:
            approximation.scale, approximation.target_se, approximation.rel_tol = saved
        used = sum(values[name].cpu().numpy() for name in values if name.endswith("_n"))
        self.reached = np.maximum(self.reached, used)  # a later round continues an earlier one
        return values[key].cpu().numpy()

    @property
    def examples(self) -> int:
        """Examples forwarded to estimate the range (over every pilot and split)."""
        return int(self.reached.sum())

    def scale(self, key: str, rounds: int = 6) -> float:
        """The range of ``key`` over the pilot points (see the class docstring)."""
        target = min(PILOT_SE, 4 * self.evaluator.approx.target_se)
        scale = _range(self.losses(key, math.inf, target))
        for _ in range(rounds):
            if not scale > 0:
                break
            found = _range(self.losses(key, scale, target))
            shrank, scale = found < 0.5 * scale, found
            if not shrank:
                break
        return scale


def _range(losses: np.ndarray) -> float:
    """max − min of the finite values (their largest magnitude when they do not differ)."""
    finite = losses[np.isfinite(losses)]
    scale = float(finite.max() - finite.min()) if finite.size > 1 else 0.0
    if not scale > 0:
        scale = float(abs(finite).max()) if finite.size else 1.0
    return scale


def _approximation_scale(evaluator: PointEvaluator, pilots: _Pilots, path, resume: bool, splits) -> dict:
    """The fast mode's scale: the loss range over the centre and corners, estimated on subsets
    (or, when resuming, the scale the file was started with, so that the run makes the same
    choices)."""
    approximation = evaluator.approx
    spent = 0
    if path is not None and resume and Path(path).is_file():
        stored = SurfaceFile.open(path).attrs
        if stored.get("approx_scale") is not None:
            approximation.scale = float(stored["approx_scale"])
            spent = int(stored.get("approx_pilot_examples", 0))
    if approximation.scale is None:
        approximation.scale = pilots.scale(f"{next(iter(splits))}_loss")
        spent = pilots.examples
        log.info(f"approximate mode: loss range {approximation.scale:.4g} over the centre and corners "
                 f"(estimated on {spent} examples); each point stops when its standard error is at "
                 f"most {approximation.target_se * approximation.scale:.3g}")
    return {"approx": True, "approx_scale": approximation.scale, "target_se": approximation.target_se,
            "approx_rel_tol": approximation.rel_tol if approximation.rel_tol is not None else float("nan"),
            "approx_start": approximation.start, "approx_seed": approximation.seed,
            "approx_pilot_examples": spent}


def _compile_attrs(choice) -> dict:
    if choice is None:
        return {"compiled": False}
    if shows_output():  # a run too small to try compiling says why only with -v (attrs keep it)
        tried = choice.compiled or choice.compile_seconds
        (log.info if tried else log.debug)(f"compile: {choice.reason}")
    return {"compiled": bool(choice.compiled), "compile_seconds": float(choice.compile_seconds),
            "compile_reason": choice.reason}


def _stream_attrs(evaluator: PointEvaluator) -> dict:
    count = evaluator.streams.count if evaluator.streams is not None else 1
    if count > 1:
        log.debug(f"streams: {evaluator.streams_reason}")
    return {"streams": count, "streams_reason": evaluator.streams_reason}


def _floored_range(evaluator: PointEvaluator, grid: GridSpec, ensemble: int) -> dict:
    """Where BatchNorm running variances were held at their floor (extrapolated statistics)."""
    from llv.evaluate import floored_points

    rows = coefficient_rows(grid, ensemble, np.arange(grid.num_points * ensemble))
    hit = floored_points(evaluator.points, evaluator.variance_floors, torch.from_numpy(rows)).numpy()
    alphas = rows[hit, 0]
    if hit.any():
        log.info(f"BatchNorm running variances held at their floor at {int(hit.sum())} point(s), "
                 f"α in [{alphas.min():g}, {alphas.max():g}] (linear extrapolation would make them ≤ 0)")
    return {"bn_floored_points": int(hit.sum()),
            **({"bn_floored_alphas": np.asarray(alphas, dtype=np.float64)} if grid.ndim == 1 and ensemble == 1
               else {}),
            "bn_floored_min": float(alphas.min()) if hit.any() else float("nan"),
            "bn_floored_max": float(alphas.max()) if hit.any() else float("nan")}


def model_precision(model: nn.Module, precision: str) -> str:
    """The precision to evaluate ``model`` in: ``fp32`` (the default) means ``fp64`` for a model
    whose floating tensors are all float64; float16/bfloat16 models are refused with what to do
    (points are formed in float32 or float64; ``precision="bf16"`` autocasts a float32 model)."""
    dtypes = {t.dtype for t in full_state(model).values() if t.is_floating_point()}
    halves = sorted(str(d).removeprefix("torch.") for d in dtypes & {torch.float16, torch.bfloat16})
    if halves:
        raise LlvError(f"the model's tensors are {', '.join(halves)}: llv evaluates in float32 or float64 "
                       "(precision='bf16' autocasts a float32 model); pass model.float()")
    if precision == "fp32" and dtypes == {torch.float64}:
        return "fp64"
    return precision


def channels_last_rule(value, splits: Mapping[str, Batches], device: torch.device, model: nn.Module | None = None) -> bool:
    """``channels_last="auto"``: channels-last memory format for image batches of at least
    16×16 on the CPU, where it made a point 0.74-0.76× a bare NCHW pass against 0.95-0.99× in
    NCHW (ResNet-20/56 on 32×32 inputs, benchmarks/RESULTS.md); NCHW otherwise (small images
    such as 8×8 digits, GPUs: ``eval.channels_last=true`` there). A rule rather than a timing at
    set-up, so that every rank and every resumed run compute in the same layout and agree to
    the bit.

    With ``model``, ``auto`` also runs it once on two examples in that layout and keeps NCHW
    if that fails: a forward that flattens with ``.view`` cannot take channels-last input."""
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    if str(value) != "auto":
        raise LlvError(f"channels_last must be true, false or auto, got {value!r}")
    if torch.device(device).type != "cpu":
        return False
    shapes = [b.example_shape for b in splits.values()]
    if not all(len(s) == 3 and s[1] >= 16 and s[2] >= 16 for s in shapes):
        return False
    return model is None or _runs_channels_last(model, next(iter(splits.values())).stored[0], device)


def _runs_channels_last(model: nn.Module, batch, device) -> bool:
    """Whether ``model`` runs on the first two examples of ``batch`` in channels-last layout."""
    from torch.utils._pytree import tree_map

    few = tree_map(lambda t: t[:2] if torch.is_tensor(t) and t.dim() > 0 else t, batch)
    args, kwargs, _ = split_batch(to_device(few, device, None, True))
    try:
        with torch.no_grad(), eval_mode(model):
            model(*args, **kwargs)
    except RuntimeError:  # e.g. "view size is not compatible with input tensor's size and stride"
        return False
    return True


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal, NaN where NaN (a checkpoint may hold NaN weights; that is no change)."""
    return a.shape == b.shape and torch.equal(a.isnan(), b.isnan()) and torch.equal(
        a.nan_to_num(0.0), b.nan_to_num(0.0))


def interpolate(model_a: nn.Module, model_b: nn.Module | Mapping, data, *,
                alphas: GridAxis = (-0.5, 1.5, 401), type: str = "states", **options) -> Surface | None:
    """f(α) = L((1 − α)·θ_A + α·θ_B), the paper's linear interpolation (§5).

    With ``type="states"`` (the default) BatchNorm running statistics are interpolated too;
    ``bn="recompute"`` re-estimates them at every α instead. At α = 0 and α = 1 the loss is
    each model's own. Other options are :func:`surface`'s.

    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> data = (torch.randn(8, 2), torch.randint(0, 2, (8,)))
    >>> s = interpolate(a, b, data, alphas=(0, 1, 3), progress=False)
    >>> s.x.tolist()
    [0.0, 0.5, 1.0]
    """
    along = directions(model_a, "target", ndim=1, target=model_b, type=type,
                       ignore=options.pop("ignore", "biasbn"))
    attrs = {"command": "interpolate", **dict(options.pop("attrs", None) or {})}
    return surface(model_a, data, x=alphas, y=None, directions=along, type=type, attrs=attrs,
                   coordinate_names=("alphas", "ycoordinates"), **options)


def hessian(model: nn.Module, data, *, loss="ce", batch_size="auto", dtype: torch.dtype | None = None,
            device=None) -> Hessian:
    """The Hessian of the mean loss over ``data`` at ``model``'s parameters, matrix-free.

    Returns a :class:`llv.spectrum.Hessian` whose ``eigenvalues(k, which, tol)``,
    ``trace(probes)`` and ``density(runs, steps)`` return their values with the number of
    Hessian-vector products used and error estimates. Its loss is the mean of the same
    per-example losses as :func:`surface`, so dᵀHd equals the surface's curvature along d.

    >>> import torch
    >>> h = hessian(torch.nn.Linear(2, 1, bias=False), (torch.eye(2), torch.zeros(2, dtype=torch.long)),
    ...             loss="mse", dtype=torch.float64)
    >>> h.trace(probes=4).value  # H = 2/(N·C) XᵀX = I: trace 2 for any Rademacher probe
    2.0
    """
    return Hessian(model, data, loss=loss, batch_size=batch_size, dtype=dtype, device=device)


def hessian_map(model: nn.Module, data, *, x: GridAxis = (-1, 1, 21), y: GridAxis = (-1, 1, 21),
                directions: dirs.Directions | None = None, norm: str = "filter", ignore: str = "biasbn",
                seed: int = 0, loss="ce", batch_size="auto", tol: float = 1e-3, lanczos_seed: int = 0,
                warm_start: bool = True,
                dtype: torch.dtype | None = None, split: str = "train", path=None, resume: bool = True,
                comm=None, chunk_points: int = 64, stop_after: int | None = None, progress: bool = True,
                attrs: Mapping | None = None, auto: Mapping | None = None) -> Surface | None:
    """λmax and λmin of the Hessian at every point of the plane (paper §6): ``max_eig``,
    ``min_eig``, ``<split>_loss`` and the ``num_hvp`` each point took; the figure shows
    |λmin/λmax|.

    Before the grid starts, the time is estimated from one cold Lanczos run at the centre
    (its products × the measured cost of one product) and logged. With ``warm_start`` each
    point's Lanczos starts from the previous point's Ritz vectors (within a chunk of
    ``chunk_points``: chunks start cold, so results do not depend on the number of ranks).
    ``x``/``y`` may be ``"auto"`` as in :func:`surface` (the search runs on this loss).
    """
    _check_whole("seed", seed)
    _check_directions(directions)
    grid = GridSpec.of(x, y)
    space = ParameterSpace.of(model, "weights")
    if directions is None:
        directions = dirs.make_random(space, space.values(model), grid.ndim, seed=int(seed), norm=norm,
                                      ignore=ignore)
    base_h = Hessian(model, data, loss=loss, batch_size=batch_size, dtype=dtype)
    base = dict(zip(space.names, space.values(model)))
    points = PointMap(space, base, directions.flat(), base_h.operator.device, base_h.operator.dtype)
    metrics = ["max_eig", "min_eig", f"{split}_loss", "num_hvp"]
    from llv.curvature import HessianOperator, spectrum_ends

    extent_attrs = {}
    if grid.auto:
        def loss_of_row(row: torch.Tensor) -> float:
            state = {n: t[0] for n, t in points.tensors(row).items()}
            return HessianOperator.like(base_h.operator, state).loss_value()

        grid, extent_attrs = _resolve_auto(loss_of_row, grid, directions.flat().shape[0], path, resume, comm,
                                           auto, progress, split)

    estimate = _hessian_estimate(base_h, grid.num_points * directions.ensemble, tol, lanczos_seed)
    if progress:
        log.info(f"estimated time: {grid.num_points * directions.ensemble} points x ~{estimate['num_hvp']} "
                 f"Hessian-vector products (cold; warm starts use fewer) x {estimate['hvp_seconds']:.3g} s "
                 f"= {estimate['seconds']:.0f} s on this process")

    def point_function(rows: torch.Tensor) -> dict[str, np.ndarray]:
        out = {name: [] for name in metrics}
        start = None  # warm start from the previous point of the same chunk (chunks start cold,
        for row in rows:  # so every world size and chunking gives the same numbers)
            state = {n: t[0] for n, t in points.tensors(row[None]).items()}
            op = HessianOperator.like(base_h.operator, state)
            ends = spectrum_ends(op, 1, 1, tol=tol, seed=lanczos_seed, start=start if warm_start else None)
            start = ends["vectors"].sum(dim=0) if ends["vectors"] is not None else None
            out["max_eig"].append(ends["top"][0] if ends["converged"] else np.nan)
            out["min_eig"].append(ends["bottom"][0] if ends["converged"] else np.nan)
            out["num_hvp"].append(ends["num_hvp"])
            out[f"{split}_loss"].append(op.loss_value())
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}

    from llv import __version__

    run_attrs = {"command": "hessian", "norm": directions.attrs.get("norm"), "type": space.type,
                 "kind": directions.attrs.get("kind"), "ignore": directions.attrs.get("ignore"),
                 "loss": loss if isinstance(loss, str) else "callable", "hessian_tol": float(tol),
                 "warm_start": bool(warm_start), "estimated_hvp_per_point": estimate["num_hvp"],
                 "hvp_seconds": estimate["hvp_seconds"],
                 "llv_version": __version__, "seconds": 0.0, "ensemble": directions.ensemble,
                 **extent_attrs, **dict(attrs or {})}
    if path is not None and "checkpoint_sha256" not in run_attrs:
        run_attrs["model_sha256"] = state_digest(model)
    provenance = {k: v for k, v in run_attrs.items() if k.endswith("_sha256")}
    file, stats = run_points(point_function, grid, directions, metrics, comm=comm, path=path,
                             resume=resume, attrs=run_attrs, provenance=provenance,
                             chunk_points=chunk_points,
                             stop_after=stop_after, progress=progress,
                             description=f"hessian {grid.describe()}")
    if file is None:
        return None
    rows = finish(file, stats, [], 0.1, getattr(comm, "size", 1), getattr(comm, "backend", "none"))
    if progress:
        print_table("hessian map summary", ["figure", "value"], rows)
    return Surface.of(file.to_surface(), directions)


# ------------------------------------------------------------------------------ trajectories


def trajectory(run_dir_or_checkpoints, model: nn.Module, *, ignore: str = "biasbn",
               type: str = "weights", center: bool = False, epochs: Sequence[int] | None = None,
               memory_bytes: int = 2 * 1024**3, seed: int = 0, lr_drops: Sequence[int] = ()):
    """PCA of a training path (paper §7): the top-2 directions, explained variance and the path
    projected on them.

    Args:
        run_dir_or_checkpoints: a ``llv train`` run directory (its ``checkpoints/epoch_NNN.pt``
            and ``final.pt``) or a list of checkpoint files θ_0 … θ_n (θ_n last).
        model: a model of the checkpoints' architecture (its tensors give the names and
            shapes; its values are not used).
        epochs: a run's epochs to use (default: every saved one).

    Returns:
        ``(projection, directions)``: a :class:`llv.results.Projection` (``x``, ``y``,
        ``epochs``, ``explained_variance_ratio``, θ_n at the origin) and the
        :class:`llv.direction.Directions` (kind ``pca``) to compute a surface along.
    """
    from llv.path_pca import choose_epochs, lr_drop_epochs, path_pca
    from llv.storage import trainrun
    started = time.perf_counter()
    if isinstance(run_dir_or_checkpoints, (str, Path)) and not Path(run_dir_or_checkpoints).is_dir():
        raise LlvError(f"{run_dir_or_checkpoints} is not a run directory: pass a `llv train` run "
                       "directory or a list of checkpoint files θ_0 … θ_n")
    if isinstance(run_dir_or_checkpoints, (str, Path)):
        run_dir = Path(run_dir_or_checkpoints)
        points = choose_epochs(run_dir, epochs)
        paths = [p for _, p in points]
        epoch_numbers = [e for e, _ in points]
        drops = lr_drop_epochs(trainrun.read_metrics(run_dir)) if not len(lr_drops) else np.asarray(lr_drops)
    else:
        paths = list(run_dir_or_checkpoints)
        if not all(isinstance(p, (str, Path)) for p in paths):
            raise LlvError("llv.trajectory takes checkpoint files, read one at a time to keep memory "
                           "small; torch.save state dicts first (got "
                           f"{next(p for p in paths if not isinstance(p, (str, Path))).__class__.__name__})")
        epoch_numbers = list(range(len(paths)))
        drops = np.asarray(lr_drops, dtype=np.int64)
    space = ParameterSpace.of(model, type)
    result = path_pca(space, paths, ignore=ignore, center=center, memory_bytes=memory_bytes, seed=seed)
    projection = Projection(None, result.coordinates[:, 0], result.coordinates[:, 1],
                            np.asarray(epoch_numbers), np.asarray(drops, dtype=np.int64),
                            np.asarray(result.explained_variance_ratio), None,
                            {"ignore": ignore, "type": space.type, "center": bool(center),
                             "pca_seconds": time.perf_counter() - started,
                             "checkpoint_loads": result.checkpoint_loads,
                             "singular_values": np.asarray(result.singular_values)})
    return projection, result.directions


def point_metrics(model: nn.Module, data, *, loss="ce", device=None, precision: str = "fp32",
                  batch_size="auto", accuracy=None) -> dict[str, float]:
    """Loss (and accuracy, its standard error) of ``model`` itself on each split of ``data``:
    the centre of any surface.

    >>> import torch
    >>> net = torch.nn.Linear(2, 2, bias=False)
    >>> _ = torch.nn.init.zeros_(net.weight)  # every class scores 0: argmax is class 0
    >>> point_metrics(net, (torch.ones(4, 2), torch.zeros(4, dtype=torch.long)))["train_acc"]
    100.0
    """
    precision = model_precision(model, precision)
    device = _device_of(model, device)
    splits = as_split_batches(data, batch_size=batch_size, device=device,
                              float_dtype=torch.float64 if precision == "fp64" else None)
    space = ParameterSpace.of(model, "weights")
    zero = torch.zeros(1, space.numel)
    evaluator = PointEvaluator(model, space, _model_values(model, space, device), zero, splits,
                               loss=loss, precision=precision, accuracy=accuracy, device=device)
    return {k: float(v[0]) for k, v in evaluator.evaluate(torch.zeros(1, 1)).items()}


# ------------------------------------------------------------------------------ curves and extents


def connect(model_a: nn.Module, model_b: nn.Module | Mapping, data, *, path: str = "bezier",
            epochs: int = 10, lr: float = 0.01, batch_size="auto", seed: int = 0, points: int = 61,
            bn: str = "recompute", checkpoint_dir: str | Path | None = None, loss="ce", **options):
    """A low-loss curve between two models (Garipov et al. 2018) beside the straight line.

    Trains the control point θ_M of a quadratic Bézier curve (``path="bezier"``) or a
    one-bend polygonal chain (``"polychain"``), then evaluates both paths at ``points`` t values
    in [0, 1] with BatchNorm statistics recomputed at each t. Other options (``optimizer``,
    ``momentum``, ``weight_decay``, ``device``, ``precision``, ``accuracy``, ``progress``) are
    :func:`llv.curves.connect`'s.

    Returns:
        :class:`llv.curves.Connection`: ``t``, ``curve``/``line`` metrics along t,
        ``curve_barrier``/``line_barrier``, the ``control`` point; ``.save``, ``.plot``,
        ``.plane(model_a, model_b)`` (the plane through A, B, M with both paths).
    """
    from llv.curves import connect as train_curve

    return train_curve(model_a, model_b, data, path=path, epochs=epochs, lr=lr, batch_size=batch_size,
                       seed=seed, points=points, bn=bn, checkpoint_dir=checkpoint_dir, loss=loss,
                       **options)


def extent(model: nn.Module, data, directions, *, rise: float | None = 2.0, add: float | None = None,
           max_extent: float = 10.0, tol: float = 1e-2, **options):
    """The range along ± each axis of ``directions`` where the loss first rises to ``rise`` ×
    the centre loss (or by ``add``), found by doubling then bisection; in the directions' units.
    Other options (``start``, ``loss``, ``batch_size``, ``device``, ``bn``, ``split``,
    ``precision``, ``progress``) are :func:`llv.auto_extent.extent`'s.

    Returns:
        :class:`llv.auto_extent.Extent`: ``ranges`` per axis, ``.grid(num)`` for :func:`surface`,
        ``.record()`` the attributes to store.
    """
    from llv.auto_extent import extent as search_extent

    return search_extent(model, data, directions, rise=rise, add=add, max_extent=max_extent, tol=tol,
                         **options)
