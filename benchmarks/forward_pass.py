"""Surface cost per grid point ÷ one bare evaluation forward pass over the same data.

The bare pass is what any evaluation costs: ``model(x)`` over the data in batches of the same
size, eval mode, ``no_grad``, the images already in memory. One llv point is the work of the
engine's point loop (``compute`` in :func:`llv.api.run_points`): coefficient rows for
grid indices, :meth:`llv.evaluate.PointEvaluator.evaluate` at its defaults (θ + αδ + βη,
BatchNorm folded per point, ``functional_call``, loss, accuracy, loss standard error), results
to numpy. Result-file writes are left out: the
engine rewrites the file at most every two seconds, a few milliseconds each.

Both sides use batches of 128 images, llv's CPU default (``eval.batch_size=auto``): on a CPU a
batch of 1024 CIFAR-sized images has activations far out of cache and costs about 2× more per
image (see the reference benchmark), which would also hide llv's per-point overhead in a slower
denominator.

The options of issue 20's exact mode (BatchNorm folding, channels_last, torch.compile) are
measured in ``exact_mode.py``.
"""

from __future__ import annotations

from benchmarks.common import (
    Section,
    Side,
    Target,
    cifar_case,
    median,
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
BATCH_SIZE = "auto"  # llv's CPU default: 128 images of 3×32×32 per pass, on both sides
#: the fixed per-point cost is measured apart, on so few images that it is not lost in the scatter
TINY_IMAGES, TINY_REPEATS_FULL, TINY_REPEATS_QUICK = 8, 15, 3
SMALL_MODELS = ("resnet8",)  # where batching several points per pass is expected to pay


def run(quick: bool = False) -> Section:
    cases = QUICK if quick else FULL
    section = Section("Surface cost per grid point ÷ one bare forward pass (CPU)")
    rows = []
    columns = sorted({k for *_, tried in cases for k in tried})
    for model_name, num_images, repeats_one, repeats, settings in cases:
        tiny = cifar_case(model_name, TINY_IMAGES, BATCH_SIZE)
        fixed = side_by_side(
            Side("bare", tiny.bare),
            [Side("ppb=1", tiny.points(tiny.evaluator(1), 1))],
            TINY_REPEATS_QUICK if quick else TINY_REPEATS_FULL,
        )
        fixed_ms = (median(fixed["ppb=1"]["seconds"]) - median(fixed["bare"]["seconds"])) * 1e3
        case = cifar_case(model_name, num_images, BATCH_SIZE)
        bare = Side("bare", case.bare)
        result = side_by_side(bare, [Side("ppb=1", case.points(case.evaluator(1), 1))], repeats_one)
        sides = [Side(f"ppb={k}", case.points(case.evaluator(k), k), k) for k in settings if k > 1]
        others = side_by_side(bare, sides, repeats)
        result.update({name: values for name, values in others.items() if name != "bare"})
        bare_s = median(result["bare"]["seconds"])
        one = median(result["ppb=1"]["cpu"])
        batched = {k: median(result[f"ppb={k}"]["cpu"]) for k in settings if k > 1}
        best_k = min(batched, key=batched.get)
        row = [
            model_name,
            num_images,
            case.batch_size,
            f"{case.num_params:,}",
            f"{bare_s * 1e3:.0f}",
            f"{repeats_one} / {repeats}",
            f"{fixed_ms:.1f}",
        ]
        row += [spread(result[f"ppb={k}"]["cpu"]) if k in settings else "—" for k in columns]
        row += [
            f"{median(result[f'ppb={k}']['wall']):.2f}" if k in settings else "—" for k in columns
        ]
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
                "; on CPU vmap turns each conv into one grouped conv over the k weight sets, "
                "slower per point than k dense passes; batching pays where per-call overhead "
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
    section.body += [
        "Per-point cost ÷ bare forward pass: median [min–max] over repetitions of CPU-time "
        "ratios; the wall-time medians are shown for comparison (noisy on a shared machine). "
        "`ppb` = `eval.points_per_batch`. CIFAR-shaped synthetic images (3×32×32, 10 classes), "
        f"batches of {cases_batch(rows)} on both sides, fp32, random-init weights (the cost does not "
        "depend on their values). The fixed overhead per point is llv's point minus a bare pass "
        f"on {TINY_IMAGES} images (median of {TINY_REPEATS_FULL} side-by-side repetitions), where "
        "it is not lost in the scatter of the longer passes.",
        "",
        *table(header, rows),
    ]
    return section


def cases_batch(rows) -> str:
    """The batch sizes of the table's rows, as text (``auto`` resolves per image shape)."""
    return "/".join(sorted({str(row[2]) for row in rows}))
