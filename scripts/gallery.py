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

``--smooth`` draws 3-D surfaces and contours resampled by bicubic interpolation (the figures
say so); the CPU twins' grids are 15x15 to 31x31. Computing everything takes hours on two CPU
cores; ``--plots-only`` lists the figures whose results are missing instead.
"""

from __future__ import annotations

import argparse
import os
import sys
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
    "table1": "appendix Table 1, Fig. 15",
    "flat_vs_sharp": "§5, beyond the paper: sharpness measures vs. generalization",
}

SMOOTH_KINDS = ("surface3d", "contour", "contourf", "hessian")


@dataclass
class Figure:
    """One figure of the gallery: its experiment, file (relative to docs/) and inputs."""

    experiment: str
    path: Path
    inputs: list[Path]
    drawn: bool


def plot_steps(name: str) -> list[reproduce.Step]:
    return [s for s in reproduce.experiments()[name].steps if s.preset is None]


def draw(step: reproduce.Step, figures: Path, smooth: bool) -> tuple[Path, list[Path], bool]:
    """Draw one ``llv plot`` step of a CPU twin into ``figures``; (figure, inputs, drawn)."""
    from llv.plot import make_plot

    args = [reproduce.resolve(a, True, figures) for a in step.args]
    kind, rest = args[0], args[1:]
    inputs = [Path(a) for a in rest if not a.startswith("--")]
    options = dict(a[2:].split("=", 1) for a in rest if a.startswith("--"))
    out = Path(options.pop("out"))
    if not all(p.exists() for p in inputs):
        return out, inputs, False
    numbers = {k: float(v) for k, v in options.items() if k in ("vmin", "vmax", "vlevel")}
    make_plot(kind, [str(p) for p in inputs], out=out, smooth=smooth and kind in SMOOTH_KINDS,
              **numbers)
    if out.suffix == ".png":
        reproduce.compact_png(out)
    return out, inputs, True


def write_markdown(figures: list[Figure], out: Path) -> Path:
    """``docs/gallery.md``: a section per experiment, each figure with its paper figure."""
    catalogue = reproduce.experiments()
    lines = ["# Gallery: the paper's figures from their CPU twins", "",
             "Each figure is drawn by `scripts/gallery.py` from the `_cpu` presets of "
             "`conf/experiment/` (the bundled digits data, small networks and grids; see "
             "[reproduction.md](reproduction.md) for what the twins change) with llv's figure "
             "rules ([plots.md](plots.md#the-figure-rules)). Figures marked *interpolated* are "
             "bicubic resamplings of coarser grids.", ""]
    for name in dict.fromkeys(f.experiment for f in figures):
        lines += [f"## {PAPER.get(name, name)}: {catalogue[name].description}", ""]
        for figure in (f for f in figures if f.experiment == name):
            relative = Path(os.path.relpath(figure.path, out.parent))
            if figure.drawn:
                lines += [f"![{relative.stem}]({relative.as_posix()})", ""]
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
            path, inputs, drawn = draw(step, figures_dir, options.smooth)
            figures.append(Figure(name, path, inputs, drawn))
    markdown = write_markdown(figures, options.docs / "gallery.md")
    drawn = sum(f.drawn for f in figures)
    print(f"wrote {markdown}: {drawn} of {len(figures)} figures drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
