#!/usr/bin/env python
"""The numbers of one experiment of ``scripts/reproduce.py``, as Markdown tables.

    python scripts/summarize.py fig3 --cpu          # prints, and writes outputs/experiments/fig3_cpu.md

Per step kind: training runs give the final losses, accuracies, test error and the L2 norm of
the convolutional and fully connected weights; surfaces their ``summary_*`` attributes
(curvature by second difference and flatness radius along each axis) and, in 2D, the share of
grid points where the surface is not locally convex; interpolations the loss at both ends, the
barrier between them and the curvature at each end; Hessian points every scalar they store
(λmax, λmin, trace, sharpness measures); Hessian grids the median |λmin/λmax|; trajectories the
variance the two PCA directions explain.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402  (the experiment table)


def nonconvex_fraction(loss: np.ndarray, x: np.ndarray, y: np.ndarray, below: float | None = None):
    """Share of interior grid points whose 2x2 finite-difference Hessian of ``loss`` (shaped
    (ny, nx)) has a negative eigenvalue, and the median |λmin/λmax| of those 2x2 Hessians.

    ``below`` keeps only points whose loss is under that value (the basin, not the walls).

    >>> xs = np.linspace(-1, 1, 11)
    >>> X, Y = np.meshgrid(xs, xs)
    >>> nonconvex_fraction(X**2 + Y**2, xs, xs)[0], nonconvex_fraction(X**2 - Y**2, xs, xs)[0]
    (0.0, 1.0)
    """
    hx, hy = x[1] - x[0], y[1] - y[0]
    c = loss[1:-1, 1:-1]
    fxx = (loss[1:-1, 2:] - 2 * c + loss[1:-1, :-2]) / hx**2
    fyy = (loss[2:, 1:-1] - 2 * c + loss[:-2, 1:-1]) / hy**2
    fxy = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * hx * hy)
    mean, diff = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    high, low = mean + diff, mean - diff
    keep = np.isfinite(high) & np.isfinite(low)
    if below is not None:
        keep &= c < below
    if not keep.any():
        return float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.minimum(low, 0) / np.maximum(np.abs(high), 1e-12))
    return float(np.mean(low[keep] < 0)), float(np.median(ratio[keep]))


def train_numbers(run: Path) -> dict[str, float]:
    import torch

    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    last = rows[-1]
    state = torch.load(run / "final.pt", map_location="cpu", weights_only=False)["state_dict"]
    norm = math.sqrt(sum(float(t.double().pow(2).sum()) for k, t in state.items()
                         if t.dim() > 1 and t.is_floating_point()))
    return {"epochs": int(last["epoch"]), "train_loss": float(last["train_loss"]),
            "train_acc": float(last["train_acc"]), "test_loss": float(last["test_loss"]),
            "test_error": 100 - float(last["test_acc"]), "weight_norm": norm,
            "train_seconds": sum(float(r["seconds"]) for r in rows)}


def surface_numbers(file: Path) -> dict[str, float]:
    import h5py

    with h5py.File(file, "r") as handle:
        out = {k[len("summary_"):]: float(v) for k, v in handle.attrs.items()
               if k.startswith("summary_") and np.ndim(v) == 0 and "seconds" not in k}
        keep = ("train_centre_loss", "train_curvature_x", "train_curvature_y",
                "train_flatness_radius_x", "train_flatness_radius_y", "train_max_loss",
                "test_centre_loss", "test_centre_acc", "test_curvature_x",
                "test_flatness_radius_x")
        out = {k: v for k, v in out.items() if k in keep}
        if "ycoordinates" in handle and "train_loss" in handle:
            loss = handle["train_loss"][()]
            x, y = handle["xcoordinates"][()], handle["ycoordinates"][()]
            if loss.ndim == 2:
                out["nonconvex_share"], out["median_ratio_2d"] = nonconvex_fraction(loss, x, y)
                centre = float(out.get("train_centre_loss", np.nanmin(loss)))
                out["nonconvex_share_basin"], _ = nonconvex_fraction(loss, x, y, centre + 1.0)
    return out


def interpolation_numbers(file: Path) -> dict[str, float]:
    import h5py

    with h5py.File(file, "r") as handle:
        alphas = handle["alphas"][()]
        out = {}
        for split in ("train", "test"):
            if f"{split}_loss" not in handle:
                continue
            loss = handle[f"{split}_loss"][()]
            i0, i1 = int(np.argmin(abs(alphas))), int(np.argmin(abs(alphas - 1)))
            h = alphas[1] - alphas[0]
            out[f"{split}_loss_A"], out[f"{split}_loss_B"] = float(loss[i0]), float(loss[i1])
            out[f"{split}_barrier"] = float(np.nanmax(loss[i0:i1 + 1]) - max(loss[i0], loss[i1]))
            for end, i in (("A", i0), ("B", i1)):
                out[f"{split}_curvature_{end}"] = float((loss[i + 1] - 2 * loss[i] + loss[i - 1]) / h**2)
            if f"{split}_acc" in handle:
                acc = handle[f"{split}_acc"][()]
                out[f"{split}_acc_A"], out[f"{split}_acc_B"] = float(acc[i0]), float(acc[i1])
    return out


def hessian_numbers(file: Path) -> dict[str, float]:
    import h5py

    with h5py.File(file, "r") as handle:
        if "max_eig" in handle:
            hi, lo = handle["max_eig"][()], handle["min_eig"][()]
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.abs(lo / hi)
            ny, nx = ratio.shape
            centre = ratio[ny // 2 - ny // 4: ny // 2 + ny // 4 + 1, nx // 2 - nx // 4: nx // 2 + nx // 4 + 1]
            return {"median_ratio": float(np.nanmedian(ratio)),
                    "median_ratio_centre_half": float(np.nanmedian(centre)),
                    "ratio_at_minimizer": float(ratio[ny // 2, nx // 2]),
                    "max_ratio": float(np.nanmax(ratio))}
        skip = ("seconds", "num_hvp", "llv_version", "sha256")
        return {k: float(v) for k, v in handle.attrs.items()
                if np.ndim(v) == 0 and isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                and not any(s in k for s in skip)}


def trajectory_numbers(directory: Path) -> dict[str, float]:
    import h5py

    with h5py.File(directory / "projection.h5", "r") as handle:
        ratio = [float(v) for v in handle.attrs["explained_variance_ratio"]]
        epochs = handle["epochs"][()]
    return {"pc1": ratio[0], "pc2": ratio[1], "pc1+pc2": ratio[0] + ratio[1],
            "epochs": int(len(epochs))}


READERS = {
    "train": lambda out: train_numbers(out),
    "surface": lambda out: surface_numbers(out / "surface.h5"),
    "interpolate": lambda out: interpolation_numbers(out / "interpolation.h5"),
    "hessian": lambda out: hessian_numbers(out / "hessian.h5"),
    "trajectory": lambda out: trajectory_numbers(out),
}


def collect(name: str, cpu: bool) -> dict[str, list[tuple[str, dict[str, float]]]]:
    """{command: [(preset, numbers)]} for every compute step of ``name`` that has results."""
    tables: dict[str, list[tuple[str, dict[str, float]]]] = {}
    seen = set()
    for step in reproduce.experiments()[name].steps:
        if step.preset is None or (step.command, step.preset) in seen:
            continue
        seen.add((step.command, step.preset))
        preset = reproduce.preset_name(step.preset, cpu)
        out = Path(reproduce.preset_paths(preset)[step.command])
        try:
            numbers = READERS[step.command](out)
        except (OSError, KeyError):
            continue  # not run (yet)
        tables.setdefault(step.command, []).append((preset, numbers))
    return tables


def markdown(tables) -> str:
    lines = []
    for command, rows in tables.items():
        keys = list(dict.fromkeys(k for _, numbers in rows for k in numbers))
        lines += [f"### {command}", "", "| preset | " + " | ".join(keys) + " |",
                  "|---|" + "---:|" * len(keys)]
        for preset, numbers in rows:
            cells = [_fmt(numbers.get(k)) for k in keys]
            lines.append(f"| {preset} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="an experiment of scripts/reproduce.py")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--out", type=Path, help="Markdown file (default outputs/experiments/NAME[_cpu].md)")
    options = parser.parse_args(argv)
    name, cpu = options.name, options.cpu
    if name.endswith("_cpu"):
        name, cpu = name[:-4], True
    text = markdown(collect(name, cpu))
    out = options.out or Path("outputs/experiments") / f"{name}{'_cpu' if cpu else ''}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
