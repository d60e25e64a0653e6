#!/usr/bin/env python
"""Build ``docs/gallery.md``: every paper figure's CPU twin, drawn by today's figure rules.

For each experiment of ``scripts/reproduce.py`` (Figs. 1, 2, 3, 5, 6, 7, 9, Table 1 and the
flat-vs-sharp study) this computes what its ``_cpu`` presets need (skipping results that exist,
as ``reproduce.py`` does), draws every figure of its ``llv plot`` steps into
``docs/figures/gallery/`` as 128-colour palette PNGs, and writes ``docs/gallery.md`` with each
figure beside the paper figure it stands for::

    python scripts/gallery.py                      # compute what is missing, draw, write
    python scripts/gallery.py --plots-only         # draw from existing results only
    python scripts/gallery.py fig1 fig5 --plots-only

``--smooth`` (the default) draws 3-D surfaces, contours, ``compare`` panels and Hessian maps
resampled by bicubic interpolation (the figures say so); the CPU twins' grids are 7x7 (Hessian
maps) to 41x41. Computing everything takes about an hour on two CPU cores; ``--plots-only``
lists the figures whose results are missing instead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reproduce  # noqa: E402  (the sibling script: experiments, presets, steps)

ROOT = Path(__file__).resolve().parents[1]

#: experiment -> what it stands for in the paper
PAPER = {
    "fig1": "Fig. 1",
    "fig2": "Fig. 2",
    "fig3": "Fig. 3 (and appendix Fig. 11)",
    "fig5": "Fig. 5",
    "fig6": "Fig. 6",
    "fig7": "Fig. 7",
    "fig9": "Fig. 9",
    "table1": "Appendix Table 1 (Figs. 14–15)",
    "flat_vs_sharp": "Beyond the paper (§5)",
}

#: experiment -> what its CPU twin changes against the paper
TWINS = {
    "fig1": "ResNet-56 with and without skip connections, trained on digits (20 epochs, batch 32) "
            "as the Fig. 5 twins; 41×41 surfaces over [−0.75, 0.75]² on 256 training examples "
            "(the paper: CIFAR-10, 251×251 over [−1, 1]²; on digits the loss passes 10 near "
            "radius 0.7). Heights are ln(loss + 0.1) with the walls cut at loss 10, as the "
            "reference's `h52vtp.py --log --zmax 10` rendered the paper's figure.",
    "fig2": "ResNet-8 (BatchNorm, like VGG-9) instead of VGG-9, batch 32 vs 512 instead of 128 vs "
            "8192, 40 epochs on digits; the interpolation has 101 values of α in [−0.5, 1.5] (the "
            "paper: 401), train and test. Where extrapolating BatchNorm running variances "
            "linearly would make them zero or negative (the reference gives NaN there), llv "
            "holds them at a floor and the figure shades those α.",
    "fig3": "ResNet-8 for VGG-9, batch 32 vs 512 for 128 vs 8192, 40 epochs on digits; 2D "
            "surfaces 21×21 over [−1, 1]² (the paper: 51×51), 1D plots of 51 points (the paper: "
            "401), the unnormalized ones over [−0.25, 0.25].",
    "fig5": "The paper's ResNet-20/56/110 with and without skip connections, trained on digits "
            "(20 epochs, batch 32; lr 0.01 for ResNet-110); 15×15 surfaces over [−1, 1]² on 256 "
            "training examples (the paper: 51×51 on the whole training set). Drawn as the paper "
            "lays it out: with skip connections on top, without below. At this scale the deep "
            "nets without skips hardly train (ResNet-56: 64 % training accuracy, ResNet-110: "
            "about chance), so their basins are narrow pits, more extreme than the paper's.",
    "fig6": "WRN-8-k (ResNet-8 with k times the channels, built with `model=custom`, hence "
            "the titles' model name) for Wide-ResNet-56-k, 20 epochs on digits; 15×15 surfaces "
            "over [−1, 1]² on 256 training examples (the paper: 51×51).",
    "fig7": "|λmin/λmax| over the planes of the Fig. 5 twins' ResNet-56 (same directions) at 7×7 "
            "(the paper: 51×51), the Hessian of the loss on 128 training examples, Lanczos "
            "tolerance 1e-2.",
    "fig9": "The optimization paths of the Fig. 3 twins (ResNet-8, 41 checkpoints of 40 epochs) "
            "projected on their two PCA directions, over a 15×15 loss surface of that plane.",
    "table1": "ResNet-8 for ResNet-56: SGD vs Adam (lr 0.001) × batch 32/512 × weight decay 0 / "
              "5e-4, 40 epochs on digits; 1D plots of 51 points over [−1, 1], train and test.",
    "flat_vs_sharp": "ResNet-8 for VGG-9 and an MLP 64-64 (no BatchNorm) for ResNet-56, each "
                     "trained by SGD with a small and a large batch and by SAM on digits; the "
                     "curvature and sharpness at each minimizer against its test error.",
}

#: raster resolution of the gallery's figures (llv's default is 150 dpi): the page holds 22
#: figures beside the report's own, and docs/figures stays small
GALLERY_DPI = 120

#: figure (file stem without ``_cpu``) -> what it stands for, where more precise than its experiment
FIGURE_PAPER = {
    "fig1_resnet56_3d": "Fig. 1, with skip connections",
    "fig1_resnet56_noshort_3d": "Fig. 1, without skip connections",
    "fig2_vgg9_wd0_interpolation": "Fig. 2, linear interpolation, weight decay 0",
    "fig2_vgg9_wd5e-4_interpolation": "Fig. 2, linear interpolation, weight decay 5e-4",
    "fig2_vgg9_wd0_weights": "Fig. 2, weight histograms, weight decay 0",
    "fig2_vgg9_wd5e-4_weights": "Fig. 2, weight histograms, weight decay 5e-4",
    "fig3_vgg9_2d": "Fig. 3, 2D contours",
    "fig3_vgg9_1d": "Fig. 3, 1D plots",
    "fig3_vgg9_1d_none": "appendix Fig. 11, 1D plots without filter normalization",
    "fig6_wrn_short": "Fig. 6, with skip connections",
    "fig6_wrn_noshort": "Fig. 6, without skip connections",
    "fig7_resnet56_ratio": "Fig. 7, with skip connections",
    "fig7_resnet56_noshort_ratio": "Fig. 7, without skip connections",
    "table1_sgd_1d": "appendix Table 1 and Figs. 14–15, SGD",
    "table1_adam_1d": "appendix Table 1 and Figs. 14–15, Adam",
    "flat_vs_sharp_vgg9": "§5's sharp-vs-flat question for VGG-9 (here ResNet-8)",
    "flat_vs_sharp_resnet56": "§5's sharp-vs-flat question for ResNet-56 (here an MLP)",
    **{f"fig9_vgg9_bs{b}_wd{w}_trajectory": f"Fig. 9, batch {b} (here {32 if b == '128' else 512}), "
                                           f"weight decay {w}"
       for b in ("128", "8192") for w in ("0", "5e-4")},
}

SMOOTH_KINDS = ("surface3d", "contour", "contourf", "hessian", "compare", "trajectory")


@dataclass
class Figure:
    """One figure of the gallery: its experiment, file (relative to docs/) and inputs."""

    experiment: str
    path: Path
    inputs: list[Path]
    drawn: bool
    smoothed: bool = False


@contextmanager
def resolution(dpi: int):
    """Draw raster figures at ``dpi`` inside the block (llv.plot reads its DPI when saving)."""
    from llv.plot import _figure

    saved, _figure.DPI = _figure.DPI, dpi
    try:
        yield
    finally:
        _figure.DPI = saved


def plot_steps(name: str) -> list[reproduce.Step]:
    return [s for s in reproduce.experiments()[name].steps if s.preset is None]


def grid_of(path: Path) -> str | None:
    """The grid of a result file as text ("15×15", "51 points"), None if it has none."""
    if path.suffix != ".h5" or not path.is_file():
        return None
    import h5py

    with h5py.File(path, "r") as handle:
        sizes = [handle[k].shape[0] for k in ("xcoordinates", "ycoordinates")
                 if k in handle and handle[k].shape]
    if not sizes:  # a trajectory's projection.h5: its loss surface lies beside it
        beside = path.with_name("surface.h5")
        return grid_of(beside) if beside != path else None
    return "×".join(str(n) for n in sizes) if len(sizes) == 2 else f"{sizes[0]} points"


def caption(figure: Figure) -> str:
    """What a figure stands for and how it was drawn: paper figure, grids, smoothing."""
    grids = list(dict.fromkeys(g for g in map(grid_of, figure.inputs) if g is not None))
    stem = figure.path.stem.removesuffix("_cpu")
    parts = [f"Paper: {FIGURE_PAPER.get(stem, PAPER.get(figure.experiment, figure.experiment))}"]
    if grids:
        parts.append(("computed grid " if len(grids) == 1 else "computed grids ") + ", ".join(grids))
    if figure.smoothed and any("×" in g for g in grids):
        parts.append("drawn from its bicubic resampling (the title says so)")
    return "*" + " · ".join(parts) + ".*"


def draw_two_rows(inputs: list[Path], out: Path, smooth: bool, log: bool | None, numbers: dict) -> None:
    """``llv plot compare`` of pairs (with and without skip connections) as the paper lays out
    Fig. 5: the first of each pair in the top row, the second below it; the same levels."""
    from llv.plot import load_surface
    from llv.plot._figure import PlotOptions, new_figure, save_figure
    from llv.plot.surface import draw_compare

    surfaces = [load_surface(p) for p in inputs]
    columns = len(surfaces) // 2
    figure = new_figure(3.6 * columns + 1.2, 7.8)
    axes = figure.subplots(2, columns, squeeze=False)
    draw_compare(axes.T.ravel(), surfaces, PlotOptions(log=log, smooth=smooth, **numbers))
    save_figure(figure, out, "png")


def draw(step: reproduce.Step, figures: Path, smooth: bool) -> tuple[Path, list[Path], bool]:
    """Draw one ``llv plot`` step of a CPU twin into ``figures``; (figure, inputs, drawn)."""
    from llv.plot import make_plot

    args = [reproduce.resolve(a, True, figures) for a in step.args]
    kind, rest = args[0], args[1:]
    inputs = [Path(a) for a in rest if not a.startswith("--")]
    options = dict((a[2:].split("=", 1) + [""])[:2] for a in rest if a.startswith("--"))
    out = Path(options.pop("out"))
    if not all(p.exists() for p in inputs):
        return out, inputs, False
    numbers = {k: float(v) for k, v in options.items() if k in ("vmin", "vmax", "vlevel")}
    log = True if "log" in options else False if "linear" in options else None  # --log/--linear
    if kind == "compare" and len(inputs) == 6:
        draw_two_rows(inputs, out, smooth, log, numbers)
    else:
        make_plot(kind, [str(p) for p in inputs], out=out, smooth=smooth and kind in SMOOTH_KINDS,
                  log=log, **numbers)
    if out.suffix == ".png":
        reproduce.compact_png(out)
    return out, inputs, True


def write_markdown(figures: list[Figure], out: Path) -> Path:
    """``docs/gallery.md``: a section per experiment, each figure with its paper figure."""
    catalogue = reproduce.experiments()
    lines = ["# Gallery: the paper's figures from their CPU twins", "",
             "Every figure below stands beside the figure of Li et al. (2018) it reproduces at "
             "small scale. Each is drawn by `scripts/gallery.py` from the `_cpu` presets of "
             "`conf/experiment/` (the bundled 8×8 digits data, small networks and grids, minutes "
             "on two CPU cores; [reproduction.md](reproduction.md) lists what the twins change "
             "and what they show) with llv's figure rules "
             "([plots.md](plots.md#the-figure-rules)): the same `llv plot` commands as "
             "`scripts/reproduce.py`, stored as 128-colour palette PNGs.", "",
             "Figures whose title says *interpolated (bicubic, n×n → 121×121)* are drawn from a "
             "bicubic resampling of the computed grid (`--smooth`): it passes through every "
             "computed value; a surface with walls (largest value over 100 × its median) is "
             "resampled as its logarithm and kept between the values at the corners of each grid "
             "cell, so the walls do not ring. "
             "The caption under each figure gives the paper figure and the computed grid.", "",
             "Regenerate with `python scripts/gallery.py` (computes what is missing under "
             "`outputs/experiments/`, about an hour on two cores, then draws) or "
             "`python scripts/gallery.py --plots-only` (draws what exists and names the results "
             "that are missing).", ""]
    for name in dict.fromkeys(f.experiment for f in figures):
        description = re.sub(r"\s*\((?:Fig\.|appendix)[^)]*\)$", "", catalogue[name].description)
        lines += [f"## {PAPER.get(name, name)}: {description}", ""]
        if name in TWINS:
            lines += [f"**The twin:** {TWINS[name]}", ""]
        for figure in (f for f in figures if f.experiment == name):
            relative = Path(os.path.relpath(figure.path, out.parent))
            if figure.drawn:
                lines += [f"![{relative.stem}]({relative.as_posix()})", "", caption(figure), ""]
                tables = [f"[{s[1:].upper() if s == '.csv' else 'table'}]({relative.with_suffix(s).as_posix()})"
                          for s in (".md", ".csv") if figure.path.with_suffix(s).is_file()]
                if tables:  # the numbers behind a report figure (llv plot sharpness)
                    lines += ["The numbers: " + " · ".join(tables) + ".", ""]
            else:
                missing = ", ".join(str(p) for p in figure.inputs if not p.exists())
                lines += [f"*{relative.name}: not computed yet (missing {missing})*", ""]
    out.write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"experiments (default: {', '.join(PAPER)})")
    parser.add_argument("--plots-only", action="store_true",
                        help="compute nothing: draw from the results that exist")
    parser.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=True,
                        help="bicubic resampling of 3-D surfaces and contours (default: on)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where gallery.md goes")
    options = parser.parse_args(argv)
    names = options.names or list(PAPER)
    unknown = [n for n in names if n not in reproduce.experiments()]
    if unknown:
        raise SystemExit(f"gallery: unknown experiment(s) {', '.join(unknown)}")
    figures_dir = options.docs / "figures" / "gallery"
    figures: list[Figure] = []
    for name in names:
        if not options.plots_only:
            for step in reproduce.experiments()[name].steps:
                if step.preset is not None:
                    reproduce.run_step(step, True, figures_dir, False, dict(os.environ))
        for step in plot_steps(name):
            with resolution(GALLERY_DPI):
                path, inputs, drawn = draw(step, figures_dir, options.smooth)
            figures.append(Figure(name, path, inputs, drawn, options.smooth and step.args[0] in SMOOTH_KINDS))
    markdown = write_markdown(figures, options.docs / "gallery.md")
    drawn = sum(f.drawn for f in figures)
    print(f"wrote {markdown}: {drawn} of {len(figures)} figures drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
