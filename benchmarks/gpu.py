"""GPU: a 51×51 ResNet-56 surface over 50,000 CIFAR-shaped images, per precision and layout.

Runs only where ``torch.cuda.is_available()``. For each setting (``eval.precision`` fp32 | tf32 |
bf16, ``eval.channels_last`` off | on, BatchNorm folded (the default), and at the best of those
``eval.points_per_batch`` 4 and ``eval.fold=false``) it times llv's points against a bare forward pass in the same precision and layout, side by side
(wall clock with ``torch.cuda.synchronize``; CPU time means nothing here), and projects the
51×51 grid (2,601 points) from the measured per-point time, since the whole grid would take
the better part of an hour per setting.
"""

from __future__ import annotations

import contextlib

import torch

from benchmarks.common import (
    Section,
    Side,
    Target,
    cifar_case,
    median,
    side_by_side,
    table,
)

FULL = {"images": 50_000, "points": 4, "repeats": 3}
QUICK = {"images": 2048, "points": 2, "repeats": 1}
SETTINGS = [
    ("fp32", False),
    ("tf32", False),
    ("bf16", False),
    ("fp32", True),
    ("tf32", True),
    ("bf16", True),
]
GRID_POINTS = 51 * 51


def measure(
    device: str,
    images: int,
    points: int,
    repeats: int,
    settings=SETTINGS,
    batched: tuple[int, ...] = (4,),
) -> list[dict]:
    """Per-point seconds and ratio to a bare pass for each (precision, channels_last, ppb)."""
    from llv.evaluate import precision_flags

    case = cifar_case("resnet56", images, device=device)
    device = torch.device(device)
    model, batch_size = case.model, case.batch_size
    inputs = [x for x, _ in case.data]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def one(precision, channels_last, ppb, fold=True):
        count = max(points, ppb)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        net = model.to(memory_format=layout)
        batches = [x.contiguous(memory_format=layout) for x in inputs]
        evaluator = case.evaluator(ppb, channels_last, precision=precision, fold=fold)
        autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if precision == "bf16"
            else contextlib.nullcontext
        )

        def bare():
            with torch.no_grad(), autocast(), precision_flags(precision, device):
                for x in batches:
                    net(x)
            sync()

        run_points = case.points(evaluator, count)

        def llv_points():
            values = run_points()
            sync()
            return values

        result = side_by_side(Side("bare", bare), [Side("llv", llv_points, count)], repeats)
        return {
            "precision": precision,
            "channels_last": channels_last,
            "ppb": ppb,
            "fold": fold,
            "batch": batch_size,
            "ratio": median(result["llv"]["wall"]),
            "seconds": median(result["llv"]["wall_seconds"]),
            "bare": median(result["bare"]["wall_seconds"]),
        }

    rows = [one(p, c, 1) for p, c in settings]
    best = min(rows, key=lambda r: r["seconds"])
    rows += [one(best["precision"], best["channels_last"], k) for k in batched]
    rows.append(one(best["precision"], best["channels_last"], 1, fold=False))
    return rows


def run(quick: bool = False, device: str | None = None) -> Section:
    section = Section("GPU: 51×51 ResNet-56 over 50,000 CIFAR-shaped images")
    settings = QUICK if quick else FULL
    if device is None:
        if not torch.cuda.is_available():
            section.targets.append(
                Target(
                    "GPU 51×51 ResNet-56, 50k images, fp32/tf32/bf16 × channels_last",
                    float("nan"),
                    "info",
                    note="not run: no GPU",
                )
            )
            section.body.append(
                "Not run: no GPU on this machine (`torch.cuda.is_available()` is "
                "false). Run `python benchmarks/run.py --only gpu` on one."
            )
            return section
        device = "cuda"
    rows = measure(device, settings["images"], settings["points"], settings["repeats"])
    name = torch.cuda.get_device_name(0) if device == "cuda" else device
    for r in rows:
        if r["ppb"] == 1:
            section.targets.append(
                Target(
                    f"GPU point ÷ bare forward, {r['precision']}"
                    + (", channels_last" if r["channels_last"] else "")
                    + ("" if r["fold"] else ", BN not folded"),
                    r["ratio"],
                    "max",
                    1.05,
                )
            )
    best = min(rows, key=lambda r: r["seconds"])
    section.targets.append(
        Target(
            f"GPU 51×51 grid, projected minutes at the best setting ({best['precision']}, "
            f"channels_last={best['channels_last']}, ppb={best['ppb']}, fold={best['fold']})",
            best["seconds"] * GRID_POINTS / 60,
            "info",
            unit=" min",
        )
    )
    section.body += [
        f"{name}; {settings['images']:,} images, batch {rows[0]['batch']} "
        f"(`eval.batch_size=auto`), {settings['points']} points per timing, "
        f"{settings['repeats']} repetitions, wall clock (synchronized).",
        "",
        *table(
            [
                "precision",
                "channels_last",
                "ppb",
                "BN folded",
                "bare pass (s)",
                "point (s)",
                "point ÷ bare",
                "51×51 projected (min)",
            ],
            [
                (
                    r["precision"],
                    r["channels_last"],
                    r["ppb"],
                    r["fold"],
                    f"{r['bare']:.3f}",
                    f"{r['seconds']:.3f}",
                    f"{r['ratio']:.2f}",
                    f"{r['seconds'] * GRID_POINTS / 60:.1f}",
                )
                for r in rows
            ],
        ),
    ]
    return section
