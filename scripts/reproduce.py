#!/usr/bin/env python
"""Run one of the paper's experiments step by step through the real ``llv`` command line.

Each experiment is a list of ``llv`` commands on presets in ``conf/experiment/``
(``llv train experiment=fig5_resnet56``, ``llv surface experiment=fig5_resnet56``, ...) and
``llv plot`` commands on their results. ``--cpu`` swaps every preset for its ``_cpu`` twin (the
same steps on the bundled digits data, minutes on two CPU cores)::

    python scripts/reproduce.py --list
    python scripts/reproduce.py fig5 --cpu                 # or: fig5_cpu
    python scripts/reproduce.py flat_vs_sharp --cpu --dry-run   # print the commands only
    python scripts/reproduce.py fig3 --cpu --figures docs/figures --compact

Steps whose results already exist are skipped (a finished ``final.pt``, a complete ``done``
mask, a Hessian point file), so an interrupted experiment continues where it stopped; an
unfinished training run continues with ``train.resume=true``. Figures go to ``--figures``
(default ``outputs/experiments/figures`` or ``figures_cpu``). The numbers of an experiment are
collected by ``scripts/summarize.py`` at the end.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIG5_MODELS = ("resnet20", "resnet20_noshort", "resnet56", "resnet56_noshort", "resnet110",
               "resnet110_noshort")
VGG_VARIANTS = ("bs128_wd0", "bs8192_wd0", "bs128_wd5e-4", "bs8192_wd5e-4")
WRN = tuple(f"wrn56_{k}" for k in (1, 2, 4, 8))
TABLE1 = tuple(f"{o}_{b}_{w}" for o in ("sgd", "adam") for b in ("bs128", "bs4096")
               for w in ("wd0", "wd5e-4"))
FLAT_SHARP = ("sgd_small", "sgd_large", "sam")


@dataclass(frozen=True)
class Step:
    """One ``llv`` command. ``preset`` names the experiment preset of a compute step (``None``
    for ``llv plot``); ``args`` may hold ``{preset:command}`` references to a preset's output
    directory and ``{figures}`` for the figure folder."""

    command: str
    preset: str | None = None
    args: tuple[str, ...] = ()


@dataclass
class Experiment:
    """The steps that reproduce one figure or table, and what it shows."""

    description: str
    steps: list[Step] = field(default_factory=list)


def compute(command: str, preset: str, *args: str) -> Step:
    return Step(command, preset, args)


def plot(kind: str, *args: str) -> Step:
    return Step("plot", None, (kind, *args))


def ref(preset: str, command: str, file: str) -> str:
    return "{" + preset + ":" + command + "}/" + file


def fig_out(name: str) -> str:
    """``--out`` into the figure folder; CPU twins' figures get a ``_cpu`` suffix."""
    stem, _, suffix = name.rpartition(".")
    return "--out={figures}/" + stem + "{cpu}." + suffix


def _train_and(command: str, presets, train_presets=None) -> list[Step]:
    steps = [compute("train", p) for p in (train_presets or presets)]
    return steps + [compute(command, p) for p in presets]


def _interpolate(preset: str) -> Step:
    return compute("interpolate", preset)


def _trajectory(preset: str) -> Step:
    return compute("trajectory", preset)


def experiments() -> dict[str, Experiment]:
    """Every experiment the driver knows, by name."""
    fig3 = [f"fig3_vgg9_{v}" for v in VGG_VARIANTS]
    fig5 = [f"fig5_{m}" for m in FIG5_MODELS]
    fig6 = [f"fig6_{m}{s}" for s in ("", "_noshort") for m in WRN]
    table1 = [f"table1_resnet56_{v}" for v in TABLE1]
    levels = ("--vmin=0.1", "--vmax=10", "--vlevel=0.5")  # the reference implementation's
    out: dict[str, Experiment] = {}

    out["fig1"] = Experiment(
        "ResNet-56 with and without skip connections, 3D surfaces (Fig. 1)",
        _train_and("surface", ["fig1_resnet56", "fig1_resnet56_noshort"])
        # heights ln(loss + 0.1) up to loss 10, as the reference's h52vtp.py --log --zmax 10
        # rendered the paper's Fig. 1
        + [plot("surface3d", ref(p, "surface", "surface.h5"), "--vmax=10", "--log", fig_out(f"{p}_3d.png"))
           for p in ("fig1_resnet56", "fig1_resnet56_noshort")])

    fig2 = [*(compute("train", p) for p in fig3)]
    for wd in ("wd0", "wd5e-4"):
        small, large = f"fig3_vgg9_bs128_{wd}", f"fig3_vgg9_bs8192_{wd}"
        fig2 += [_interpolate(f"fig2_vgg9_{wd}"),
                 plot("1d", ref(f"fig2_vgg9_{wd}", "interpolate", "interpolation.h5"),
                      fig_out(f"fig2_vgg9_{wd}_interpolation.png")),
                 plot("weights", ref(small, "train", ""), ref(large, "train", ""),
                      fig_out(f"fig2_vgg9_{wd}_weights.png"))]
    out["fig2"] = Experiment(
        "VGG-9, small vs large batch: interpolation and weight histograms, wd 0 and 5e-4 (Fig. 2)",
        fig2)

    fig3_steps = _train_and("surface", fig3)
    fig3_steps += [compute("surface", f"{p}_1d") for p in fig3]
    fig3_steps += [compute("surface", f"{p}_1d_none") for p in fig3]
    fig3_steps += [
        plot("compare", *(ref(p, "surface", "surface.h5") for p in fig3), *levels,
             fig_out("fig3_vgg9_2d.png")),
        plot("compare", *(ref(f"{p}_1d", "surface", "surface.h5") for p in fig3), "--vmin=0", "--vmax=5",
             fig_out("fig3_vgg9_1d.png")),
        plot("compare", *(ref(f"{p}_1d_none", "surface", "surface.h5") for p in fig3), "--vmin=0", "--vmax=5",
             fig_out("fig3_vgg9_1d_none.png")),
    ]
    out["fig3"] = Experiment(
        "VGG-9, batch 128 vs 8192, wd 0 vs 5e-4: filter-normalized 1D and 2D plots, and "
        "the unnormalized 1D plots of appendix Fig. 11 (Fig. 3)", fig3_steps)

    out["fig5"] = Experiment(
        "ResNet-20/56/110 with and without skip connections, 2D contours (Fig. 5)",
        _train_and("surface", fig5)
        + [plot("compare", *(ref(p, "surface", "surface.h5") for p in fig5), *levels,
                fig_out("fig5_contours.png"))])

    out["fig6"] = Experiment(
        "Wide-ResNet-56, k = 1, 2, 4, 8, with and without skip connections (Fig. 6)",
        _train_and("surface", fig6)
        + [plot("compare", *(ref(f"fig6_{m}{s}", "surface", "surface.h5") for m in WRN), *levels,
                fig_out(f"fig6_wrn{s or '_short'}.png")) for s in ("", "_noshort")])

    fig7 = [f"fig7_{m}" for m in ("resnet56", "resnet56_noshort")]
    out["fig7"] = Experiment(
        "|λmin/λmax| of the Hessian over the planes of Fig. 5's ResNet-56 with and without skip "
        "connections (Fig. 7)",
        _train_and("surface", ["fig5_resnet56", "fig5_resnet56_noshort"])
        + [compute("hessian", p) for p in fig7]
        + [plot("hessian", ref(p, "hessian", "hessian.h5"), fig_out(f"{p}_ratio.png"))
           for p in fig7])

    fig9 = [f"fig9_vgg9_{v}" for v in VGG_VARIANTS]
    out["fig9"] = Experiment(
        "PCA projections of VGG-9's optimization paths (Fig. 9)",
        [compute("train", p) for p in fig3] + [_trajectory(p) for p in fig9]
        + [plot("trajectory", ref(p, "trajectory", "projection.h5"), fig_out(f"{p}_trajectory.png"))
           for p in fig9])

    out["table1"] = Experiment(
        "ResNet-56 test error by optimizer, batch size and weight decay (appendix Table 1, Fig. 15)",
        _train_and("surface", table1)
        + [plot("compare", *(ref(p, "surface", "surface.h5") for p in table1[:4]),
                fig_out("table1_sgd_1d.png")),
           plot("compare", *(ref(p, "surface", "surface.h5") for p in table1[4:]),
                fig_out("table1_adam_1d.png"))])

    for model in ("vgg9", "resnet56"):
        presets = [f"flat_vs_sharp_{model}_{v}" for v in FLAT_SHARP]
        out[f"flat_vs_sharp_{model}"] = Experiment(
            f"{model}: SGD small batch, SGD large batch and SAM; curvature and sharpness at each "
            "minimizer, Kendall's τ against the test error",
            _train_and("hessian", presets)
            + [plot("sharpness", *(ref(p, "hessian", "hessian.h5") for p in presets),
                    fig_out(f"flat_vs_sharp_{model}.png"))])
    out["flat_vs_sharp"] = Experiment(
        "flat_vs_sharp_vgg9 and flat_vs_sharp_resnet56 (one report per architecture: sharpness "
        "is compared between minimizers of the same network)",
        out["flat_vs_sharp_vgg9"].steps + out["flat_vs_sharp_resnet56"].steps)
    out["sharp_vs_flat"] = Experiment(
        "the paper's sharp-vs-flat study (§5): Figs. 2 and 3 together",
        _dedupe(out["fig2"].steps + out["fig3"].steps))
    return out


def _dedupe(steps: list[Step]) -> list[Step]:
    seen, kept = set(), []
    for step in steps:
        if step not in seen:
            seen.add(step)
            kept.append(step)
    return kept


# ------------------------------------------------------------------------------ running steps


def preset_name(preset: str, cpu: bool) -> str:
    return f"{preset}_cpu" if cpu else preset


def preset_paths(preset: str) -> dict[str, str]:
    """The ``paths`` map of a preset (where each of its commands writes), from its YAML text."""
    return dict(_preset_paths(preset))


@functools.cache
def _preset_paths(preset: str) -> dict[str, str]:
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "experiment" / f"{preset}.yaml"
    if not path.is_file():
        raise SystemExit(f"reproduce: no preset conf/experiment/{preset}.yaml")
    node = OmegaConf.load(path)
    paths = dict(node.get("paths") or {})
    for parent in node.get("defaults") or []:  # an included preset's paths, overridden here
        if isinstance(parent, str) and parent != "_self_":
            paths = {**preset_paths(parent), **paths}
    return {k: str(v) for k, v in paths.items()}


def resolve(text: str, cpu: bool, figures: Path) -> str:
    """Replace ``{preset:key}`` by the preset's path for that key and ``{figures}``."""
    out, rest = "", text
    while "{" in rest:
        head, _, tail = rest.partition("{")
        inner, _, rest = tail.partition("}")
        out += head
        if inner == "figures":
            out += str(figures)
        elif inner == "cpu":
            out += "_cpu" if cpu else ""
        else:
            preset, _, key = inner.partition(":")
            out += preset_paths(preset_name(preset, cpu))[key]
    out += rest
    return out.rstrip("/") if out.endswith("/") else out


def command_line(step: Step, cpu: bool, figures: Path) -> list[str]:
    """The ``llv`` command of a step, as a list of arguments."""
    args = [resolve(a, cpu, figures) for a in step.args]
    if step.preset is None:
        return ["llv", step.command, *args]
    return ["llv", step.command, f"experiment={preset_name(step.preset, cpu)}", *args]


def product(step: Step, cpu: bool) -> Path | None:
    """The file whose presence (complete) means the step is done; None for plots."""
    if step.preset is None:
        return None
    out = Path(preset_paths(preset_name(step.preset, cpu))[step.command])
    return out / {"train": "final.pt", "surface": "surface.h5", "hessian": "hessian.h5",
                  "interpolate": "interpolation.h5", "trajectory": "surface.h5"}[step.command]


def is_done(file: Path) -> bool:
    """A final checkpoint or Hessian point file exists; a grid file has every point done."""
    if not file.is_file():
        return False
    if file.suffix != ".h5":
        return True
    import h5py
    import numpy as np

    with h5py.File(file, "r") as handle:
        return "done" not in handle or bool(np.all(handle["done"][()]))


def compact_png(path: Path, colors: int = 128) -> None:
    """Re-encode a PNG with an adaptive palette: plots have few colours, so this is about 4x
    smaller and looks the same (for figures committed to a repository)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    palette.save(path, optimize=True)


def run_step(step: Step, cpu: bool, figures: Path, dry_run: bool, env: dict[str, str],
             compact: bool = False) -> str:
    """Run one step unless its product exists; return 'ran', 'skipped' or 'printed'."""
    argv = command_line(step, cpu, figures)
    done = product(step, cpu)
    if step.command == "train" and not dry_run and done is not None and not done.exists():
        if (done.parent / "checkpoints").is_dir() and any((done.parent / "checkpoints").iterdir()):
            argv.append("train.resume=true")
    print(shlex.join(argv), flush=True)
    if dry_run:
        return "printed"
    if done is not None and is_done(done):
        print(f"  (done already: {done})", flush=True)
        return "skipped"
    if step.command == "plot":
        figures.mkdir(parents=True, exist_ok=True)
    llv = shutil.which("llv") or str(Path(sys.executable).with_name("llv"))
    result = subprocess.run([llv, *argv[1:]], env=env)
    if result.returncode != 0:
        raise SystemExit(f"reproduce: step failed (exit {result.returncode}): {shlex.join(argv)}")
    if compact and step.command == "plot":
        for arg in argv:
            if arg.startswith("--out=") and arg.endswith(".png"):
                compact_png(Path(arg[len("--out="):]))
    return "ran"


def main(argv: list[str] | None = None) -> int:
    catalogue = experiments()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="experiment (NAME_cpu is NAME --cpu)")
    parser.add_argument("--cpu", action="store_true", help="the _cpu twins (digits, minutes)")
    parser.add_argument("--figures", type=Path, help="where llv plot writes the figures")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--list", action="store_true", help="list the experiments")
    parser.add_argument("--compact", action="store_true",
                        help="re-encode PNG figures with a 128-colour palette (about 4x smaller)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every step (default: inherited)")
    options = parser.parse_args(argv)
    if options.list or not options.name:
        for name, experiment in catalogue.items():
            print(f"{name:24s} {experiment.description}")
        return 0
    name, cpu = options.name, options.cpu
    if name.endswith("_cpu"):
        name, cpu = name[: -len("_cpu")], True
    if name not in catalogue:
        raise SystemExit(f"reproduce: unknown experiment {name!r}; valid: {', '.join(catalogue)}")
    figures = options.figures or Path("outputs/experiments") / ("figures_cpu" if cpu else "figures")
    env = dict(os.environ)
    if options.threads:
        env["OMP_NUM_THREADS"] = str(options.threads)
    counts: dict[str, int] = {}
    for step in catalogue[name].steps:
        status = run_step(step, cpu, figures, options.dry_run, env, options.compact)
        counts[status] = counts.get(status, 0) + 1
    if not options.dry_run:
        summary = [sys.executable, str(ROOT / "scripts" / "summarize.py"), name]
        subprocess.run(summary + (["--cpu"] if cpu else []), check=False)
    print(", ".join(f"{n} {status}" for status, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
