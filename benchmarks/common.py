"""What every benchmark shares: the clock, side-by-side timing, targets, the machine, data.

Every target is a ratio of two costs measured side by side in one run: the two sides take
turns (A B … B A), each ratio is formed within one repetition, and the reported value is the
median over repetitions. The clock is the CPU time of this process and of the children it
reaped (``getrusage``), not wall time: on a machine shared with other jobs wall time measures
the queue as much as the work, while CPU time of a single-threaded run moves little with the
load. On an idle core, CPU-time ratios and wall-time ratios of single-threaded work agree.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ clock


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its reaped children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@dataclass
class Timing:
    cpu: float
    wall: float


def timed(fn: Callable[[], object]) -> tuple[Timing, object]:
    """Run ``fn`` once; its CPU and wall seconds and its result."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return Timing(cpu_seconds() - cpu, time.perf_counter() - wall), result


@dataclass
class Side:
    """One side of a comparison: ``run()`` does one unit of work covering ``points`` points."""

    name: str
    run: Callable[[], object]
    points: int = 1


def side_by_side(
    baseline: Side, others: Sequence[Side], repeats: int, warmup: bool = True
) -> dict[str, dict[str, list[float]]]:
    """Per-point cost of each side ÷ per-point cost of ``baseline``, per repetition.

    Each repetition runs the baseline, then every other side, then the baseline again (the
    others in reverse order on odd repetitions), so a slow drift of the machine's speed hits
    numerator and denominator alike; the denominator is the mean of the two baseline runs.

    Returns:
        ``name -> {"cpu": [ratio per repetition], "wall": [...], "seconds": [CPU s per point],
        "wall_seconds": [wall s per point]}``, the baseline with its own seconds only.
    """
    if warmup:  # one-off costs (kernel selection, vmap tracing, page faults) stay out
        for side in (baseline, *others):
            side.run()
    out = {
        s.name: {"cpu": [], "wall": [], "seconds": [], "wall_seconds": []}
        for s in (baseline, *others)
    }
    for rep in range(repeats):
        first, _ = timed(baseline.run)
        order = list(others) if rep % 2 == 0 else list(reversed(others))
        measured = {s.name: timed(s.run)[0] for s in order}
        last, _ = timed(baseline.run)
        base_cpu = (first.cpu + last.cpu) / 2 / baseline.points
        base_wall = (first.wall + last.wall) / 2 / baseline.points
        out[baseline.name]["seconds"].append(base_cpu)
        out[baseline.name]["wall_seconds"].append(base_wall)
        for side in others:
            t = measured[side.name]
            out[side.name]["cpu"].append(t.cpu / side.points / base_cpu)
            out[side.name]["wall"].append(t.wall / side.points / base_wall)
            out[side.name]["seconds"].append(t.cpu / side.points)
            out[side.name]["wall_seconds"].append(t.wall / side.points)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median [min–max]`` of a list of ratios."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{median(values):.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def steady_allocator() -> bool:
    """Make glibc keep freed memory, so page faults do not depend on the allocator's history.

    By default glibc returns large freed blocks to the kernel (``mmap`` above a threshold that
    moves with what was freed before, heap trimming above another), and the next pass pays a
    page fault per 4 KiB touched. Which side of a comparison pays then depends on what ran
    before: measured here, a bare ResNet-56 pass took 0.3 s of page faults (140k minor faults)
    while the llv point right after it took none. Fixed thresholds make both sides reuse memory.
    Returns whether the setting took (glibc only).
    """
    import ctypes
    import ctypes.util

    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.mallopt(m_trim_threshold, 1 << 30)
        mmap = libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest allowed value
        return bool(trim and mmap)
    except (OSError, AttributeError):
        return False


# ------------------------------------------------------------------------------ targets


@dataclass
class Target:
    """A measured ratio against its bound.

    ``kind``: ``"max"`` (value ≤ bound), ``"below"`` (value < bound), ``"min"`` (value ≥ bound)
    or ``"info"`` (reported, no bound). ``value`` NaN with ``note`` = not run. ``at_least``:
    the value is a lower bound (the slower side was stopped early), so a ``"min"`` target it
    does not reach is undetermined rather than missed.
    """

    name: str
    value: float
    kind: str
    bound: float | None = None
    note: str = ""
    unit: str = "×"
    at_least: bool = False

    @property
    def met(self) -> bool | None:
        if self.kind == "info" or self.bound is None or self.value != self.value:
            return None
        if self.at_least and self.kind == "min" and self.value < self.bound:
            return None
        if self.kind == "max":
            return self.value <= self.bound
        if self.kind == "below":
            return self.value < self.bound
        return self.value >= self.bound

    @property
    def target_text(self) -> str:
        if self.kind == "info" or self.bound is None:
            return "—"
        sign = {"max": "≤", "below": "<", "min": "≥"}[self.kind]
        return f"{sign} {self.bound:g}{self.unit}"

    @property
    def status(self) -> str:
        if self.value != self.value:
            return "not run"
        met = self.met
        if met is None:
            return "undetermined (lower bound)" if self.at_least and self.kind != "info" else "info"
        if met:
            return "**met**"
        factor = (
            self.value / self.bound if self.kind in ("max", "below") else self.bound / self.value
        )
        return f"**missed** by {factor:.3f}×" if factor < 1.1 else f"**missed** by {factor:.2f}×"

    def value_text(self) -> str:
        if self.value != self.value:
            return "—"
        return f"{'≥ ' if self.at_least else ''}{self.value:.3g}{self.unit}"


@dataclass
class Section:
    """One benchmark's share of RESULTS.md."""

    title: str
    targets: list[Target] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    seconds: float = 0.0


def run_alone(run: Callable[..., Section], quiet: bool = False) -> None:
    """``python -m benchmarks.<section> [--quick]``: run one section and print its targets and
    tables (one thread, as ``make bench`` runs them)."""
    import sys

    import torch

    if quiet:
        from llv.console import configure

        configure(quiet=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    section = run(quick="--quick" in sys.argv)
    for t in section.targets:
        print(f"{t.name}: {t.value_text()} {t.status} {t.note}")
    print("\n".join(section.body))
    print(f"({time.perf_counter() - start:.0f} s)")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table as lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


# ------------------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def memory_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_rows(threads: int) -> list[tuple[str, str]]:
    import numpy
    import torch

    import llv

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return [
        ("CPU", f"{cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} logical)"),
        ("memory", f"{memory_total_gib():.1f} GiB"),
        ("GPU", gpu),
        ("torch threads", f"{threads} (intra-op), set by `--threads`"),
        (
            "versions",
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"numpy {numpy.__version__}, llv {llv.__version__} (git {git_commit()})",
        ),
        ("OS", f"{platform.system()} {platform.release()}"),
    ]


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------ memory


def proc_status(key: str) -> int:
    """A ``/proc/self/status`` entry in bytes (``VmRSS``, ``VmHWM``); -1 where unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss`` is KiB on Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------ models and data


def cifar_overrides(model: str, num_images: int, extra: Sequence[str] = ()) -> list[str]:
    """Config overrides: ``model`` on CIFAR-shaped (3×32×32, 10 classes) synthetic images."""
    return [
        f"model={model}",
        "dataset=synthetic",
        "dataset.in_channels=3",
        "dataset.image_size=32",
        "dataset.num_classes=10",
        f"dataset.num_train={num_images}",
        "device=cpu",
        "dist=none",
        *extra,
    ]


def resolve_batch_size(value, device: str = "cpu", example_shape=(3, 32, 32)) -> int:
    """A batch-size setting as llv resolves it: ``auto`` is :func:`llv.batches.auto_batch_size`
    (128 for 3×32×32 images on a CPU, 2048 for 8×8, 1024 on a GPU), the library's own rule,
    so that the benchmarks cannot drift from what a run uses."""
    from llv.batches import resolve_batch_size as resolve

    return resolve(value, tuple(example_shape), str(device))


@dataclass
class CifarCase:
    """A network on seeded CIFAR-shaped synthetic data, with directions, a 51×51 grid and llv
    evaluators of its grid points (built through the library, no configuration)."""

    name: str
    model: object
    data: object  # llv.batches.Batches, NCHW
    space: object
    base: dict
    directions: object  # (2, P)
    grid: object
    batch_size: int
    cursor: dict = field(default_factory=lambda: {"next": 0})

    @property
    def num_params(self) -> int:
        return self.space.numel

    def bare(self, net=None, channels_last: bool = False) -> None:
        """One bare eager pass of ``net`` (default: the model) over the data, no_grad."""
        import torch

        net = net if net is not None else self.model
        layout = torch.channels_last if channels_last else torch.contiguous_format
        with torch.no_grad():
            for inputs, _ in self.data:
                net(inputs.contiguous(memory_format=layout) if channels_last else inputs)

    def evaluator(self, points_per_batch: int = 1, channels_last: bool = False, **options):
        from llv.evaluate import PointEvaluator

        return PointEvaluator(self.model, self.space, self.base, self.directions,
                              {"train": self.data}, loss="ce", points_per_batch=points_per_batch,
                              channels_last=channels_last, **options)

    def points(self, evaluator, k: int = 1) -> Callable[[], dict]:
        """``run()``: the engine's work for the next ``k`` grid points (rows, evaluate, numpy)."""
        import numpy as np
        import torch

        from llv.grid import coefficient_rows

        def run():
            start = self.cursor["next"]
            indices = np.arange(start, start + k) % self.grid.num_points
            self.cursor["next"] = start + k
            rows = torch.from_numpy(coefficient_rows(self.grid, 1, indices))
            return {name: v.cpu().numpy() for name, v in evaluator.evaluate(rows).items()}

        return run


def cifar_case(model_name: str, num_images: int, batch_size: int | str = "auto", seed: int = 0,
               bn_statistics: bool = True, device: str = "cpu") -> CifarCase:
    """``model_name`` (random init; BatchNorm statistics and affine parameters randomized
    with ``bn_statistics``, so that folding them is not the identity) on ``num_images``
    seeded 3×32×32 images, 10 classes, batches of ``batch_size``, fp32, on ``device``."""
    import torch

    from llv.api import directions
    from llv.batches import as_batches
    from llv.grid import GridSpec
    from llv.models import build_model
    from llv.params import ParameterSpace

    torch.manual_seed(seed)
    model = build_model({"name": model_name, "in_channels": 3, "num_classes": 10,
                         "image_size": 32}).eval()
    generator = torch.Generator().manual_seed(seed)
    if bn_statistics:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    n = m.num_features
                    m.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                    m.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                    m.weight.copy_(1 + 0.1 * torch.randn(n, generator=generator))
                    m.bias.copy_(0.1 * torch.randn(n, generator=generator))
    inputs = torch.randn(num_images, 3, 32, 32, generator=generator)
    targets = torch.randint(0, 10, (num_images,), generator=generator)
    size = resolve_batch_size(batch_size, device)
    model = model.to(device)
    space = ParameterSpace.of(model, "weights")
    base = dict(zip(space.names, space.values(model)))
    data = as_batches((inputs, targets), batch_size=size, device=device)
    return CifarCase(model_name, model, data, space,
                     base, directions(model, ndim=2, seed=seed).flat(),
                     GridSpec.of((-1, 1, 51), (-1, 1, 51)), size)


def build(overrides: Sequence[str], seed: int = 0):
    """``(cfg, model in eval mode)`` for the surface config with ``overrides`` (random init)."""
    import torch

    from llv.config import compose
    from llv.models import build_model

    cfg = compose("surface", list(overrides))
    torch.manual_seed(seed)
    return cfg, build_model(cfg.model).eval()
