"""``llv hessian``: eigenvalues, trace and density at the checkpoint; a |λmin/λmax| map with a grid.

The loss is the mean over ``hessian.max_samples`` examples of ``eval.splits[0]`` (BatchNorm as in
eval mode) of the same per-example loss as surfaces, with respect to every parameter. The math
is :class:`llv.spectrum.Hessian` (``llv.hessian(model, data)``) and :func:`llv.api.hessian_map`.
"""

from __future__ import annotations

import math
import time

import torch

from llv import __version__, api
from llv.config import GridSpec, to_yaml
from llv.console import LlvError, log, print_table
from llv.spectrum import COMPUTE
from llv.storage import hessian as hessian_file
from llv.tasks._grid import (
    auto_options,
    check_inputs,
    grid_directions,
    hessian_at,
    log_repeat_line,
    plot_result,
    run_attrs,
)
from llv.tasks.session import Session, running

FILE = hessian_file.FILE


def run(cfg):
    """Write ``hessian.h5`` (a point, or ``max_eig``/``min_eig`` over ``grid``); return its path.

    A grid run is resumed like a surface (``resume=FILE`` or an ``out=`` holding one); a point
    file is recomputed.
    """
    with running(cfg, FILE, prepare=_prepare) as session:
        cfg = session.cfg
        grid = GridSpec.from_cfg(cfg.grid)
        if grid.ndim:
            result = compute_map(session, grid)
            plot_result(session, result, "hessian")
            return result.path if result is not None else None
        if not session.is_root:
            return None
        result = analyse_point(session)
        path = hessian_file.write(session.run_dir / FILE, result, point_attrs(session))
        report_point(result)
        log.info(f"wrote {path}")
        if cfg.get("plot", True) and "density" in result:
            try:
                from llv.plot import make_plot

                make_plot("spectrum", [str(path)])
            except Exception as exc:  # results are saved; a figure problem is only a warning
                log.warning(f"could not draw the spectrum plot: {' '.join(str(exc).split())}")
        return path


def _prepare(cfg, run_dir) -> None:
    """A grid run reads directions like a surface; a point reads nothing else."""
    if GridSpec.from_cfg(cfg.grid).ndim:
        check_inputs(cfg, run_dir)


def analyse_point(session: Session) -> dict:
    """λmax, λmin, top-k, trace and spectral density at the checkpoint, with HVP counts; with
    ``sharpness.enabled`` (default) also the sharpness measures and the generalization gap."""
    cfg, h = session.cfg, session.cfg.hessian
    hessian = hessian_at(session)
    result = hessian.analyse(tol=float(h.tol), top_k=int(h.top_k), trace_probes=int(h.trace_probes),
                             density_runs=int(h.density_runs), density_steps=int(h.density_steps),
                             density_sigma=float(h.density_sigma), seed=int(cfg.seed),
                             compute=[c for c in h.get("compute", COMPUTE) if c != "sharpness"])
    sharpness = cfg.get("sharpness")
    if (sharpness is not None and sharpness.get("enabled", True)
            and "sharpness" in h.get("compute", COMPUTE)):
        from llv.sharpness import measure_point

        d = cfg.direction
        began = time.perf_counter()
        splits = split_metrics(session)
        result["seconds"]["generalization_gap"] = time.perf_counter() - began
        measured = measure_point(
            lambda state=None: hessian_at(session, state).operator, session.model, splits,
            eps=float(sharpness.eps), rho=float(sharpness.rho), eta=float(sharpness.get("eta", 0.01)),
            radius=float(sharpness.radius), directions=int(sharpness.directions),
            steps=int(sharpness.get("steps", 20)), restarts=int(sharpness.get("restarts", 2)),
            seed=int(cfg.seed), direction_seed=int(d.seed), norm=str(d.norm), ignore=str(d.ignore),
            type=str(d.type), device=session.device)
        result["seconds"].update(measured.pop("seconds"))
        result.update(measured)
    return result


def split_metrics(session: Session) -> dict[str, float]:
    """Loss and accuracy of the checkpoint on the train and test splits (``eval.max_samples``), as
    ``llv surface eval.splits=[train,test]`` gives them at α = 0; NaN for a missing split."""
    out = {}
    e = session.cfg.eval
    for split in ("train", "test"):
        try:
            data = {split: session.batches(split, e.max_samples, e.batch_size)}
        except (LlvError, FileNotFoundError, KeyError, ValueError) as exc:
            log.warning(f"sharpness: no {split} split for the generalization gap ({exc})")
            out.update({f"{split}_loss": math.nan, f"{split}_acc": math.nan})
            continue
        metrics = api.point_metrics(session.model, data, loss=str(session.cfg.loss),
                                    device=session.device, precision=str(e.precision))
        out.update({f"{split}_loss": metrics[f"{split}_loss"],
                    f"{split}_acc": metrics.get(f"{split}_acc", math.nan)})
    return out


def point_attrs(session: Session) -> dict:
    cfg = session.cfg
    return {"command": "hessian", "model": str(cfg.model.name), "dataset": str(cfg.dataset.name),
            "checkpoint": str(session.checkpoint), "checkpoint_sha256": session.checkpoint_sha256,
            "split": str(cfg.eval.splits[0]), "loss_name": str(cfg.loss),
            "config": to_yaml(cfg), "llv_version": __version__}


def report_point(result: dict) -> None:
    if "lambda_max" not in result or "trace" not in result or "density_nodes" not in result:
        rows = [("loss", result["loss"], "")]
        if "lambda_max" in result:
            rows += [("λmax", result["lambda_max"], result["num_hvp_extremes"]),
                     ("λmin", result["lambda_min"], "(same run)")]
        if "eigenvalues" in result:
            rows.append(("top-k", ", ".join(f"{v:.6g}" for v in result["eigenvalues"]),
                         result.get("num_hvp_top_k", "")))
        if "trace" in result:
            rows.append(("trace (Hutchinson)", f"{result['trace']:.6g} ± {result['trace_stderr']:.2g}",
                         result["num_hvp_trace"]))
        print_table("Hessian at the checkpoint", ["figure", "value", "Hessian-vector products"], rows)
        return
    rows = [
        ("loss", result["loss"], ""),
        ("λmax", result["lambda_max"], result["num_hvp_extremes"]),
        ("λmin", result["lambda_min"], "(same run)"),
        ("|λmin/λmax|", abs(result["lambda_min"] / result["lambda_max"]) if result["lambda_max"] else float("nan"), ""),
        ("top-k", ", ".join(f"{v:.6g}" for v in result["eigenvalues"]),
         "(same run)" if result.get("shared_krylov") else result["num_hvp_top_k"]),
        ("trace (Hutchinson)", f"{result['trace']:.6g} ± {result['trace_stderr']:.2g}", result["num_hvp_trace"]),
        ("density (SLQ)", f"{result['density_nodes'].shape[0]} runs × {result['density_nodes'].shape[1]} steps",
         result["num_hvp_density"]),
    ]
    print_table("Hessian at the checkpoint", ["figure", "value", "Hessian-vector products"], rows)
    if "epsilon_sharpness" in result:
        from llv.sharpness import report_sharpness

        report_sharpness(result)


def compute_map(session: Session, grid: GridSpec):
    """|λmin/λmax| data over the plane: ``max_eig`` and ``min_eig`` at every grid point."""
    cfg, h = session.cfg, session.cfg.hessian
    space, directions, dir_file = grid_directions(session, grid)
    split = str(cfg.eval.splits[0])
    data = session.batches(split, h.get("max_samples"), h.batch_size)
    dtype = {"float32": None, "float64": torch.float64}[str(h.dtype)]
    result = api.hessian_map(
        session.model, data, x=grid.x, y=grid.y, directions=directions, loss=str(cfg.loss),
        tol=float(h.tol), lanczos_seed=int(cfg.seed), dtype=dtype, split=split,
        warm_start=bool(h.get("warm_start", True)),
        path=session.run_dir / FILE, resume=session.existing is not None, comm=session.comm,
        chunk_points=int(cfg.eval.chunk_points), stop_after=cfg.get("stop_after_points"),
        attrs={**run_attrs(session, directions, dir_file), "hessian_max_samples": str(h.get("max_samples"))},
        auto=auto_options(cfg))
    log_repeat_line(grid, result)
    return result



