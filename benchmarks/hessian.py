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

Issue 20's Hessian targets, on the same trained ResNet-8:

- both ends to tol 1e-3 in at most 50 products at a point (``llv.curvature.spectrum_ends``, what
  ``llv hessian`` runs), with the relative error of each end against the tight run;
- an 11×11 ``llv.hessian_map`` averaging at most 40 products per point with warm starts, beside
  the same map computed cold (on fewer images, so that one product is cheap: both maps are
  about 30,000 products);
- ``Hessian.analyse(compute=["extremes"])`` (``llv hessian hessian.compute=[extremes]``) costs
  only its Lanczos run: its products, counted at the operator (every call of ``matvec``, also
  those the library does not add to ``num_hvp``), ÷ those of ``spectrum_ends`` alone.
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
#: ``map_images``/``map_side``: the Hessian map's data and grid
FULL = {"images": 256, "epochs": 8, "repeats": 1, "probes": 50, "max_iter": 100, "oracle_cap": 250,
        "map_images": 32, "map_side": 11}
QUICK = {"images": 32, "epochs": 1, "repeats": 1, "probes": 6, "max_iter": 15, "oracle_cap": 15,
         "map_images": 8, "map_side": 3}
TOL = 1e-3
ENDS_TARGET, MAP_TARGET = 50, 40  # products: both ends at a point; mean per point of a warm map
START_SEEDS = 5  # seeded start vectors for the products row (seed 0 is the one llv uses by default)


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
    from llv.curvature import HessianOperator

    cfg, model = trained_resnet8(epochs)
    subset = digits_subset(cfg, images)
    return HessianOperator(
        model,
        subset.inputs,
        subset.targets,
        loss="ce",
        batch_size=resolve_batch_size(cfg.hessian.batch_size),
    )


def digits_subset(cfg, images: int):
    """``images`` seeded training digits (inputs and targets)."""
    from llv.data import load_eval_data

    return load_eval_data(cfg.dataset, "train", max_samples=images, seed=0, device="cpu")


def trained_resnet8(epochs: int):
    """``(cfg, ResNet-8 in eval mode)`` after ``epochs`` seeded SGD epochs on the digits."""
    import torch.nn.functional as F

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
    return cfg, model


class CountedProducts:
    """Counts every ``matvec`` of an operator (also the products a caller leaves out of
    ``num_hvp``, e.g. residual checks): the instance attribute shadows the method."""

    def __init__(self, op):
        self.op, self.calls, self._matvec = op, 0, op.matvec
        op.matvec = self

    def __call__(self, v):
        self.calls += 1
        return self._matvec(v)


def run(quick: bool = False) -> Section:
    from llv.curvature import extreme_eigenvalues, hutchinson_trace
    from llv.spectrum import Hessian

    settings = QUICK if quick else FULL
    section = Section("Hessian: λmax and λmin to 1e-3 relative, Lanczos vs power iteration (CPU)")
    cfg, model = trained_resnet8(settings["epochs"])
    subset = digits_subset(cfg, settings["images"])
    hessian = Hessian(model, (subset.inputs, subset.targets), loss="ce",
                      batch_size=resolve_batch_size(cfg.hessian.batch_size))
    op = hessian.operator
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
    ends_targets, ends_lines = ends_and_compute(hessian, exact, settings["repeats"])
    map_targets, map_lines = hessian_maps(model, cfg, settings)
    section.targets += ends_targets + map_targets
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
        "",
        *ends_lines,
        "",
        *map_lines,
    ]
    return section


def products_to_reach(op, exact: dict, tol: float = TOL, limit: int = 200,
                      seed: int = 0) -> tuple[int, np.ndarray]:
    """Products after which plain Lanczos (full reorthogonalization, llv's seeded start vector)
    has both Ritz extremes within ``tol`` of ``exact``, relative: what a stopping rule that knew
    the answer would spend (llv's run is the same Krylov space until its first restart). Returns
    the products and the Ritz values (ascending) at that step."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(op.n, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
    basis = torch.zeros(limit, op.n, dtype=op.dtype, device=op.device)
    projected = np.zeros((limit, limit))
    v = v / v.norm()
    for j in range(limit):
        basis[j] = v
        w = op.matvec(v)
        column = basis[: j + 1] @ w
        w = w - basis[: j + 1].T @ column
        correction = basis[: j + 1] @ w
        w = w - basis[: j + 1].T @ correction
        column = (column + correction).double().cpu().numpy()
        projected[: j + 1, j] = column
        projected[j, : j + 1] = column
        theta = np.linalg.eigvalsh(projected[: j + 1, : j + 1])
        top = abs(theta[-1] - exact["lambda_max"]) <= tol * abs(exact["lambda_max"])
        bottom = abs(theta[0] - exact["lambda_min"]) <= tol * abs(exact["lambda_min"])
        if top and bottom:
            break
        v = w / w.norm()
    return j + 1, theta


def end_errors(result: dict, exact: dict) -> dict[str, float]:
    """Relative errors of a ``spectrum_ends`` result's λmax and λmin against ``exact``."""
    return {end: abs(float(result[key][0]) - exact[f"lambda_{end}"]) / abs(exact[f"lambda_{end}"])
            for end, key in (("max", "top"), ("min", "bottom"))}


def ends_and_compute(hessian, exact: dict, repeats: int) -> tuple[list[Target], list[str]]:
    """Both ends to 1e-3 at the point (``spectrum_ends``), and ``analyse(compute=["extremes"])``
    against that Lanczos run alone, side by side; the default compute list for contrast."""
    from llv.curvature import spectrum_ends

    op = hessian.operator
    counted = CountedProducts(op)
    runs = {"ends": [], "analyse": []}
    by_seed_errors: dict[int, float] = {}

    def ends():
        before = counted.calls
        result = spectrum_ends(op, 1, 1, tol=TOL, seed=0)
        runs["ends"].append((counted.calls - before, result))

    def analyse():
        before = counted.calls
        result = hessian.analyse(tol=TOL, seed=0, compute=["extremes"])
        runs["analyse"].append((counted.calls - before, result))

    try:
        ratios = side_by_side(Side("ends", ends), [Side("analyse", analyse)], repeats,
                              warmup=False)
        before = counted.calls
        default_time, default = timed(lambda: hessian.analyse(tol=TOL, seed=0))
        default_calls = counted.calls - before
        # the start vector is random: seed 0 is one draw, so the row is the median over seeds
        by_seed = {0: runs["ends"][0][0]}
        for seed in range(1, START_SEEDS):
            before = counted.calls
            other = spectrum_ends(op, 1, 1, tol=TOL, seed=seed)
            by_seed[seed] = counted.calls - before
            by_seed_errors[seed] = max(end_errors(other, exact).values())
    finally:
        del op.matvec  # the operator's own method again
    oracle, ritz = products_to_reach(op, exact, limit=max(ENDS_TARGET, runs["ends"][0][0]) + 10)
    calls, result = runs["ends"][0]
    errors = end_errors(result, exact)
    by_seed_errors[0] = max(errors.values())
    typical = float(np.median(list(by_seed.values())))
    seeds_note = (f"median over {len(by_seed)} seeded start vectors (seeds {min(by_seed)}–"
                  f"{max(by_seed)}: " + ", ".join(str(by_seed[k]) for k in sorted(by_seed))
                  + f" products; the worse end's relative error at the stop ≤ "
                  f"{max(by_seed_errors.values()):.1e} for every seed; the stopping test: "
                  "an eigenvalue within tol of each value by the refined Ritz vector's residual, "
                  "never looser than the Ritz pair's)")
    ends_seconds = float(np.median(ratios["ends"]["seconds"]))
    analyse_calls, analysed = runs["analyse"][0]
    product_ratio = analyse_calls / calls
    time_ratio = float(np.median(ratios["analyse"]["cpu"]))
    counted_by_library = analysed["num_hvp_extremes"]
    ends_note = (f"λmax {float(result['top'][0]):.6g} (rel. error {errors['max']:.1e}), λmin "
                 f"{float(result['bottom'][0]):.6g} (rel. error {errors['min']:.1e}) against the "
                 f"tight run (tol 1e-6); converged: {result['converged']}; the same Krylov space "
                 f"has both ends truly within 1e-3 after {oracle} products (an oracle stop)")
    if typical > ENDS_TARGET:
        ratio = abs(exact["lambda_min"]) / abs(exact["lambda_max"])
        gap = float(ritz[1] - ritz[0]) if len(ritz) > 1 else float("nan")
        slow = (f"λmin is {ratio:.1%} of λmax and its nearest other Ritz value is {gap:.2g} away "
                f"({gap / abs(exact['lambda_min']):.2g}× |λmin|): an end in a cluster, which "
                "Lanczos resolves slowly")
        if oracle > ENDS_TARGET:
            ends_note = (f"missed: the Krylov space itself needs {oracle} products before both "
                         f"ends are within 1e-3 (a stop that knew the answer); {slow}; the "
                         f"stopping test adds {calls - oracle} (at the stop λmin's true error is "
                         f"{errors['min']:.0e}); " + ends_note)
        else:
            ends_note = (f"missed: the stopping test decides: both ends are within 1e-3 after "
                         f"{oracle} products, but the residual bound on λmin's error (the "
                         f"refined Ritz vector's) stays above tol until {calls}; {slow}; "
                         + ends_note)
    compute_note = (f"{analyse_calls} products (the library's count: {counted_by_library}) vs "
                    f"{calls} for `spectrum_ends` alone; CPU time {time_ratio:.2f}× "
                    f"({ends_seconds:.1f} s alone)")
    if product_ratio > 1.0:
        compute_note = (f"missed: `analyse` does {analyse_calls - calls} product(s) more than its "
                        "Lanczos run (`Hessian.eigenvalues` checks each Ritz pair's residual with "
                        "one product per pair, and leaves them out of `num_hvp`), and it "
                        "evaluates the loss once; " + compute_note)
    default_parts = ", ".join(
        f"{name} {default[f'num_hvp_{name}']}"
        for name in ("extremes", "top_k", "trace", "density") if f"num_hvp_{name}" in default)
    targets = [
        Target("Hessian: products for λmax and λmin to tol 1e-3 at a point (`spectrum_ends`, "
               "what `llv hessian` runs)", typical, "max", ENDS_TARGET, unit="",
               note=seeds_note + "; seed 0: " + ends_note),
        Target("Hessian: relative error of λmax and λmin (the worse) at those products, vs tight "
               "Lanczos (worst start seed)", max(by_seed_errors.values()), "max", TOL, unit=""),
        Target("`llv hessian hessian.compute=[extremes]` (`Hessian.analyse`) ÷ its Lanczos run "
               "alone, products", product_ratio, "max", 1.0, unit="×", note=compute_note),
        Target("`Hessian.analyse` with the default compute list ÷ the Lanczos run alone, "
               "products (for contrast)", default_calls / calls, "info",
               note=f"{default_calls} products ({default_parts}: extremes and top_k share one "
                    f"Krylov run and both report it) in {default_time.cpu:.0f} s CPU"),
    ]
    lines = [
        "Issue 20: what a point costs. `spectrum_ends(op, 1, 1, tol=1e-3)` is the Lanczos run of "
        "`llv hessian` for λmax and λmin; `Hessian.analyse(compute=[\"extremes\"])` is what "
        "`llv hessian hessian.compute=[extremes]` calls at the point. Products are counted at the "
        "operator (every `matvec` call); CPU time side by side "
        f"({repeats} repetition(s), median).",
        "",
        *table(
            ["run", "products (every matvec)", "library's num_hvp", "CPU s", "λmax", "λmin"],
            [
                ["`spectrum_ends`, tol 1e-3", calls, result["num_hvp"], f"{ends_seconds:.1f}",
                 f"{float(result['top'][0]):.6g}", f"{float(result['bottom'][0]):.6g}"],
                ["Lanczos stopped by an oracle (both ends within 1e-3 of the tight values)",
                 oracle, "—", "—", "—", "—"],
                ["`analyse(compute=[\"extremes\"])`", analyse_calls, counted_by_library,
                 f"{float(np.median(ratios['analyse']['seconds'])):.1f}",
                 f"{analysed['lambda_max']:.6g}", f"{analysed['lambda_min']:.6g}"],
                ["`analyse()` (default: extremes, top_k, trace, density)", default_calls,
                 default_parts, f"{default_time.cpu:.1f}", f"{default['lambda_max']:.6g}",
                 f"{default['lambda_min']:.6g}"],
            ],
        ),
    ]
    return targets, lines


def hessian_maps(model, cfg, settings: dict) -> tuple[list[Target], list[str]]:
    """The same ``llv.hessian_map`` with warm starts and cold: products per point, time, and
    whether both give the same eigenvalues."""
    import llv
    from llv import direction as dirs
    from llv.params import ParameterSpace

    side, images = settings["map_side"], settings["map_images"]
    subset = digits_subset(cfg, images)
    data = (subset.inputs, subset.targets)
    space = ParameterSpace.of(model, "weights")  # hessian_map's own default directions, kept
    directions = dirs.make_random(space, space.values(model), 2, seed=0, norm="filter",
                                  ignore="biasbn")
    maps, clocks = {}, {}
    for name, warm in (("warm", True), ("cold", False)):
        clocks[name], maps[name] = timed(lambda w=warm: llv.hessian_map(
            model, data, x=(-1, 1, side), y=(-1, 1, side), directions=directions, tol=TOL,
            warm_start=w, progress=False))
    products = {name: np.asarray(m["num_hvp"], float) for name, m in maps.items()}
    mean = {name: float(p.mean()) for name, p in products.items()}
    # warm ÷ cold eigenvalues, relative to each cold value with the library's floor for values
    # near zero (√eps of float32 × the point's largest |λ|)
    cold_max, cold_min = (np.asarray(maps["cold"][k], float) for k in ("max_eig", "min_eig"))
    floor = np.sqrt(np.finfo(np.float32).eps) * np.maximum(np.abs(cold_max), np.abs(cold_min))
    gaps, apart, where_apart = {}, 0, np.zeros(cold_max.shape, bool)
    for key, c in (("max_eig", cold_max), ("min_eig", cold_min)):
        relative = np.abs(np.asarray(maps["warm"][key], float) - c) / np.maximum(np.abs(c), floor)
        gaps[key] = float(np.nanmax(relative))
        apart += int((relative > 2 * TOL).sum())
        where_apart |= relative > 2 * TOL
    judged = tight_errors(model, data, space, directions, maps, np.argwhere(where_apart))
    missing = {name: int(np.isnan(np.asarray(m["max_eig"], float)).sum()) for name, m in maps.items()}
    hvp_ms = 1e3 * clocks["cold"].cpu / max(products["cold"].sum(), 1)
    where = f"{side}×{side}, trained ResNet-8 on {images} digits"
    note = (f"cold {mean['cold']:.1f} per point (warm ÷ cold {mean['warm'] / mean['cold']:.2f}); "
            f"{clocks['warm'].cpu:.0f} s vs {clocks['cold'].cpu:.0f} s CPU; warm vs cold: λmax "
            f"within {gaps['max_eig']:.1e}, λmin within {gaps['min_eig']:.1e} relative (each "
            f"run's tol is {TOL:g}); unconverged points: "
            f"{missing['warm']} warm, {missing['cold']} cold")
    if apart:
        note += (f"; {apart} eigenvalue(s) differ between warm and cold by more than the two runs' "
                 f"tolerances together ({2 * TOL:g}); against a tight run (tol 1e-6) at those "
                 f"{len(judged['points'])} point(s) the worst relative error is "
                 f"{judged['warm']:.1e} warm and {judged['cold']:.1e} cold")
    if mean["warm"] > MAP_TARGET:
        note = ("missed: a warm start (the sum of the previous point's two Ritz vectors) saves "
                f"{mean['cold'] - mean['warm']:.1f} products per point; " + note)
    targets = [
        Target(f"Hessian map {where}: mean products per point, warm starts", mean["warm"], "max",
               MAP_TARGET, unit="", note=note),
        Target(f"Hessian map {where}: mean products per point, cold (beside the warm row)",
               mean["cold"], "info", unit=""),
        Target(f"Hessian map {where}: worst relative error of an end, warm starts, against a "
               "tight run at the points where warm and cold disagree", judged["warm"], "max",
               TOL, unit="",
               note=(f"{len(judged['points'])} point(s) (iy, ix) {judged['points']}; cold there: "
                     f"{judged['cold']:.1e}")
               + ("" if judged["warm"] <= TOL and judged["cold"] <= TOL else
                  "; missed: a run stopped with a value outside its tol; its stop bounds each "
                  "value's error by min(r, r²/gap) with the gap taken from the other Ritz values, "
                  "a bound that holds only while that gap is not larger than the true one")),
    ]
    rows = [[name, f"{mean[name]:.1f}", f"{products[name].min():.0f}",
             f"{products[name].max():.0f}", f"{clocks[name].cpu:.0f}", missing[name]]
            for name in ("warm", "cold")]
    lines = [
        f"Issue 20: a Hessian map, `llv.hessian_map` on {side}×{side} points (λmax and λmin to tol 1e-3 at every point; "
        "x, y ∈ [−1, 1] along random filter-normalized directions, seed 0) of the same trained "
        f"ResNet-8 on {images} training digits (one product ≈ {hvp_ms:.0f} ms CPU here), once with "
        "`warm_start=True` (each point's Lanczos starts from the previous point's Ritz vectors; "
        "the default `chunk_points=64`, and each chunk starts cold) and once with "
        "`warm_start=False`. CPU time of each whole call (its one cold run at the centre for the "
        "time estimate included).",
        "",
        *table(["starts", "mean products per point", "min", "max", "CPU s", "unconverged points"],
               rows),
    ]
    return targets, lines


def tight_errors(model, data, space, directions, maps: dict, points) -> dict:
    """At the map points ``points`` ((iy, ix) pairs), both ends by a tight Lanczos run (tol
    1e-6): the worst relative error of the warm and of the cold map's values there (relative to
    the tight value, with the library's floor near zero)."""
    from llv.curvature import HessianOperator, spectrum_ends
    from llv.evaluate import PointMap
    from llv.spectrum import Hessian

    worst = {"warm": 0.0, "cold": 0.0, "points": [tuple(int(i) for i in p) for p in points]}
    if not len(points):
        return worst
    base_op = Hessian(model, data, loss="ce").operator
    base = dict(zip(space.names, space.values(model)))
    grid = PointMap(space, base, directions.flat(), base_op.device)
    x, y = maps["warm"].x, maps["warm"].y
    for iy, ix in points:
        row = torch.tensor([[float(x[ix]), float(y[iy])]], dtype=torch.float64)
        op = HessianOperator.like(base_op, {n: t[0] for n, t in grid.tensors(row).items()})
        tight = spectrum_ends(op, 1, 1, tol=1e-6)
        top, bottom = float(tight["top"][0]), float(tight["bottom"][0])
        floor = float(np.sqrt(np.finfo(np.float32).eps)) * max(abs(top), abs(bottom))
        for name, surface in maps.items():
            for key, value in (("max_eig", top), ("min_eig", bottom)):
                error = abs(float(surface[key][iy, ix]) - value) / max(abs(value), floor)
                worst[name] = max(worst[name], error)
    return worst
