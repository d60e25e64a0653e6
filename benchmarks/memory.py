"""Memory of a surface run: peak RSS against what it must hold, and no growth with points.

Each run is a real ``llv surface`` (``llv.tasks.surface.run``) in a fresh subprocess, on CPU.
The child first does a throw-away run of the same command on two images and two points, so every
library the run loads lazily is loaded; its resident set then is the baseline (Python, torch,
h5py, Hydra, rich, oneDNN's kernels). It then does the measured run, sampling ``VmRSS`` after
every chunk of points, and reports its peak (``VmHWM``, the kernel's high-water mark of its
address space; ``ru_maxrss`` would include the parent's RSS at the fork). The parent estimates
what the run must hold: the model, two directions, the evaluation data as tensors, and one
batch of activations (the sum of every module's output on one batch, from forward hooks: an
upper bound, since an eval-mode pass frees each activation once the next layer has used it).

The peak is measured twice: for the default run, which ends with the curvature cross-check
(dᵀHd along each axis at the centre, ``llv.tasks._grid.cross_check_curvature``), and with
``summary.cross_check=false``, the point loop alone. In the default run the child also splits
the peak in two: the high-water mark just before the cross-check starts, and (after resetting it
through ``/proc/self/clear_refs``) the high-water mark from the cross-check to the end, so a
missed target says which part holds the peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    ROOT,
    Section,
    Target,
    build,
    mib,
    peak_rss,
    proc_status,
    resolve_batch_size,
    table,
)

#: peak: CIFAR-shaped data large enough to dominate; growth: cheap points, many of them
FULL = {
    "peak": {"model": "resnet8", "channels": 3, "size": 32, "images": 2048, "points": 2},
    "growth": {
        "model": "resnet8",
        "channels": 1,
        "size": 8,
        "images": 256,
        "points": 510,
        "early": 10,
        "late": 500,
    },
}
QUICK = {
    "peak": {"model": "resnet8", "channels": 3, "size": 32, "images": 64, "points": 2},
    "growth": {
        "model": "resnet8",
        "channels": 1,
        "size": 8,
        "images": 32,
        "points": 60,
        "early": 10,
        "late": 60,
    },
}
CHUNK_POINTS = 10  # points per evaluate call, so RSS is sampled every 10 points
#: examples per pass of the cross-check's dᵀHd, probed apart (``curvature_along`` alone)
PROBE_BATCHES = (16, 32, 64, 128)


def overrides(spec: dict, out: Path, checkpoint: Path | None = None) -> list[str]:
    items = [
        *spec.get("extra", []),
        f"model={spec['model']}",
        "dataset=synthetic",
        f"dataset.in_channels={spec['channels']}",
        f"dataset.image_size={spec['size']}",
        f"dataset.num_train={spec['images']}",
        "grid=1d_51",
        f"grid.x=-1:1:{spec['points']}",
        f"out={out}",
        "probe=false",
        "plot=false",
        f"eval.chunk_points={CHUNK_POINTS}",
        "device=cpu",
        "dist=none",
    ]
    return items + ([f"checkpoint={checkpoint}"] if checkpoint else [])


def estimate(spec: dict, out: Path) -> tuple[dict[str, int], Path]:
    """Bytes the run must hold, by part; and a checkpoint of the (random-init) model."""
    import torch

    from llv.checkpoint import save_checkpoint
    from llv.data import load_eval_data

    cfg, model = build(overrides(spec, out))
    checkpoint = save_checkpoint(out.parent / f"{out.name}.pt", model, 0, cfg, {})
    data = load_eval_data(cfg.dataset, "train", device="cpu")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    batch = data.inputs[: resolve_batch_size(cfg.eval.batch_size)]
    activations = [batch.numel() * batch.element_size()]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor) and not list(module.children()):
            activations.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(batch)
    for h in handles:
        h.remove()
    largest = max(activations[1:])
    parts = {
        "model (parameters + buffers)": params + buffers,
        "two directions": 2 * params,
        "evaluation data (inputs + targets)": data.inputs.numel() * data.inputs.element_size()
        + data.targets.numel() * data.targets.element_size(),
        f"one batch of activations ({len(batch)} images, sum over modules)": sum(activations),
    }
    return parts, checkpoint, largest


def measure(spec: dict, out: Path, checkpoint: Path, threads: int) -> dict:
    """Run the child and return what it reports."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    warmup = {**spec, "images": 2, "points": 2}
    payload = json.dumps(
        {
            "overrides": overrides(spec, out, checkpoint),
            "threads": threads,
            "warmup": overrides(warmup, out.parent / f"{out.name}-warmup", checkpoint),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", payload],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(payload: str) -> None:
    """In a fresh process: baseline RSS, then the surface run with RSS sampled per chunk."""
    spec = json.loads(payload)
    import torch

    import llv.tasks.surface
    from llv.config import compose
    from llv.console import configure
    from llv.evaluate import PointEvaluator
    from llv.tasks.session import Session

    torch.set_num_threads(int(spec["threads"]))
    configure(quiet=True)
    llv.tasks.surface.run(compose("surface", spec["warmup"]))
    cfg = compose("surface", spec["overrides"])
    baseline = proc_status("VmRSS")
    samples: dict[int, int] = {}
    original = PointEvaluator.evaluate
    count = [0]

    def evaluate(self, coefficients):
        values = original(self, coefficients)
        count[0] += len(coefficients)
        samples[count[0]] = proc_status("VmRSS")
        return values

    loaded = {}
    original_data = Session.eval_data

    def eval_data(self):
        data = original_data(self)
        loaded.setdefault("rss", proc_status("VmRSS"))  # the first call loads the data
        return data

    phases: dict[str, int] = {}
    import llv.tasks._grid as grid_module

    original_check = getattr(grid_module, "cross_check_curvature", None)

    def cross_check(*args, **kwargs):
        phases["before_check"] = proc_status("VmHWM")  # the peak of everything so far
        phases["reset"] = reset_peak()
        try:
            return original_check(*args, **kwargs)
        finally:
            phases["check"] = proc_status("VmHWM")  # the cross-check's own peak

    PointEvaluator.evaluate = evaluate
    Session.eval_data = eval_data
    if original_check is not None:
        grid_module.cross_check_curvature = cross_check
    llv.tasks.surface.run(cfg)
    hwm = max(proc_status("VmHWM"), *(phases.get(k, -1) for k in ("before_check", "check")))
    print(
        json.dumps(
            {
                "baseline": baseline,
                "data_loaded": loaded.get("rss", -1),
                "samples": samples,
                "hwm": hwm,
                "maxrss": peak_rss(),
                "phases": phases,
            }
        )
    )


def probe_child(payload: str) -> None:
    """In a fresh process: the rise of the peak RSS over one call of ``HessianOperator.
    curvature_along`` (the cross-check's dᵀHd, forward over forward) or of one ``matvec``, on
    one pass of ``batch`` examples (after a call on 2 examples loads the kernels)."""
    import torch

    from llv.curvature import HessianOperator
    from llv.models import build_model

    spec = json.loads(payload)
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    model = build_model({"name": spec["model"], "in_channels": spec["channels"],
                         "num_classes": 10, "image_size": spec["size"]}).eval()
    batch = int(spec["batch"])
    inputs = torch.randn(batch, spec["channels"], spec["size"], spec["size"])
    targets = torch.randint(0, 10, (batch,))
    small = HessianOperator(model, inputs[:2], targets[:2], loss="ce", batch_size=2)
    op = HessianOperator(model, inputs, targets, loss="ce", batch_size=batch)
    v = torch.randn(op.n)
    getattr(small, spec["kind"])(v)
    reset_peak()
    before = proc_status("VmRSS")
    getattr(op, spec["kind"])(v)
    print(json.dumps({"rise": proc_status("VmHWM") - before}))


def probe(spec: dict, threads: int) -> dict:
    """``kind:batch -> bytes``: :func:`probe_child` for each kind and batch, each in a fresh
    process (so no measurement inherits memory another one freed)."""
    out = {}
    for kind in ("curvature_along", "matvec"):
        for batch in PROBE_BATCHES:
            payload = json.dumps({**spec, "threads": threads, "kind": kind, "batch": batch})
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", "--probe", payload],
                cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                capture_output=True, text=True, timeout=900,
            )
            if done.returncode != 0:
                raise RuntimeError(f"memory probe failed: {done.stderr.strip().splitlines()[-1:]}")
            out[f"{kind}:{batch}"] = json.loads(done.stdout.strip().splitlines()[-1])["rise"]
    return out


def reset_peak() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS (Linux ``clear_refs``); whether it took."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run(quick: bool = False, threads: int = 1) -> Section:
    settings = QUICK if quick else FULL
    section = Section("Memory of a surface run (CPU, subprocess)")
    with tempfile.TemporaryDirectory(prefix="llv-bench-memory-") as tmp:
        peak_spec, growth_spec = settings["peak"], settings["growth"]
        parts, checkpoint, largest = estimate(peak_spec, Path(tmp) / "peak")
        peak = measure(peak_spec, Path(tmp) / "peak", checkpoint, threads)
        loop_spec = {**peak_spec, "extra": ["summary.cross_check=false"]}
        loop = measure(loop_spec, Path(tmp) / "loop", checkpoint, threads)
        _, checkpoint, _ = estimate(growth_spec, Path(tmp) / "growth")
        growth = measure(growth_spec, Path(tmp) / "growth", checkpoint, threads)
    probed = probe(peak_spec, threads)
    expected = sum(parts.values())
    batch = resolve_batch_size("auto")

    def used(report):  # VmHWM is this program's; ru_maxrss also counts the parent's RSS at the fork
        return (report["hwm"] if report["hwm"] > 0 else report["maxrss"]) - report["baseline"]

    name = (
        f"{peak_spec['model']}, N={peak_spec['images']} {peak_spec['channels']}×"
        f"{peak_spec['size']}², batch {batch}"
    )
    ratio = used(peak) / expected
    phases = peak.get("phases", {})
    split = phases.get("reset") and "check" in phases
    if split:
        before_check = phases["before_check"] - peak["baseline"]
        in_check = phases["check"] - peak["baseline"]
        where = (f"in the default run the peak before the cross-check is {mib(before_check)}, "
                 f"from the cross-check to the end {mib(in_check)} above the baseline")
    else:
        where = "the cross-check's own peak could not be separated (no clear_refs)"
    note = f"{mib(used(peak))} against {mib(used(loop))} with summary.cross_check=false; {where}"
    note += (f"; dᵀHd alone (`curvature_along`, forward over forward) raises the peak by "
             f"{mib(probed[f'curvature_along:{batch}'])} on one pass of {batch} images, "
             f"{mib(probed[f'curvature_along:{min(PROBE_BATCHES)}'])} on {min(PROBE_BATCHES)} "
             "(probe table)")
    if ratio > 1.0:
        if split and in_check > before_check:
            note = ("missed: the curvature cross-check (dᵀHd along each direction at the centre) "
                    "holds the peak; " + note)
        else:
            note = ("missed: the point loop holds the peak, not the cross-check (see the next "
                    "row); " + note)
    section.targets.append(
        Target(
            "peak RSS − baseline ÷ (model + 2 directions + data + 1 batch of activations), "
            f"default run, {name}",
            ratio,
            "max",
            1.0,
            note=note,
        )
    )
    data_cost = loop["data_loaded"] - loop["baseline"]
    data_bytes = parts["evaluation data (inputs + targets)"]
    loop_ratio = used(loop) / expected
    section.targets.append(
        Target(
            "peak RSS − baseline ÷ the same estimate, point loop alone "
            f"(summary.cross_check=false), {name}",
            loop_ratio,
            "max",
            1.0,
            note=""
            if loop_ratio <= 1.0
            else f"loading the evaluation data alone raised RSS by {mib(data_cost)} for "
            f"{mib(data_bytes)} of tensors (the synthetic split is generated in memory and kept "
            "twice: the raw-split cache, float32 here, and the normalized tensors); the point "
            "loop itself does not grow (next row)",
        )
    )
    samples = {int(k): v for k, v in growth["samples"].items()}
    early = samples[min(samples, key=lambda k: abs(k - growth_spec["early"]))]
    late_at = min(samples, key=lambda k: abs(k - growth_spec["late"]))
    late = samples[late_at]
    section.targets.append(
        Target(
            f"RSS after {late_at} points ÷ RSS after {growth_spec['early']} points",
            late / early,
            "max",
            1.01,
            note=f"{(late - early) / 2**20:+.1f} MiB over {late_at - growth_spec['early']} points",
        )
    )
    rows = [(part, mib(n)) for part, n in parts.items()]
    rows += [
        ("**estimate (sum)**", f"**{mib(expected)}**"),
        ("baseline RSS (interpreter + libraries, before the run)", mib(peak["baseline"])),
        ("peak RSS (VmHWM), default run", mib(peak["hwm"])),
        ("**peak − baseline, default run**", f"**{mib(used(peak))}**"),
        ("**peak − baseline, summary.cross_check=false**", f"**{mib(used(loop))}**"),
        *(
            [
                ("default run: peak − baseline before the cross-check", mib(before_check)),
                ("default run: peak − baseline from the cross-check to the end", mib(in_check)),
            ]
            if split
            else []
        ),
        ("RSS − baseline once the evaluation data are loaded (same run)", mib(data_cost)),
        ("(for scale: the largest single module output on one batch)", mib(largest)),
    ]
    probe_rows = [(b, mib(probed[f"curvature_along:{b}"]), mib(probed[f"matvec:{b}"]))
                  for b in PROBE_BATCHES]
    trace = sorted(samples.items())
    shown = [trace[0], *trace[len(trace) // 4 :: max(len(trace) // 4, 1)], trace[-1]]
    section.body += [
        f"Peak: `llv surface` on {peak_spec['images']} synthetic {peak_spec['channels']}×"
        f"{peak_spec['size']}×{peak_spec['size']} images, {peak_spec['model']}, "
        f"{peak_spec['points']} points, default batch size ({batch} on CPU), probe and plot off; "
        "once as is, once with `summary.cross_check=false`.",
        "",
        *table(["part", "bytes"], rows),
        "",
        f"The cross-check's products alone, in a fresh process ({peak_spec['model']}, random "
        f"init, {peak_spec['channels']}×{peak_spec['size']}² images): the rise of the peak "
        "(VmHWM reset first) over the RSS before one call, by examples per pass: what the "
        "cross-check's pass size costs.",
        "",
        *table(["examples per pass", "dᵀHd forward over forward (`curvature_along`)",
                "one Hessian-vector product (`matvec`, for comparison)"], probe_rows),
        "",
        f"Growth: `llv surface` with {growth_spec['points']} points of {growth_spec['model']} on "
        f"{growth_spec['images']} {growth_spec['channels']}×{growth_spec['size']}² images, RSS "
        f"sampled every {CHUNK_POINTS} points (baseline {mib(growth['baseline'])}):",
        "",
        *table(["points done", "RSS"], [(k, mib(v)) for k, v in dict(shown).items()]),
    ]
    return section


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe_child(sys.argv[2])
