"""The Hessian of the training loss at a point and over a grid (paper §6), and Hessian directions.

The loss is the mean over ``hessian.max_samples`` examples of ``eval.splits[0]`` with BatchNorm in
eval mode, using the same per-example loss as surfaces (:func:`llv.evaluate.per_sample_loss`),
with respect to every parameter. The math lives in :mod:`llv.curvature`; this module points it at
a session's model, data and grid.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from llv import __version__
from llv import directions as dirs
from llv.config import GridSpec, to_yaml
from llv.console import LlvError, log, print_table
from llv.curvature import (
    HessianOperator,
    bottom_eigenpairs,
    extreme_eigenvalues,
    hutchinson_trace,
    smooth_density,
    spectral_density,
    top_eigenpairs,
)
from llv.evaluate import PointMap, per_sample_loss
from llv.params import ParameterSpace
from llv.session import Session

FILE = "hessian.h5"
DTYPES = {"float32": None, "float64": torch.float64}


def operator_at(session: Session, state: dict[str, torch.Tensor] | None = None) -> HessianOperator:
    """The Hessian operator of the session's training loss at ``state`` (default: the checkpoint)."""
    cfg, h = session.cfg, session.cfg.hessian
    if str(h.dtype) not in DTYPES:
        raise LlvError(f"unknown hessian.dtype '{h.dtype}'; valid: {', '.join(DTYPES)}")
    data = session.data(str(cfg.eval.splits[0]), h.get("max_samples"))
    loss = str(cfg.loss)
    return HessianOperator(session.model, data.inputs, data.targets, state=state,
                           loss=lambda outputs, targets: per_sample_loss(outputs, targets, loss).sum(),
                           batch_size=session.batch_size(h.batch_size), dtype=DTYPES[str(h.dtype)])


def analyse_point(session: Session) -> dict:
    """λmax, λmin, top-k, trace and spectral density at the checkpoint, with HVP counts; with
    ``sharpness.enabled`` (default) also :func:`llv.sharpness.measure_point`'s measures and gap."""
    h = session.cfg.hessian
    op = operator_at(session)
    result = {"loss": op.loss_value(), "dimension": op.n}
    timings = {}
    start = time.perf_counter()
    ends = extreme_eigenvalues(op, tol=float(h.tol), seed=int(session.cfg.seed))
    timings["extremes"] = time.perf_counter() - start
    result.update(lambda_max=ends["lambda_max"], lambda_min=ends["lambda_min"], num_hvp_extremes=ends["num_hvp"])
    start = time.perf_counter()
    top, _, used = top_eigenpairs(op, k=min(int(h.top_k), op.n), tol=float(h.tol), seed=int(session.cfg.seed))
    timings["top_k"] = time.perf_counter() - start
    result.update(eigenvalues=np.asarray(top), num_hvp_top_k=used)
    start = time.perf_counter()
    trace = hutchinson_trace(op, probes=int(h.trace_probes), seed=int(session.cfg.seed))
    timings["trace"] = time.perf_counter() - start
    result.update(trace=trace["trace"], trace_stderr=trace["stderr"], num_hvp_trace=trace["num_hvp"])
    start = time.perf_counter()
    density = spectral_density(op, runs=int(h.density_runs), steps=int(h.density_steps), seed=int(session.cfg.seed))
    timings["density"] = time.perf_counter() - start
    nodes, weights = density["nodes"], density["weights"]
    spread = float(nodes.max() - nodes.min()) or max(abs(float(nodes.max())), 1.0)
    sigma = float(h.density_sigma) * spread
    grid = np.linspace(nodes.min() - 5 * sigma, nodes.max() + 5 * sigma, 1000)
    result.update(density_nodes=nodes, density_weights=weights, density_grid=grid,
                  density=smooth_density(nodes, weights, grid, sigma), density_sigma=sigma,
                  num_hvp_density=density["num_hvp"])
    sharpness = session.cfg.get("sharpness")
    if sharpness is not None and sharpness.get("enabled", True):
        from llv.sharpness import measure_point

        measured = measure_point(session, lambda state=None: operator_at(session, state))
        timings.update(measured.pop("seconds"))
        result.update(measured)
    result["seconds"] = timings
    return result


def write_point_file(session: Session, result: dict, path: Path) -> Path:
    """``hessian.h5`` for a point: eigenvalues and density as datasets, scalars as attrs."""
    import h5py

    cfg = session.cfg
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    arrays = ("eigenvalues", "density_nodes", "density_weights", "density_grid", "density")
    with h5py.File(tmp, "w") as f:
        for name in arrays:
            f.create_dataset(name, data=np.asarray(result[name], dtype=np.float64))
        for key, value in result.items():
            if key not in arrays and key != "seconds":
                f.attrs[key] = value
        for key, value in result["seconds"].items():
            f.attrs[f"seconds_{key}"] = value
        f.attrs.update({"command": "hessian", "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
                        "checkpoint": str(session.checkpoint), "checkpoint_sha256": session.checkpoint_sha256,
                        "split": str(cfg.eval.splits[0]), "loss_name": str(cfg.loss),
                        "config": to_yaml(cfg), "llv_version": __version__})
    os.replace(tmp, path)
    return path


def report_point(result: dict) -> None:
    rows = [
        ("loss", result["loss"], ""),
        ("λmax", result["lambda_max"], result["num_hvp_extremes"]),
        ("λmin", result["lambda_min"], "(same run)"),
        ("|λmin/λmax|", abs(result["lambda_min"] / result["lambda_max"]) if result["lambda_max"] else float("nan"), ""),
        ("top-k", ", ".join(f"{v:.6g}" for v in result["eigenvalues"]), result["num_hvp_top_k"]),
        ("trace (Hutchinson)", f"{result['trace']:.6g} ± {result['trace_stderr']:.2g}", result["num_hvp_trace"]),
        ("density (SLQ)", f"{result['density_nodes'].shape[0]} runs × {result['density_nodes'].shape[1]} steps",
         result["num_hvp_density"]),
    ]
    print_table("Hessian at the checkpoint", ["figure", "value", "Hessian-vector products"], rows)
    if "epsilon_sharpness" in result:
        from llv.sharpness import report_sharpness

        report_sharpness(result)


# ------------------------------------------------------------------------------ over a grid


def map_point_function(session: Session, space: ParameterSpace, directions: dirs.Directions):
    """rows -> ``max_eig``, ``min_eig`` and the loss at each point (one Lanczos run per point)."""
    base = dict(zip(space.names, space.values(session.model)))
    points = PointMap(space, base, directions.flat(), session.device)
    split = str(session.cfg.eval.splits[0])
    tol, seed = float(session.cfg.hessian.tol), int(session.cfg.seed)

    metrics = ["max_eig", "min_eig", f"{split}_loss"]

    def point_function(rows: torch.Tensor) -> dict[str, np.ndarray]:
        out = {name: [] for name in metrics}
        for row in rows:
            state = {n: t[0] for n, t in points.tensors(row[None]).items()}
            op = operator_at(session, state)
            ends = extreme_eigenvalues(op, tol=tol, seed=seed)
            out["max_eig"].append(ends["lambda_max"])
            out["min_eig"].append(ends["lambda_min"])
            out[f"{split}_loss"].append(op.loss_value())
        return {k: np.asarray(v) for k, v in out.items()}

    return point_function, metrics


def compute_map(session: Session, grid: GridSpec):
    """|λmin/λmax| data over the plane: ``max_eig`` and ``min_eig`` at every grid point."""
    from llv.surface import compute_grid, grid_directions

    space, directions, dir_file = grid_directions(session, grid)
    point_function, metrics = map_point_function(session, space, directions)
    return compute_grid(session, grid, space, directions, dir_file, metrics, point_function, FILE,
                        extra_attrs={"hessian_tol": float(session.cfg.hessian.tol),
                                     "hessian_max_samples": str(session.cfg.hessian.get("max_samples"))})


# ------------------------------------------------------------------------------ plot directions


def hessian_directions(session: Session, space: ParameterSpace, values, ndim: int) -> dirs.Directions:
    """The top eigenvector (x) and the bottom eigenvector (y) of the Hessian at the checkpoint."""
    op = operator_at(session)
    tol, seed = float(session.cfg.hessian.tol), int(session.cfg.seed)
    top, top_vectors, _ = top_eigenpairs(op, k=1, tol=tol, seed=seed)
    vectors, eigenvalues = [top_vectors[0]], [float(top[0])]
    if ndim == 2:
        bottom, bottom_vectors, _ = bottom_eigenpairs(op, k=1, tol=tol, seed=seed)
        vectors.append(bottom_vectors[0])
        eigenvalues.append(float(bottom[0]))
    axes = []
    for vector in vectors:
        named = op.unflatten(vector)
        axes.append([named[n].detach().to("cpu", torch.float32) if n in named else torch.zeros(shape)
                     for n, shape in zip(space.names, space.shapes)])
    log.info(f"Hessian directions: eigenvalues {', '.join(f'{v:.6g}' for v in eigenvalues)}")
    return dirs.Directions(space, axes, ndim, {"kind": "hessian", "norm": "none", "ignore": "none",
                                               "type": space.type, "seed": seed,
                                               "eigenvalues": np.asarray(eigenvalues)})


# ------------------------------------------------------------------------------ cross-check


def directional_curvatures(session: Session, directions: dirs.Directions, split: str) -> list[float]:
    """dᵀHd for every axis of ``directions`` on the surface's own data and loss (one HVP each)."""
    data = session.eval_data()[split]
    loss = str(session.cfg.loss)
    op = HessianOperator(session.model, data.inputs, data.targets,
                         loss=lambda outputs, targets: per_sample_loss(outputs, targets, loss).sum(),
                         # two products only: small chunks keep the double-backward graph (the
                         # run's memory peak at 128 examples, benchmarks/) small at no real cost
                         batch_size=min(session.batch_size(session.cfg.eval.batch_size), 32),
                         dtype=torch.float64 if str(session.cfg.eval.precision) == "fp64" else None)
    names = directions.space.names
    curvatures = []
    for axis in directions.axes:
        by_name = dict(zip(names, axis))
        v = op.flatten({n: by_name[n].to(op.device, op.dtype) for n in op.wrt})
        curvatures.append(float(v @ op.matvec(v)))
    return curvatures
