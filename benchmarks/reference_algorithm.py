"""The reference implementation's per-point algorithm, re-implemented, against llv's engine.

The reference (tomgoldstein/loss-landscape: ``plot_surface.py`` ``crunch``, ``net_plotter.py``,
``evaluation.py``, ``dataloader.py``, ``h5_util.py``, ``mpi4pytorch.py``) evaluates one grid
point like this, and so does :class:`ReferenceCrunch`:

1. ``set_weights``: the change list ``[d0*x + d1*y for d0, d1 in zip(dx, dy)]`` is computed
   from the direction file's HDF5 datasets (``read_list`` returns the datasets, not arrays, so
   every point reads both directions from the file again), in numpy on the CPU, and every
   parameter is replaced: ``p.data = w + torch.Tensor(d).type(type(w))``;
2. ``eval_loss``: the model is moved to the device (``net.cuda()``: a copy of every weight
   per point on a GPU, nothing on the CPU), then a ``DataLoader`` over the uint8 images runs
   ``ToTensor`` + ``Normalize`` on every image (``torchvision.datasets.CIFAR10.__getitem__``:
   uint8 HWC array → PIL image → transform), batch size 128, ``SubsetRandomSampler``; per
   batch ``total_loss += loss.item() * batch_size`` (a host-device sync per batch);
3. the loss and accuracy arrays go through ``mpi4pytorch.reduce_max`` (MPI ``Reduce`` with
   MAX; here a single-process stand-in, the element-wise maximum of one contribution), and
   rank 0 rewrites both whole arrays in the open surface file.

The first comparison (random-init networks, CPU time, one torch thread) makes two choices that
differ from the reference's defaults, both in its favour: the ``DataLoader`` runs in-process
(``num_workers=0``), and the per-point ``print`` is left out.

Issue 20's comparison (:func:`issue20`) runs the reference as it runs: ``plot_surface.py``
builds its loader once with ``num_workers=args.threads`` (``--threads 2``) and iterates it in
``eval_loss`` at every point; a DataLoader that is not ``persistent_workers`` starts its worker
processes anew at every iteration, so every point starts two workers (``ReferenceCrunch`` does
the same: one loader, iterated per point). Both sides run with two torch threads, on wall time,
on a ResNet-20 trained here on CIFAR-shaped data, against llv's exact mode (``llv.surface``
defaults: BatchNorm folded, ``channels_last``) and its fast mode (``approx=True``).
"""

from __future__ import annotations

import copy
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.common import (
    Section,
    Side,
    Target,
    build,
    median,
    resolve_batch_size,
    side_by_side,
    spread,
    table,
)

#: (model, channels, image size, images, repetitions)
FULL = [
    ("mlp", 1, 8, 2048, 5),
    ("resnet8", 1, 8, 2048, 5),
    ("resnet8", 3, 32, 1024, 3),
    ("resnet20", 3, 32, 512, 3),
]
QUICK = [("mlp", 1, 8, 64, 1), ("resnet8", 3, 32, 32, 1)]
#: issue 20's comparison: N training images (all evaluated), SGD steps, the grid side, the
#: reference's sample of that grid's points (timed), repetitions, torch threads, loader workers
ISSUE20_FULL = {"num_images": 3072, "train_steps": 150, "side": 7, "sample": 4, "repeats": 1,
                "threads": 2, "workers": 2}
ISSUE20_QUICK = {"num_images": 96, "train_steps": 2, "side": 3, "sample": 2, "repeats": 1,
                 "threads": 2, "workers": 2}
ISSUE20_EXACT_TARGET, ISSUE20_FAST_TARGET = 2.4, 10.0
#: uint8 ↔ float for the trained case: (pixel / 255 − 0.5) / 0.125 spans ±4 in steps of 0.031
ISSUE20_MEAN, ISSUE20_STD = [0.5] * 3, [0.125] * 3
REFERENCE_BATCH_SIZE = 128  # plot_surface.py --batch_size default
LARGE_BATCH_SIZE = 1024  # llv's GPU default, shown for what a large batch costs on a CPU
CIFAR_MEAN = [x / 255.0 for x in (125.3, 123.0, 113.9)]
CIFAR_STD = [x / 255.0 for x in (63.0, 62.1, 66.7)]
GRID = 51  # the reference's default x=-1:1:51, here with y the same
CHECK_POINTS = (0, 1300, 2600)  # flat 51×51 indices where both sides must agree


# ------------------------------------------------------------------------------ the reference


class Uint8Images(torch.utils.data.Dataset):
    """``torchvision.datasets.CIFAR10``'s item access: uint8 HWC array → PIL image → transform."""

    def __init__(self, images: np.ndarray, targets: list[int], transform):
        self.data, self.targets, self.transform = images, targets, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        img, target = self.data[index], self.targets[index]
        img = Image.fromarray(img if img.shape[-1] != 1 else img[..., 0])
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def load_dataset(
    images: np.ndarray, targets: list[int], mean, std, batch_size: int = 128, threads: int = 0
) -> torch.utils.data.DataLoader:
    """``dataloader.load_dataset``: ToTensor + Normalize per image, a SubsetRandomSampler."""
    from torchvision import transforms

    normalize = transforms.Normalize(mean=mean, std=std)
    transform = transforms.Compose([transforms.ToTensor(), normalize])
    trainset = Uint8Images(images, targets, transform)
    indices = torch.tensor(np.arange(len(trainset)))
    sampler = torch.utils.data.sampler.SubsetRandomSampler(indices)
    return torch.utils.data.DataLoader(
        trainset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=threads
    )


def get_weights(net: nn.Module) -> list[torch.Tensor]:
    return [p.data for p in net.parameters()]


def set_weights(net: nn.Module, weights, directions, step) -> None:
    """``net_plotter.set_weights`` with directions: rebuild every parameter on the CPU."""
    if len(directions) == 2:
        dx, dy = directions
        changes = [d0 * step[0] + d1 * step[1] for (d0, d1) in zip(dx, dy)]
    else:
        changes = [d * step for d in directions[0]]
    for p, w, d in zip(net.parameters(), weights, changes):
        p.data = w + torch.Tensor(d).type(type(w))


def load_directions(dir_file: Path):
    """``net_plotter.load_directions``: lists of HDF5 datasets (read on use), file left open."""
    import h5py

    f = h5py.File(dir_file, "r")

    def read_list(name):
        group = f[name]
        return [group[str(i)] for i in range(len(group))]

    if "ydirection" in f.keys():
        return [read_list("xdirection"), read_list("ydirection")], f
    return [read_list("xdirection")], f


def eval_loss(net: nn.Module, criterion, loader, device: torch.device) -> tuple[float, float]:
    """``evaluation.eval_loss`` (cross-entropy branch)."""
    correct = 0
    total_loss = 0
    total = 0
    net.to(device)  # the reference's `if use_cuda: net.cuda()`, every point
    net.eval()
    with torch.no_grad():
        for inputs, targets in loader:
            batch_size = inputs.size(0)
            total += batch_size
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = net(inputs)
            loss = criterion(outputs, targets)
            total_loss += loss.item() * batch_size
            _, predicted = outputs.max(1)
            correct += predicted.eq(targets.data).sum()
    return total_loss / total, float(100.0 * correct / total)


def reduce_max(array) -> np.ndarray:
    """Single-process stand-in for ``mpi4pytorch.reduce_max`` (``comm.Reduce`` with MAX)."""
    array = np.asarray(array, dtype="d")
    total = np.full_like(array, np.finfo(np.float64).min)
    np.maximum(total, array, out=total)
    return total


class ReferenceCrunch:
    """The body of the reference's ``crunch`` loop, one grid point per :meth:`point` call."""

    def __init__(
        self,
        net: nn.Module,
        dir_file: Path,
        loader,
        surf_file: Path,
        shape: tuple[int, ...],
        device: str | torch.device = "cpu",
    ):
        import h5py

        self.net = net
        self.weights = get_weights(net)
        self.directions, self._dir_h5 = load_directions(dir_file)
        self.loader = loader
        self.device = torch.device(device)
        self.criterion = nn.CrossEntropyLoss()
        self.losses = -np.ones(shape)
        self.accuracies = -np.ones(shape)
        self.file = h5py.File(surf_file, "w")
        self.file["train_loss"] = self.losses
        self.file["train_acc"] = self.accuracies

    def point(self, index: int, coord) -> tuple[float, float]:
        set_weights(self.net, self.weights, self.directions, coord)
        loss, acc = eval_loss(self.net, self.criterion, self.loader, self.device)
        self.losses.ravel()[index] = loss
        self.accuracies.ravel()[index] = acc
        self.losses = reduce_max(self.losses)
        self.accuracies = reduce_max(self.accuracies)
        self.file["train_loss"][:] = self.losses
        self.file["train_acc"][:] = self.accuracies
        return loss, acc

    def close(self) -> None:
        self.file.close()
        self._dir_h5.close()


def grid_coordinates(num: int = GRID) -> np.ndarray:
    """``scheduler.get_unplotted_indices``: (x, y) of every flat index of the meshgrid."""
    x = np.linspace(-1, 1, num=num)
    xs, ys = np.meshgrid(x, x)
    return np.c_[xs.ravel(), ys.ravel()]


# ------------------------------------------------------------------------------ one comparison


@dataclass
class Case:
    """The same network, images, directions and points, for the reference and for llv."""

    reference: ReferenceCrunch
    evaluator: object  # llv.evaluate.PointEvaluator
    make_evaluator: object  # batch_size -> PointEvaluator
    coordinates: np.ndarray
    num_images: int
    tmp: tempfile.TemporaryDirectory

    def reference_point(self, index: int) -> tuple[float, float]:
        return self.reference.point(index, self.coordinates[index])

    def llv_point(self, index: int, evaluator=None) -> tuple[float, float]:
        values = (evaluator or self.evaluator).evaluate(torch.from_numpy(self.coordinates[[index]]))
        values = {k: v.cpu().numpy() for k, v in values.items()}
        return float(values["train_loss"][0]), float(values["train_acc"][0])

    def close(self) -> None:
        self.reference.close()
        self.tmp.cleanup()


def make_case(
    model_name: str,
    channels: int,
    size: int,
    num_images: int,
    reference_batch_size: int = REFERENCE_BATCH_SIZE,
    threads: int = 0,
) -> Case:
    """Random-init ``model_name`` on seeded uint8 images; directions saved to an HDF5 file."""
    from llv import direction as dirs
    from llv.batches import as_batches
    from llv.data.evaluation import EvalData
    from llv.data.loading import read_split
    from llv.data.source import normalize
    from llv.evaluate import PointEvaluator
    from llv.params import ParameterSpace

    cfg, model = build(
        [
            f"model={model_name}",
            "dataset=synthetic",
            f"dataset.in_channels={channels}",
            f"dataset.image_size={size}",
            f"dataset.num_train={num_images}",
            "device=cpu",
            "dist=none",
        ]
    )
    raw = read_split(cfg.dataset, "train")
    pixels = (raw.pixels.float() * (255.0 / raw.scale)).round().clamp(0, 255).to(torch.uint8)
    mean = CIFAR_MEAN if channels == 3 else [0.3] * channels
    std = CIFAR_STD if channels == 3 else [0.4] * channels
    inputs = normalize(
        pixels, 255, torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    )
    data = {"train": EvalData(inputs, raw.labels.clone(), "synthetic", "train")}

    tmp = tempfile.TemporaryDirectory(prefix="llv-bench-")
    dir_file = Path(tmp.name) / "directions.h5"
    space = ParameterSpace.of(model, "weights")
    values = space.values(model)
    dirs.save(dirs.make_random(space, values, 2, seed=0, norm="filter"), dir_file)
    directions = dirs.load(dir_file, space, 2).flat()
    base = dict(zip(space.names, values))

    def make_evaluator(
        batch_size: int = resolve_batch_size(cfg.eval.batch_size, "cpu", (channels, size, size)),
    ):
        return PointEvaluator(
            model,
            space,
            base,
            directions,
            {split: as_batches(d, batch_size=batch_size) for split, d in data.items()},
            loss="ce",
            points_per_batch=1,
        )

    images = np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())
    loader = load_dataset(images, raw.labels.tolist(), mean, std, reference_batch_size, threads)
    reference = ReferenceCrunch(
        copy.deepcopy(model), dir_file, loader, Path(tmp.name) / "surface.h5", (GRID, GRID)
    )
    return Case(reference, make_evaluator(), make_evaluator, grid_coordinates(), num_images, tmp)


def agreement(case: Case, indices=CHECK_POINTS) -> dict[str, list[float]]:
    """Loss and accuracy of both sides at the same grid points (the honesty check)."""
    out = {"reference_loss": [], "llv_loss": [], "reference_acc": [], "llv_acc": []}
    for index in indices:
        loss, acc = case.reference_point(index)
        out["reference_loss"].append(loss)
        out["reference_acc"].append(acc)
        loss, acc = case.llv_point(index)
        out["llv_loss"].append(loss)
        out["llv_acc"].append(acc)
    return out


# ------------------------------------------------------------------------------ issue 20's comparison


def issue20(spec: dict) -> tuple[list[Target], list[str]]:
    """The reference as it runs (2 loader workers, 2 threads, wall time) against llv's exact and
    fast modes on a trained ResNet-20; targets and the subsection's lines."""
    import time

    import llv
    from benchmarks.approx_mode import (
        COVERAGE_TARGET,
        ERROR_TARGET,
        TARGET_SE,
        synthetic_cifar,
        trained_resnet20,
    )
    from benchmarks.common import load_average
    from llv import direction as dirs
    from llv.data.source import normalize
    from llv.params import ParameterSpace

    n, side, k = spec["num_images"], spec["side"], spec["sample"]
    load_before = load_average()
    threads_before = torch.get_num_threads()
    torch.set_num_threads(spec["threads"])
    tmp = tempfile.TemporaryDirectory(prefix="llv-bench-issue20-")
    reference = None
    try:
        images, labels = synthetic_cifar(n)
        mean = torch.tensor(ISSUE20_MEAN).view(-1, 1, 1)
        std = torch.tensor(ISSUE20_STD).view(-1, 1, 1)
        pixels = ((images * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)
        clipped = float(((pixels == 0) | (pixels == 255)).float().mean())
        inputs = normalize(pixels, 255, mean, std)  # what ToTensor + Normalize give the reference
        clock = time.perf_counter()
        model, accuracy = trained_resnet20(inputs, labels, spec["train_steps"])
        train_seconds = time.perf_counter() - clock
        dir_file = Path(tmp.name) / "directions.h5"
        space = ParameterSpace.of(model, "weights")
        dirs.save(dirs.make_random(space, space.values(model), 2, seed=0, norm="filter"), dir_file)
        loader = load_dataset(np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy()),
                              labels.tolist(), ISSUE20_MEAN, ISSUE20_STD, REFERENCE_BATCH_SIZE,
                              spec["workers"])
        reference = ReferenceCrunch(copy.deepcopy(model), dir_file, loader,
                                    Path(tmp.name) / "surface.h5", (side, side))
        coordinates = grid_coordinates(side)
        data = (inputs, labels)
        common = dict(directions=str(dir_file), progress=False, compile="off", probe=False)

        # values first: the reference at the centre and two corners against llv's exact mode there
        check = llv.surface(model, data, x=(-1, 1, 3), y=(-1, 1, 3), **common)
        check_loss = np.asarray(check["train_loss"], float)
        centre = (side // 2) * side + side // 2
        checked = []
        for index, (iy, ix) in ((0, (0, 0)), (centre, (1, 1)), (side * side - 1, (2, 2))):
            loss, _ = reference.point(index, coordinates[index])
            checked.append((loss, float(check_loss[iy, ix])))
        check_gap = max(abs(a - b) / max(abs(a), 1.0) for a, b in checked)

        sample = np.random.default_rng(0).choice(side * side, size=k, replace=False)
        cursor = itertools.cycle(sample)  # half before and half after the llv sides, every repetition
        per_run = max(k // 2, 1)
        surfaces = {}

        def reference_points():
            for _ in range(per_run):
                index = next(cursor)
                reference.point(index, coordinates[index])

        def exact():
            surfaces["exact"] = llv.surface(model, data, x=(-1, 1, side), y=(-1, 1, side), **common)

        def fast():
            surfaces["fast"] = llv.surface(model, data, x=(-1, 1, side), y=(-1, 1, side),
                                           approx=True, target_se=TARGET_SE, **common)

        def bare():  # the reference's net(inputs) alone: one eager NCHW pass, no loader
            with torch.no_grad():
                for start in range(0, n, REFERENCE_BATCH_SIZE):
                    model(inputs[start:start + REFERENCE_BATCH_SIZE])

        bare()  # its one-off kernel set-up stays out (the other sides warmed up in the check)
        result = side_by_side(
            Side("reference", reference_points, per_run),
            [Side("exact", exact, side * side), Side("fast", fast, side * side),
             Side("bare pass", bare, 1)],
            spec["repeats"],
            warmup=False,  # the value check above ran both sides once
        )
        load_after = load_average()
    finally:
        torch.set_num_threads(threads_before)
        if reference is not None:
            reference.close()
        tmp.cleanup()

    e = np.asarray(surfaces["exact"]["train_loss"], float).ravel()
    f = np.asarray(surfaces["fast"]["train_loss"], float).ravel()
    se = np.asarray(surfaces["fast"]["train_loss_se"], float).ravel()
    used = np.asarray(surfaces["fast"]["train_n"], float).ravel()
    span = float(e.max() - e.min())
    error = np.abs(f - e)
    within = np.where(used >= n, error <= 1e-5 * span, error <= 3 * se)
    max_error, coverage = float(error.max() / span), float(within.mean())
    timed_gap = max(abs(reference.losses.ravel()[i] - e[i]) / max(abs(e[i]), 1.0) for i in sample)
    value_gap = max(check_gap, timed_gap)

    def speedups(name, clock):  # reference per point ÷ llv per point, per repetition
        return [1.0 / r for r in result[name][clock]]

    streams_ran = int(surfaces["exact"].attrs.get("streams", 1))
    names = ("reference", "exact", "fast", "bare pass")
    ms = {name: 1e3 * median(result[name]["wall_seconds"]) for name in names}
    cpu_ms = {name: 1e3 * median(result[name]["seconds"]) for name in names}
    exact_x, fast_x = median(speedups("exact", "wall")), median(speedups("fast", "wall"))
    where = f"trained ResNet-20 on 3×32×32, N={n}"
    load = (f"load average {load_before} before, {load_after} after (1, 5, 15 min); llv exact's "
            f"CPU ÷ wall time {cpu_ms['exact'] / ms['exact']:.2f} (2 would be both threads busy)")
    how = (f"wall time, 2 torch threads on both sides, the reference's DataLoader with "
           f"{spec['workers']} workers started at every point; reference {ms['reference']:.0f} "
           f"ms/pt over {k} of the {side}×{side} grid's points")
    exact_note = (f"{how}, llv exact {ms['exact']:.0f} ms/pt (the whole {side}×{side} `llv.surface` "
                  f"call ÷ {side * side}); CPU time: {cpu_ms['reference'] / cpu_ms['exact']:.2f}× "
                  f"(workers' CPU included); {load}")
    bare_ms = ms["bare pass"]
    exact_note += (f"; a bare eager NCHW pass over the N images (the reference's `net(inputs)` "
                   f"alone) takes {bare_ms:.0f} ms: llv exact is {ms['exact'] / bare_ms:.2f}× "
                   f"of it, the reference {ms['reference'] / bare_ms:.2f}×")
    if exact_x < ISSUE20_EXACT_TARGET:
        exact_note = (f"missed: the reference is {ms['reference'] / bare_ms:.2f} bare passes per "
                      "point (the pass, plus its loader's per-image PIL + ToTensor + Normalize in "
                      "2 fresh workers, the weight rebuild and the file rewrite), llv exact "
                      f"{ms['exact'] / bare_ms:.2f}, so the ratio is their quotient; " + exact_note)
    fast_note = (f"{how}, llv fast {ms['fast']:.0f} ms/pt (the whole {side}×{side} fast "
                 f"`llv.surface` call, pilots included, ÷ {side * side}: a point's cost depends "
                 f"on where it is); at max |error| {100 * max_error:.2f} % of the exact range "
                 f"and {100 * coverage:.0f} % of points within 3 SE (the fast section's targets: "
                 f"≤ {100 * ERROR_TARGET:.1f} %, ≥ {100 * COVERAGE_TARGET:.0f} %), mean n ÷ N "
                 f"{used.mean() / n:.3f}; CPU time: {cpu_ms['reference'] / cpu_ms['fast']:.1f}×; "
                 f"{load}")
    if max_error > ERROR_TARGET or coverage < COVERAGE_TARGET:
        fast_note = "not at the fast section's error targets; " + fast_note
    if fast_x < ISSUE20_FAST_TARGET:
        fast_note = (f"missed: the fast mode used {used.mean() / n:.1%} of the examples per "
                     f"point on average, so it is at most {n / used.mean():.1f}× llv exact, "
                     f"which is {exact_x:.2f}× the reference; " + fast_note)
    targets = [
        Target(f"issue 20: reference ÷ llv exact per point (wall, 2 workers, 2 threads), {where}",
               exact_x, "min", ISSUE20_EXACT_TARGET, note=exact_note),
        Target(f"issue 20: reference ÷ llv fast mode per point (wall, 2 workers, 2 threads, "
               f"{side}×{side} grid, target_se={TARGET_SE}), {where}",
               fast_x, "min", ISSUE20_FAST_TARGET, note=fast_note),
        Target(f"issue 20: reference and llv exact agree (max abs Δloss ÷ max(loss, 1)), {where}",
               value_gap, "max", 1e-5, unit="",
               note=f"centre and two corners before timing, and the {k} timed reference points "
                    "against the timed exact surface"),
    ]
    rows = [
        ["reference (`ReferenceCrunch`, DataLoader with "
         f"{spec['workers']} workers, batch {REFERENCE_BATCH_SIZE})",
         f"{k} grid points", f"{ms['reference']:.0f}", f"{cpu_ms['reference']:.0f}", "1", "1"],
        [f"llv exact (`llv.surface`: fold + channels_last, {streams_ran} stream(s), compile off)",
         f"all {side * side}", f"{ms['exact']:.0f}", f"{cpu_ms['exact']:.0f}",
         spread(speedups("exact", "wall")), spread(speedups("exact", "cpu"))],
        [f"llv fast (`approx=True, target_se={TARGET_SE}`)", f"all {side * side}",
         f"{ms['fast']:.0f}", f"{cpu_ms['fast']:.0f}", spread(speedups("fast", "wall")),
         spread(speedups("fast", "cpu"))],
        ["(for scale) a bare eager NCHW pass over the N images, batch "
         f"{REFERENCE_BATCH_SIZE}, no loader", "1 pass", f"{bare_ms:.0f}",
         f"{cpu_ms['bare pass']:.0f}", spread(speedups("bare pass", "wall")),
         spread(speedups("bare pass", "cpu"))],
    ]
    lines = [
        "### Issue 20's comparison: the reference as it runs, wall time, trained ResNet-20",
        "",
        f"ResNet-20 trained here ({spec['train_steps']} SGD steps, as in the fast-mode section, "
        f"{train_seconds:.0f} s wall; accuracy {accuracy:.1%} on its first 512 images) on N={n} "
        "seeded synthetic CIFAR-shaped images, quantized to uint8 (the reference's input; "
        f"Normalize with mean 0.5, std 0.125, {clipped:.2%} of pixels clipped) and evaluated over all N "
        "on both sides. The reference runs as `plot_surface.py --threads 2` does: one DataLoader "
        f"with {spec['workers']} workers (not persistent), iterated at every point, so each point "
        "starts its workers anew; torch uses 2 threads on both sides; the clock is wall time "
        "(with CPU time of this process and its reaped workers beside it). The exact and fast "
        f"sides each compute the whole {side}×{side} grid in one `llv.surface` call (the fast "
        "mode's cost per point depends on where the point is, so its cost is the whole grid's ÷ "
        f"{side * side}); the reference computes {k} points of that grid drawn at random (seed 0), "
        "half before and half after the llv calls: its cost does not depend on the point. "
        f"Before timing, the reference's loss at the centre and two corners is checked against "
        f"llv's exact values ({check_gap:.1e} relative). On a shared 2-core machine wall time "
        f"includes the other jobs' load: {load}.",
        "",
        *table(["side", "points timed", "wall ms/pt", "CPU ms/pt", "speed-up (wall)",
                "speed-up (CPU)"], rows),
    ]
    return targets, lines


# ------------------------------------------------------------------------------ the benchmark


def time_case(case: Case, repeats: int, order: np.ndarray) -> dict:
    """llv at its defaults as the baseline; the reference and llv at batch 1024 side by side."""
    large_batch = case.make_evaluator(LARGE_BATCH_SIZE)
    cursor = iter(np.tile(order, 1 + 4 * (repeats + 1) // len(order)))
    return side_by_side(
        Side("llv", lambda: case.llv_point(next(cursor))),
        [
            Side("reference", lambda: case.reference_point(next(cursor))),
            Side(
                f"llv batch {LARGE_BATCH_SIZE}", lambda: case.llv_point(next(cursor), large_batch)
            ),
        ],
        repeats,
    )


def run(quick: bool = False) -> Section:
    section = Section("llv per point ÷ the reference implementation's per-point algorithm "
                      "(CPU; issue 20's comparison: wall time)")
    rows = []
    order = np.random.default_rng(0).permutation(GRID * GRID)
    for model_name, channels, size, num_images, repeats in QUICK if quick else FULL:
        case = make_case(model_name, channels, size, num_images)
        try:
            check = agreement(case)
            loss_gap = max(abs(a - b) for a, b in zip(check["reference_loss"], check["llv_loss"]))
            acc_gap = max(abs(a - b) for a, b in zip(check["reference_acc"], check["llv_acc"]))
            result = time_case(case, repeats, order)
        finally:
            case.close()
        large = f"llv batch {LARGE_BATCH_SIZE}"
        speedup = result["reference"]["cpu"]  # reference per point ÷ llv per point
        speedup_large = [r / b for r, b in zip(result["reference"]["cpu"], result[large]["cpu"])]
        shape = f"{channels}×{size}×{size}"
        rows.append(
            [
                model_name,
                shape,
                num_images,
                repeats,
                f"{median(result['reference']['seconds']) * 1e3:.0f}",
                f"{median(result['llv']['seconds']) * 1e3:.0f}",
                spread(speedup, 1),
                f"{median(result['reference']['wall']):.1f}",
                spread(speedup_large, 1),
                f"{loss_gap:.1e}",
                f"{acc_gap:.2f}",
            ]
        )
        value = median(speedup)
        ref_ms = median(result["reference"]["seconds"]) * 1e3
        llv_ms = median(result["llv"]["seconds"]) * 1e3
        scale = max(max(abs(v) for v in check["reference_loss"]), 1.0)
        note = (
            f"max abs Δloss {loss_gap:.1e} (losses up to {scale:.3g}), abs Δacc {acc_gap:.2f} "
            f"pts at {len(CHECK_POINTS)} points"
        )
        if value < 10:
            note += (
                f"; reference {ref_ms:.0f} ms/pt, llv {llv_ms:.0f} ms/pt: both do the same "
                f"forward pass, which dominates on CPU; the reference's own extra work "
                f"(per-image PIL + ToTensor + Normalize, weight rebuild from HDF5, file "
                f"rewrite) costs {ref_ms - llv_ms:.0f} ms/pt, so the gap is 1 + that ÷ the pass"
            )
        section.targets.append(
            Target(
                f"reference ÷ llv per point, {model_name} on {shape}, N={num_images}",
                value,
                "min",
                10.0,
                note=note,
            )
        )
        section.targets.append(
            Target(
                f"reference ÷ llv per point, {model_name} on {shape}: values agree "
                "(max abs Δloss ÷ max(loss, 1))",
                loss_gap / scale,
                "max",
                1e-5,
                unit="",
            )
        )
    section.body += [
        "### The per-point algorithm alone: CPU time, loader in-process, one thread",
        "",
        "These rows answer an older question (the ≥ 10× target is that question's); issue 20's "
        "rows are the subsection below. "
        "Per point, CPU time: the reference's algorithm (re-implemented in "
        "`benchmarks/reference_algorithm.py`, see its docstring: directions re-read from the "
        "HDF5 file and weights rebuilt on the CPU every point, a DataLoader over uint8 images "
        "with ToTensor + Normalize per image, batch 128, a `.item()` per batch, a reduce + whole-"
        "array HDF5 rewrite per point; the MPI reduce is a single-process stand-in, and the "
        "loader runs in-process, which spares the reference the start of two worker processes "
        "per point) against llv's `PointEvaluator` at its defaults (`eval.batch_size=auto`, "
        "`llv.batches.auto_batch_size`: 128 for 3×32×32 images on a CPU, the reference's batch "
        "size too, 2048 for 1×8×8; one point per pass). The last speed-up column is against llv "
        "at batch 1024 (its GPU default): on a CPU that batch is slower per 32×32 image "
        "(activations out of cache), which is why `auto` picks 128 there. Random-init networks; "
        "seeded synthetic images quantized to uint8, normalized the same way on both sides. "
        "Both sides are checked to give the same loss and accuracy at the same "
        "grid points before timing.",
        "",
        *table(
            [
                "model",
                "images",
                "N",
                "reps",
                "reference (CPU ms/pt)",
                "llv (CPU ms/pt)",
                "speed-up (CPU)",
                "speed-up (wall)",
                f"speed-up vs llv at batch {LARGE_BATCH_SIZE}",
                "max abs Δloss",
                "max abs Δacc (pts)",
            ],
            rows,
        ),
        "",
    ]
    targets, lines = issue20(ISSUE20_QUICK if quick else ISSUE20_FULL)
    section.targets += targets
    section.body += lines
    return section
