"""Hessian: λmax and λmin to 1e-3 relative, llv's Lanczos against PyHessian's power iteration.

Both sides multiply with the same :class:`llv.curvature.HessianOperator` (ResNet-8 briefly
trained on the digits, the Hessian of the training loss on a subset), so the comparison is of
the algorithms alone, in Hessian-vector products (HVPs) and in time.

Power iteration is PyHessian's ``hessian.eigenvalues`` (amirgholami/PyHessian): a Gaussian start
normalized as ``v / (‖v‖ + 1e-6)``, the Rayleigh quotient ``vᵀHv`` each step, stop when it changes
by less than ``tol`` relative (``|λ_prev − λ| / (|λ_prev| + 1e-6) < tol``), at most 100 steps.
PyHessian has no λmin; the usual completion, implemented here, is the same iteration on
``H − λmax I`` (its dominant eigenvalue is λmin − λmax). Both are checked against a tight
Lanczos run (tol 1e-6), and PyHessian's trace rule (stop when the running Hutchinson mean changes
by less than 1e-3 relative) is compared with llv's fixed-probe estimate and its standard error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from benchmarks.common import (
    Section,
    Side,
    Target,
    build,
    resolve_batch_size,
    side_by_side,
    table,
    timed,
)

#: ``max_iter``: PyHessian's default cap per eigenvalue; ``oracle_cap``: the cap of the oracle run
FULL = {"images": 256, "epochs": 8, "repeats": 1, "probes": 50, "max_iter": 100, "oracle_cap": 250}
QUICK = {"images": 32, "epochs": 1, "repeats": 1, "probes": 6, "max_iter": 15, "oracle_cap": 15}
TOL = 1e-3


def power_iteration(
    matvec,
    n: int,
    dtype,
    device,
    max_iter: int = 100,
    tol: float = TOL,
    shift: float = 0.0,
    seed: int = 0,
    target: float | None = None,
) -> tuple[float, int]:
    """PyHessian's power iteration on ``H − shift·I``; returns (eigenvalue, products used).

    With ``target`` (an eigenvalue of H known in advance), PyHessian's rule is replaced by an
    oracle: stop as soon as the estimate + shift is within ``tol`` of it, relative, which is the
    best any stopping rule could do.
    """
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(n, generator=generator, dtype=torch.float64).to(device, dtype)
    v = v / (v.norm().item() + 1e-6)
    eigenvalue, used = None, 0
    for _ in range(max_iter):
        hv = matvec(v)
        used += 1
        if shift:
            hv = hv - shift * v
        current = torch.dot(hv, v).item()
        v = hv / (hv.norm().item() + 1e-6)
        if target is not None:
            eigenvalue = current
            if abs(current + shift - target) <= tol * abs(target):
                break
        elif eigenvalue is None:
            eigenvalue = current
        elif abs(eigenvalue - current) / (abs(eigenvalue) + 1e-6) < tol:
            break
        else:
            eigenvalue = current
    return float(eigenvalue), used


def power_extremes(op, max_iter: int, tol: float = TOL, exact: dict | None = None) -> dict:
    """λmax by power iteration, then λmin by power iteration on H − λmax I.

    With ``exact`` (``lambda_max``, ``lambda_min``), each run stops as soon as it is within
    ``tol`` (the oracle rule of :func:`power_iteration`), else by PyHessian's rule.
    """
    exact = exact or {}
    top, used_top = power_iteration(
        op.matvec, op.n, op.dtype, op.device, max_iter, tol, target=exact.get("lambda_max")
    )
    shifted, used_bottom = power_iteration(
        op.matvec,
        op.n,
        op.dtype,
        op.device,
        max_iter,
        tol,
        shift=top,
        seed=1,
        target=exact.get("lambda_min"),
    )
    return {"lambda_max": top, "lambda_min": shifted + top, "num_hvp": used_top + used_bottom}


def pyhessian_trace(op, max_iter: int = 100, tol: float = TOL, seed: int = 0) -> dict:
    """PyHessian's ``hessian.trace``: Rademacher probes until the running mean settles."""
    generator = torch.Generator().manual_seed(seed)
    samples, trace = [], 0.0
    for _ in range(max_iter):
        v = (torch.randint(0, 2, (op.n,), generator=generator) * 2 - 1).to(op.device, op.dtype)
        samples.append(torch.dot(op.matvec(v), v).item())
        if abs(np.mean(samples) - trace) / (abs(trace) + 1e-6) < tol:
            break
        trace = float(np.mean(samples))
    k = len(samples)
    stderr = float(np.std(samples, ddof=1) / math.sqrt(k)) if k > 1 else float("nan")
    return {"trace": float(np.mean(samples)), "stderr": stderr, "num_hvp": k}


def trained_operator(images: int, epochs: int):
    """ResNet-8 trained for a few epochs on the digits; its Hessian on ``images`` of them."""
    import torch.nn.functional as F

    from llv.curvature import HessianOperator
    from llv.data import load_eval_data

    cfg, model = build(["model=resnet8", "dataset=digits", "device=cpu", "dist=none"])
    train = load_eval_data(cfg.dataset, "train", device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for i in range(0, len(train), 64):
            batch = order[i : i + 64]
            loss = F.cross_entropy(model(train.inputs[batch]), train.targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    subset = load_eval_data(cfg.dataset, "train", max_samples=images, seed=0, device="cpu")
    return HessianOperator(
        model,
        subset.inputs,
        subset.targets,
        loss="ce",
        batch_size=resolve_batch_size(cfg.hessian.batch_size),
    )


def run(quick: bool = False) -> Section:
    from llv.curvature import extreme_eigenvalues, hutchinson_trace

    settings = QUICK if quick else FULL
    section = Section("Hessian: λmax and λmin to 1e-3 relative, Lanczos vs power iteration (CPU)")
    op = trained_operator(settings["images"], settings["epochs"])
    op.matvec(torch.ones(op.n))  # one-off kernel set-up stays out of every timing
    tight_time, tight = timed(lambda: extreme_eigenvalues(op, tol=1e-6))
    exact = {k: tight[k] for k in ("lambda_max", "lambda_min")}
    results = {}

    def llv():
        results["llv"] = extreme_eigenvalues(op, tol=TOL)

    def power():
        results["power"] = power_extremes(op, settings["oracle_cap"], exact=exact)

    ratios = side_by_side(
        Side("llv", llv), [Side("power", power)], settings["repeats"], warmup=False
    )
    results["pyhessian"] = power_extremes(op, settings["max_iter"])

    def error(result, key):
        return abs(result[key] - exact[key]) / abs(exact[key])

    def worst(name):
        return max(error(results[name], "lambda_max"), error(results[name], "lambda_min"))

    rows = []
    for name, label in (
        ("llv", "llv `extreme_eigenvalues` (Lanczos), tol 1e-3"),
        (
            "power",
            "power iteration, stopped when within 1e-3 (oracle), "
            f"≤ {settings['oracle_cap']} HVPs per end",
        ),
        (
            "pyhessian",
            "power iteration with PyHessian's stopping rule, "
            f"≤ {settings['max_iter']} HVPs per end",
        ),
    ):
        r = results[name]
        rows.append(
            [
                label,
                r["num_hvp"],
                f"{r['lambda_max']:.6g}",
                f"{error(r, 'lambda_max'):.1e}",
                f"{r['lambda_min']:.6g}",
                f"{error(r, 'lambda_min'):.1e}",
            ]
        )
    rows.append(
        [
            "tight reference (Lanczos, tol 1e-6)",
            tight["num_hvp"],
            f"{exact['lambda_max']:.6g}",
            "0",
            f"{exact['lambda_min']:.6g}",
            "0",
        ]
    )
    reached = worst("power") <= TOL
    time_ratio = float(np.median(ratios["power"]["cpu"]))
    note = (
        f"HVPs: power iteration {'' if reached else '> '}{results['power']['num_hvp']} vs llv "
        f"{results['llv']['num_hvp']}"
    )
    if not reached:
        note += (
            f" (power iteration had not reached 1e-3 after {settings['oracle_cap']} HVPs per "
            "end, so the ratio is a lower bound)"
        )
    note += (
        f"; with PyHessian's own rule it stops after {results['pyhessian']['num_hvp']} HVPs "
        f"at relative error {worst('pyhessian'):.1e}: the rule watches the change of the "
        "estimate, not its error"
    )
    section.targets.append(
        Target(
            "Hessian λmax+λmin to 1e-3: power-iteration time ÷ llv time",
            time_ratio,
            "min",
            1.0,
            note=note,
            at_least=not reached,
        )
    )
    section.targets.append(
        Target(
            "Hessian: llv λmax, λmin relative error vs tight Lanczos",
            worst("llv"),
            "max",
            TOL,
            unit="",
        )
    )

    probes = settings["probes"]
    hutch_time, hutch = timed(lambda: hutchinson_trace(op, probes=probes, seed=0))
    stopped = pyhessian_trace(op, max_iter=settings["max_iter"])
    per_probe = hutch["stderr"] * math.sqrt(hutch["num_hvp"]) / abs(hutch["trace"])
    section.targets.append(
        Target(
            "Hutchinson trace: relative standard error × √HVPs (one probe's relative spread)",
            per_probe,
            "info",
            unit="",
            note=f"{(per_probe / 0.01) ** 2:.0f} HVPs for a 1% standard error; PyHessian's "
            f"rule stopped after {stopped['num_hvp']} HVPs with a "
            f"{stopped['stderr'] / abs(stopped['trace']):.1%} standard error it does not report",
        )
    )
    hvp_seconds = hutch_time.cpu / hutch["num_hvp"]
    section.body += [
        f"ResNet-8 ({op.n:,} parameters) trained {settings['epochs']} epoch(s) on the digits; the "
        f"Hessian of the mean cross-entropy over {op.num_examples} training images, float32; one "
        f"HVP ≈ {hvp_seconds * 1e3:.0f} ms CPU. Time ratio: CPU time of llv, power iteration, llv "
        f"({settings['repeats']} repetition(s), median). Relative errors against the tight Lanczos "
        "run. The oracle stop is the best case for power iteration: no practical rule knows the "
        "answer in advance.",
        "",
        *table(["method", "HVPs", "λmax", "rel. error", "λmin", "rel. error"], rows),
        "",
        *table(
            ["trace estimator", "HVPs", "trace", "standard error", "relative SE"],
            [
                [
                    f"llv `hutchinson_trace`, {probes} Rademacher probes",
                    hutch["num_hvp"],
                    f"{hutch['trace']:.5g}",
                    f"{hutch['stderr']:.3g}",
                    f"{hutch['stderr'] / abs(hutch['trace']):.2%}",
                ],
                [
                    "PyHessian rule (running mean settles to 1e-3)",
                    stopped["num_hvp"],
                    f"{stopped['trace']:.5g}",
                    f"{stopped['stderr']:.3g}",
                    f"{stopped['stderr'] / abs(stopped['trace']):.2%}",
                ],
            ],
        ),
        "",
        f"(the tight reference took {tight_time.cpu:.0f} s CPU)",
    ]
    return section
