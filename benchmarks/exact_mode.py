"""Issue 20's exact mode: one llv grid point ÷ one bare eager NCHW forward pass, per option.

Every side is an llv grid point, the engine's work for it (coefficient rows,
:meth:`llv.evaluate.PointEvaluator.evaluate`: θ + αδ + βη, the forward over every batch, loss,
accuracy, standard error, results to numpy), on the same data in the same batches as the bare
pass (``model(x)``, eval mode, ``no_grad``, NCHW):

- ``plain``: the evaluator without folding (``fold=False``: ``functional_call``, NCHW), what
  every point cost before issue 20;
- ``fold``: the evaluator's default, BatchNorm folded into each point's conv weights
  (:class:`llv.fold.FoldedForward`);
- ``channels_last``: ``channels_last`` inputs, unfolded;
- ``fold + channels_last``;
- ``compiled``: fold + channels_last with ``compile="on"`` (:func:`llv.fold.compile_forward`
  compiles the one-point forward), in steady state; the compile time (cold: a fresh inductor
  cache) is reported apart, with the number of points that repays it.

Values first: every option's losses at three grid points (corner, centre, far corner) equal the
plain evaluator's to 1e-5 relative to the largest loss before anything is timed, and each
option is checked to be what it says (folded pairs present or absent, compiled or not).

Random-init networks with randomized BatchNorm statistics and affine parameters (so that
folding is not the identity), seeded CIFAR-shaped images, batches of llv's CPU default (128).
"""

from __future__ import annotations

import os
import tempfile

from benchmarks.common import (
    Section,
    Side,
    Target,
    cifar_case,
    median,
    run_alone,
    side_by_side,
    spread,
    table,
)

#: (model, images, repetitions): a repetition (two bare passes and five points) takes a few
#: seconds on one core; N is a multiple of the batch so that one compiled graph serves all batches
FULL = [("resnet20", 256, 8), ("resnet56", 128, 8)]
QUICK = [("resnet20", 16, 1), ("resnet56", 16, 1)]
#: issue 20's targets, point ÷ bare eager NCHW forward
EAGER_TARGET, COMPILED_TARGET, VALUE_TOLERANCE = 0.80, 0.75, 1e-5
INDICES = (0, 1300, 2600)  # corner, centre, far corner of the 51×51 grid
OPTIONS = ("plain", "fold", "channels_last", "fold + channels_last", "compiled")


def first_point_and_batch(evaluator):
    """One point's full state and the first batch's model arguments, as the evaluator makes them."""
    import torch

    from llv.batches import split_batch

    params = {n: t[0] for n, t in evaluator.point_tensors(torch.zeros(1, 2)).items()}
    args, _, _ = split_batch(next(iter(evaluator.data["train"])))
    return {**evaluator.fixed, **params}, args


def relative_difference(values, reference) -> float:
    import numpy as np

    values, reference = np.asarray(values, float), np.asarray(reference, float)
    return float(np.abs(values - reference).max() / max(np.abs(reference).max(), 1e-30))


def run(quick: bool = False) -> Section:
    """The section; compiles start cold (a fresh inductor cache), as a user's first run does."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="llv-bench-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        try:
            return measure(quick)
        finally:
            if previous is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def measure(quick: bool) -> Section:
    import numpy as np
    import torch
    from torch._dynamo.utils import counters

    from llv.fold import choose_memory_format
    from llv.grid import coefficient_rows

    section = Section("Exact mode: BatchNorm folding, channels_last, torch.compile (CPU)")
    rows, layout_rows = [], []
    for model_name, num_images, repeats in QUICK if quick else FULL:
        case = cifar_case(model_name, num_images)
        evaluators = {
            "plain": case.evaluator(fold=False),
            "fold": case.evaluator(),
            "channels_last": case.evaluator(channels_last=True, fold=False),
            "fold + channels_last": case.evaluator(channels_last=True),
        }
        compile_note, compile_seconds = "not run in --quick (a compile takes 20–60 s)", float("nan")
        if not quick:
            hits = counters["inductor"]["fxgraph_cache_hit"]
            compiled = case.evaluator(channels_last=True, compile="on")
            choice = compiled.compile
            compile_seconds, compile_note = choice.compile_seconds, choice.reason
            if counters["inductor"]["fxgraph_cache_hit"] > hits:
                compile_note += " (warm: inductor's on-disk cache held the graph; a cold compile takes longer)"
            if choice.compiled:
                evaluators["compiled"] = compiled
        folded = evaluators["fold"].folded
        wrong = [name for name, ev in evaluators.items()
                 if (getattr(ev, "folded", None) is not None) != ("fold" in name or name == "compiled")]
        if wrong or not folded.folded_pairs:
            raise RuntimeError(f"folding is not as its name says for {', '.join(wrong) or 'fold'}")
        # values before timing: every option against the plain evaluator at the same points
        coefficients = torch.from_numpy(coefficient_rows(case.grid, 1, np.array(INDICES)))
        losses = {name: ev.evaluate(coefficients)["train_loss"].cpu().numpy()
                  for name, ev in evaluators.items()}
        differences = {name: relative_difference(v, losses["plain"]) for name, v in losses.items()}
        point = first_point_and_batch(evaluators["fold"])[0]
        layout = choose_memory_format(lambda x, f=folded, s=point: f(s, x), next(iter(case.data))[0])
        layout_rows.append((model_name, f"{layout.ratio:.2f}", str(layout.memory_format).split(".")[-1],
                            layout.reason))
        sides = [Side(name, case.points(ev, 1)) for name, ev in evaluators.items()]
        result = side_by_side(Side("bare", case.bare), sides, repeats)
        ratios = {name: median(result[name]["cpu"]) for name in evaluators}
        seconds = {name: median(result[name]["seconds"]) for name in evaluators}
        bare_ms = median(result["bare"]["seconds"]) * 1e3
        rows.append([model_name, num_images, case.batch_size, f"{bare_ms:.0f}", repeats,
                     *[spread(result[n]["cpu"]) if n in evaluators else "—" for n in OPTIONS],
                     f"{max(differences.values()):.1e}", f"{compile_seconds:.0f}"])
        section.targets += targets(model_name, num_images, ratios, seconds, differences,
                                   compile_seconds, compile_note, len(folded.folded_pairs), quick)
    section.body += [
        "Per-point cost ÷ bare eager NCHW forward pass over the same data: median [min–max] over "
        "repetitions of CPU-time ratios (the sides take turns). `plain` is the evaluator with "
        "`fold=False`; the compiled column is the steady state after the compile, which is "
        "reported apart.",
        "",
        *table(["model", "N", "batch", "bare pass (CPU ms)", "reps", *OPTIONS,
                "max rel. Δloss vs plain", "compile (s, wall)"], rows),
        "",
        "`llv.fold.choose_memory_format` at set-up (one batch in each layout, best of 3, "
        "channels_last when at least 3 % faster):",
        "",
        *table(["model", "channels_last ÷ NCHW", "chosen", "reason"], layout_rows),
    ]
    return section


def targets(model_name, num_images, ratios, seconds, differences, compile_seconds, compile_note,
            num_folded, quick) -> list[Target]:
    """Issue 20's exact-mode targets for one model, met or missed and why."""
    where = f"{model_name}, N={num_images}"
    plain, fold = ratios["plain"], ratios["fold"]
    cl, both = ratios["channels_last"], ratios["fold + channels_last"]
    notes = {
        "fold": f"folding removes the passes of {num_folded} BatchNorm layers: {plain - fold:+.2f} "
                f"of a bare pass here (plain point {plain:.2f}); alone it stays above the "
                "target, which needs channels_last as well (next rows)",
        "channels_last": f"keeps the {num_folded} BatchNorm passes; gains {plain - cl:+.2f} of "
                         "a bare pass over the plain point",
        "fold + channels_last": f"fold {plain - fold:+.2f} and channels_last {plain - cl:+.2f} "
                                f"of a bare pass alone, together {plain - both:+.2f}",
    }
    out = []
    for name, note in notes.items():
        met = ratios[name] <= EAGER_TARGET
        out.append(Target(f"exact point, {name} ÷ bare eager NCHW forward, {where}", ratios[name],
                          "max", EAGER_TARGET, note=("" if met else "missed: ") + note))
    if "compiled" in ratios:
        steady = ratios["compiled"]
        gain = seconds["fold + channels_last"] - seconds["compiled"]
        repay = compile_seconds / gain if gain > 0 else float("inf")
        note = (f"{compile_note}; compile {compile_seconds:.0f} s, repaid after about {repay:.0f} "
                f"points of this size against fold + channels_last" if gain > 0 else
                f"{compile_note}; not faster than fold + channels_last, so never repaid")
        if steady > COMPILED_TARGET:
            note += "; the compile did not gain enough over fold + channels_last here"
        out.append(Target(f"exact point, compiled steady state ÷ bare eager NCHW forward, {where}",
                          steady, "max", COMPILED_TARGET, note=note))
    else:
        out.append(Target(f"exact point, compiled steady state ÷ bare eager NCHW forward, {where}",
                          float("nan"), "max", COMPILED_TARGET, note=compile_note))
    out.append(Target(f"exact point: every option's losses ÷ the plain evaluator's, {where} "
                      "(max rel. difference)", max(differences.values()), "max", VALUE_TOLERANCE,
                      unit="", note=", ".join(f"{n} {d:.1e}" for n, d in differences.items()
                                              if n != "plain")))
    return out


if __name__ == "__main__":  # python -m benchmarks.exact_mode [--quick]
    run_alone(run)
