"""Surface cost per grid point ÷ one bare evaluation forward pass over the same data.

The bare pass is what any evaluation costs: ``model(x)`` over the data in batches of the same
size, eval mode, ``no_grad``, the images already in memory. One llv point is the work of the
engine's point loop (``compute`` in :func:`llv.surface.compute_surface`): coefficient rows for
grid indices, :meth:`llv.evaluate.PointEvaluator.evaluate` (θ + αδ + βη, ``functional_call``,
loss, accuracy, loss standard error), results to numpy. Result-file writes are left out: the
engine rewrites the file at most every two seconds, a few milliseconds each.

Both sides use batches of 128 images, llv's CPU default (``eval.batch_size=auto``): on a CPU a
batch of 1024 CIFAR-sized images has activations far out of cache and costs about 2× more per
image (see the reference benchmark), which would also hide llv's per-point overhead in a slower
denominator.

A further side, the bare pass of the same network with every BatchNorm folded into the
convolution before it (``torch.fx`` ``fuse``), shows what folding BN per point could gain.
"""

from __future__ import annotations

import copy

from benchmarks.common import (
    Section,
    Side,
    Target,
    build,
    cifar_overrides,
    median,
    resolve_batch_size,
    side_by_side,
    spread,
    table,
)

#: (model, images, repetitions of the ppb=1 comparison, repetitions of the others, points per
#: batch tried): N chosen so that a repetition takes seconds on one core; the ppb=1 target gets
#: its own, longer series (one repetition scatters by about ±8 % on a loaded machine); ppb=4
#: only where a pass is cheap (batching costs more per point on CPU).
FULL = [
    ("resnet8", 1024, 12, 3, (1, 2, 4)),
    ("resnet20", 512, 10, 2, (1, 2)),
    ("resnet56", 256, 10, 2, (1, 2)),
]
QUICK = [
    ("resnet8", 32, 1, 1, (1, 2)),
    ("resnet20", 16, 1, 1, (1, 2)),
    ("resnet56", 16, 1, 1, (1, 2)),
]
BATCH_SIZE = 128  # examples per forward pass on both sides; see the module docstring
#: the fixed per-point cost is measured apart, on so few images that it is not lost in the scatter
TINY_IMAGES, TINY_REPEATS_FULL, TINY_REPEATS_QUICK = 8, 15, 3
SMALL_MODELS = ("resnet8",)  # where batching several points per pass is expected to pay


def make_case(model_name: str, num_images: int):
    """Model, data, directions and evaluators of one case (CPU, fp32, default batch size)."""
    import numpy as np
    import torch

    from llv import directions as dirs
    from llv.config import GridSpec
    from llv.data import load_eval_data
    from llv.evaluate import PointEvaluator
    from llv.params import ParameterSpace
    from llv.surface import coefficient_rows

    cfg, model = build(
        cifar_overrides(model_name, num_images, ["grid=51x51", f"eval.batch_size={BATCH_SIZE}"])
    )
    data = load_eval_data(cfg.dataset, "train", device="cpu")
    space = ParameterSpace.of(model, "weights")
    values = space.values(model)
    directions = dirs.make_random(space, values, 2, seed=0, norm="filter")
    base = dict(zip(space.names, values))
    batch_size = resolve_batch_size(cfg.eval.batch_size)
    grid = GridSpec.from_cfg(cfg.grid)
    batches = [
        data.inputs[i : i + batch_size].contiguous() for i in range(0, len(data), batch_size)
    ]
    cursor = {"next": 0}

    def bare(net=model):
        with torch.no_grad():
            for x in batches:
                net(x)

    def llv_points(evaluator, k):
        def run():
            start = cursor["next"]
            indices = np.arange(start, start + k) % grid.num_points
            cursor["next"] = start + k
            rows = torch.from_numpy(coefficient_rows(grid, grid.ndim, 1, indices))
            return {name: v.cpu().numpy() for name, v in evaluator.evaluate(rows).items()}

        return run

    def evaluator(points_per_batch):
        return PointEvaluator(
            model,
            space,
            base,
            directions.flat(),
            {"train": data},
            loss=str(cfg.loss),
            batch_size=batch_size,
            points_per_batch=points_per_batch,
        )

    return {
        "bare": bare,
        "llv_points": llv_points,
        "evaluator": evaluator,
        "model": model,
        "batch_size": batch_size,
        "num_params": space.numel,
    }


def folded(model):
    """The network with BatchNorm folded into the preceding convolution (eval mode), or None."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(copy.deepcopy(model).eval())
    except Exception:  # a model torch.fx cannot trace keeps its BN
        return None


def run(quick: bool = False) -> Section:
    cases = QUICK if quick else FULL
    section = Section("Surface cost per grid point ÷ one bare forward pass (CPU)")
    rows = []
    columns = sorted({k for *_, tried in cases for k in tried})
    for model_name, num_images, repeats_one, repeats, settings in cases:
        tiny = make_case(model_name, TINY_IMAGES)
        fixed = side_by_side(
            Side("bare", tiny["bare"]),
            [Side("ppb=1", tiny["llv_points"](tiny["evaluator"](1), 1))],
            TINY_REPEATS_QUICK if quick else TINY_REPEATS_FULL,
        )
        fixed_ms = (median(fixed["ppb=1"]["seconds"]) - median(fixed["bare"]["seconds"])) * 1e3
        case = make_case(model_name, num_images)
        bare = Side("bare", case["bare"])
        result = side_by_side(
            bare, [Side("ppb=1", case["llv_points"](case["evaluator"](1), 1))], repeats_one
        )
        sides = [
            Side(f"ppb={k}", case["llv_points"](case["evaluator"](k), k), k)
            for k in settings
            if k > 1
        ]
        net = folded(case["model"])
        if net is not None:
            sides.append(Side("bn-folded bare", lambda net=net, bare=case["bare"]: bare(net)))
        others = side_by_side(bare, sides, repeats)
        result.update({name: values for name, values in others.items() if name != "bare"})
        bare_s = median(result["bare"]["seconds"])
        one = median(result["ppb=1"]["cpu"])
        batched = {k: median(result[f"ppb={k}"]["cpu"]) for k in settings if k > 1}
        best_k = min(batched, key=batched.get)
        row = [
            model_name,
            num_images,
            case["batch_size"],
            f"{case['num_params']:,}",
            f"{bare_s * 1e3:.0f}",
            f"{repeats_one} / {repeats}",
            f"{fixed_ms:.1f}",
        ]
        row += [spread(result[f"ppb={k}"]["cpu"]) if k in settings else "—" for k in columns]
        row += [
            f"{median(result[f'ppb={k}']['wall']):.2f}" if k in settings else "—" for k in columns
        ]
        row.append(spread(result["bn-folded bare"]["cpu"]) if net is not None else "—")
        rows.append(row)
        scatter = result["ppb=1"]["cpu"]
        note = ""
        if one > 1.05:
            note = (
                f"repetitions scatter over [{min(scatter):.2f}–{max(scatter):.2f}]; the fixed "
                f"per-point overhead measured apart on {TINY_IMAGES} images is {fixed_ms:.1f} ms "
                f"(functional_call, θ+αδ+βη, loss/accuracy/SE), "
                f"{1 + fixed_ms / (bare_s * 1e3):.3f}× of this {bare_s * 1e3:.0f} ms pass"
            )
        section.targets.append(
            Target(
                f"surface point (ppb=1) ÷ bare forward, {model_name}, N={num_images}",
                one,
                "max",
                1.05,
                note=note,
            )
        )
        small = model_name in SMALL_MODELS
        value = batched[best_k]
        note = f"ppb tried: {', '.join(map(str, batched))}; best ppb={best_k}"
        if value >= 1.0:
            note += (
                "; on CPU vmap turns each conv into one grouped conv over the k weight sets "
                "and each eval BatchNorm into normalize + per-point mul + add passes, slower "
                "per point than k dense passes; batching pays where per-call overhead "
                "dominates (GPU, tiny models)"
            )
        section.targets.append(
            Target(
                f"surface point, best batched ÷ bare forward, {model_name}, N={num_images}",
                value,
                "below" if small else "info",
                1.0 if small else None,
                note=note,
            )
        )
    header = [
        "model",
        "N",
        "batch",
        "params",
        "bare pass (CPU ms)",
        "reps (ppb=1 / others)",
        f"fixed overhead per point (CPU ms, on {TINY_IMAGES} images)",
    ]
    header += [f"ppb={k} (CPU)" for k in columns] + [f"ppb={k} (wall)" for k in columns]
    header.append("BN-folded bare (CPU)")
    section.body += [
        "Per-point cost ÷ bare forward pass: median [min–max] over repetitions of CPU-time "
        "ratios; the wall-time medians are shown for comparison (noisy on a shared machine). "
        "`ppb` = `eval.points_per_batch`. CIFAR-shaped synthetic images (3×32×32, 10 classes), "
        f"batches of {BATCH_SIZE} on both sides, fp32, random-init weights (the cost does not "
        "depend on their values). The fixed overhead per point is llv's point minus a bare pass "
        f"on {TINY_IMAGES} images (median of {TINY_REPEATS_FULL} side-by-side repetitions), where "
        "it is not lost in the scatter of the longer passes.",
        "",
        *table(header, rows),
        "",
        "The last column is a bare pass of the same network with each BatchNorm folded into its "
        "convolution: what an engine that folds BN into the perturbed conv weights per point "
        "(exact in eval mode) could approach.",
    ]
    return section
