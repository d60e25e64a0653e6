"""The figures of docs/plane-and-curves.md, from three small MLPs on scikit-learn's digits.

    python scripts/plane_and_curves_figures.py [--out docs/figures] [--quick]

Everything runs on the CPU in a few minutes: three 64-32-10 MLPs trained from seeds 0, 1, 2
(Adam, full data), then

- ``plane_three_models.png``: the loss over the plane through the three models (orthonormal
  basis), each model marked;
- ``curve_vs_line.png``: a trained Bézier curve from model A to model B beside the straight
  line (``llv.connect``), training and test loss;
- ``curve_plane.png``: the plane through A, B and the curve's control point M with both paths
  (Garipov et al. 2018, Fig. 1);
- ``auto_extent.png``: the loss along a random filter-normalized direction and the range
  ``llv.extent`` chose (the loss doubles at its ends).

The PNGs are re-encoded with a 64-colour palette, small enough to commit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn


def digits() -> dict:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data / 16, dtype=torch.float32)
    y = torch.tensor(bunch.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return {"train": (x[:1200], y[:1200]), "test": (x[1200:], y[1200:])}


def trained_mlp(seed: int, data, epochs: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = data["train"]
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(epochs):
        for i in range(0, len(y), 100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    return model


def compact_png(path: Path, colors: int = 64) -> None:
    """An adaptive palette: plots have few colours, so the file is a few times smaller."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    palette.save(path, optimize=True)


def save(ax, path: Path) -> None:
    ax.figure.savefig(path, dpi=90)
    compact_png(path)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "figures")
    parser.add_argument("--quick", action="store_true", help="coarser grids, fewer epochs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    import llv
    from llv.curves import mark_points, plot_curve_plane
    from llv.plot._figure import new_figure

    n = 13 if args.quick else 25
    data = digits()
    a, b, c = (trained_mlp(seed, data, 10 if args.quick else 30) for seed in (0, 1, 2))

    # 1. the plane through three models
    plane = llv.directions(a, "plane", targets=(b, c), orthogonalize=True)
    corners = np.asarray(plane.attrs["plane_coordinates"])
    low, high = corners.min(axis=0), corners.max(axis=0)
    span = high - low
    grid = [(float(lo - 0.25 * s), float(hi + 0.25 * s), n) for lo, hi, s in zip(low, high, span)]
    surface = llv.surface(a, data["train"], x=grid[0], y=grid[1], directions=plane, batch_size=1200,
                          progress=False)
    ax = surface.plot("contour", ax=new_figure(5.4, 4.4).add_subplot())
    mark_points(ax, surface)
    ax.set_title("the plane through three models (orthonormal basis)", fontsize="medium")
    save(ax, args.out / "plane_three_models.png")

    # 2. a low-loss curve beside the straight line
    curve = llv.connect(a, b, data, path="bezier", epochs=10 if args.quick else 30, lr=0.01,
                        optimizer="adam", batch_size=100, points=41, progress=False)
    print(f"barriers: curve {curve.curve_barrier:.4f}, line {curve.line_barrier:.4f}")
    save(curve.plot(ax=new_figure(5.4, 3.8).add_subplot()), args.out / "curve_vs_line.png")

    # 3. the plane through A, B and the control point, both paths drawn on it
    through = curve.plane(a, b)
    (x0, x1), (y0, y1) = through.extent(0.2)
    surface = llv.surface(a, data["train"], x=(x0, x1, n), y=(y0, y1, n), directions=through.directions,
                          batch_size=1200, progress=False)
    ax = plot_curve_plane(surface, through, ax=new_figure(5.4, 4.4).add_subplot(), filled=False)
    ax.set_title("Bézier curve and line in the plane through A, B, M", fontsize="medium")
    save(ax, args.out / "curve_plane.png")

    # 4. the automatic extent along a random direction
    along = llv.directions(a, "random", ndim=1, seed=0)
    chosen = llv.extent(a, data["train"], along, rise=2.0, tol=1e-3, progress=False)
    (lo, hi) = chosen.x
    wide = max(-lo, hi) * 1.6
    line = llv.surface(a, data["train"], x=(-wide, wide, 61), y=None, directions=along, batch_size=1200,
                       progress=False)
    ax = new_figure(5.4, 3.6).add_subplot()
    ax.plot(line.x, line["train_loss"], color="C0", label="training loss")
    ax.axvspan(lo, hi, color="C2", alpha=0.15, label=f"chosen extent {lo:.3g}:{hi:.3g}")
    ax.axhline(chosen.level, color="C3", ls="--", lw=1, label=f"2 × centre loss ({chosen.level:.3g})")
    ax.set_xlabel("α")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"llv.extent: {chosen.evaluations} evaluations", fontsize="medium")
    save(ax, args.out / "auto_extent.png")


if __name__ == "__main__":
    main()
