"""The paper's experiments as presets (conf/experiment/), the driver that runs them
(scripts/reproduce.py, scripts/summarize.py) and the reproduction report (docs/reproduction.md)."""

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "conf" / "experiment"
DOCS = Path(__file__).resolve().parents[1] / "docs"
REPORT = ROOT / "docs" / "reproduction.md"
FIGURES = ROOT / "docs" / "figures"
STANDALONE = {"paper_train"}  # a recipe for `llv train`, not an experiment of the driver


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reproduce = _load("reproduce")
summarize = _load("summarize")


def commands_of(preset: str) -> list[str]:
    """The commands a preset is meant for: its header lines ``#   llv CMD experiment=NAME``."""
    text = (PRESETS / f"{preset}.yaml").read_text()
    return re.findall(rf"^#   llv (\w+) experiment={re.escape(preset)}$", text, flags=re.M)


ALL = sorted(p.stem for p in PRESETS.glob("*.yaml"))
EXPERIMENTS = [p for p in ALL if p not in STANDALONE]
PAPER = [p for p in EXPERIMENTS if not p.endswith("_cpu")]


# One preset of each family, paper scale and CPU twin: composing all 108 takes a minute (slow).
SAMPLE = ["fig1_resnet56_noshort", "fig3_vgg9_bs8192_wd0", "fig3_vgg9_bs128_wd0_1d",
          "fig3_vgg9_bs128_wd0_1d_none", "fig2_vgg9_wd5e-4", "fig5_resnet110_noshort", "fig6_wrn56_4_noshort",
          "fig6_wrn56_1", "fig7_resnet56", "fig9_vgg9_bs8192_wd5e-4", "table1_resnet56_adam_bs4096_wd0",
          "table1_resnet56_sgd_bs128_wd5e-4", "flat_vs_sharp_vgg9_sam", "flat_vs_sharp_resnet56_sgd_large"]
SAMPLE += [f"{p}_cpu" for p in SAMPLE]


def compose_first_commands(presets) -> dict:
    """{preset: (command, cfg)} for the first command of each preset."""
    from llv.config import compose

    return {p: (commands_of(p)[0], compose(commands_of(p)[0], [f"experiment={p}"])) for p in presets}


@pytest.fixture(scope="module")
def composed():
    return compose_first_commands(SAMPLE)


def test_every_preset_names_its_commands_and_where_each_writes():
    for preset in EXPERIMENTS:
        commands = commands_of(preset)
        assert commands, f"{preset}: no '#   llv CMD experiment={preset}' line"
        paths = reproduce.preset_paths(preset)
        for command in commands:  # outputs/experiments/<command>/<preset>: plots label runs by folder
            assert paths[command].startswith(f"outputs/experiments/{command}/"), (preset, command)
            if command != "train" and not preset.startswith("fig6_wrn56_1"):
                assert paths[command] == f"outputs/experiments/{command}/{preset}"
        text = (PRESETS / f"{preset}.yaml").read_text()
        assert text.startswith("# @package _global_\n")
        assert "out: ${paths.${command}}" in text


def test_every_preset_composes_for_its_first_command_with_out_and_checkpoint_from_paths(composed):
    check_out_checkpoint_and_data(composed)


def check_out_checkpoint_and_data(composed):
    for preset, (command, cfg) in composed.items():
        paths = reproduce.preset_paths(preset)
        assert cfg.out == paths[command]
        if command != "train" and cfg.get("checkpoint"):
            assert cfg.checkpoint == f"{paths['train']}/final.pt", preset
        assert cfg.dataset.name == ("digits" if preset.endswith("_cpu") else "cifar10"), preset


def test_paper_presets_train_with_the_papers_recipe(composed):
    check_paper_recipes(composed)


def check_paper_recipes(composed):
    trained = [p for p in composed if commands_of(p)[0] == "train" and not p.endswith("_cpu")]
    assert trained
    for preset in trained:
        cfg = composed[preset][1]
        t = cfg.train
        assert (t.epochs, list(t.milestones), t.gamma) == (300, [150, 225, 275], 0.1), preset
        assert t.momentum == 0.9 and t.nesterov, preset
        deep_noshort = "noshort" in cfg.model.name and "resnet20" not in cfg.model.name
        if t.optimizer == "adam":
            assert t.lr == 0.001
        else:
            assert t.lr == (0.01 if deep_noshort else 0.1), preset
        bs = re.search(r"_bs(\d+)_", preset + "_")
        assert t.batch_size == (int(bs.group(1)) if bs else (8192 if "vgg9_sgd_large" in preset else
                                                              4096 if "sgd_large" in preset else 128))
        assert t.weight_decay == (0.0 if "_wd0" in preset else 5e-4), preset


def test_paper_surfaces_use_the_papers_grids():
    from llv.config import compose

    expected = {"fig5_resnet56_noshort": ("-1:1:51", "-1:1:51"), "fig1_resnet56_noshort": ("-1:1:251", "-1:1:251"),
                "fig3_vgg9_bs128_wd0_1d": ("-1:1:401", None), "fig2_vgg9_wd0": ("-0.5:1.5:401", None),
                "fig7_resnet56_noshort": ("-1:1:51", "-1:1:51")}
    for preset, (x, y) in expected.items():
        command = [c for c in commands_of(preset) if c != "train"][0]
        cfg = compose(command, [f"experiment={preset}"])
        assert (cfg.grid.x, cfg.grid.y) == (x, y), preset
    fig7 = compose("hessian", ["experiment=fig7_resnet56"])
    assert fig7.dir_file == "outputs/experiments/surface/fig5_resnet56/directions.h5"
    assert fig7.checkpoint == "outputs/experiments/train/fig5_resnet56/final.pt"
    flat = compose("hessian", ["experiment=flat_vs_sharp_vgg9_sam"])
    assert flat.grid.x is None and flat.train.optimizer == "sam" and flat.train.sam.rho == 0.05


def test_every_paper_preset_has_a_cpu_twin_for_the_same_commands():
    for preset in PAPER:
        assert (PRESETS / f"{preset}_cpu.yaml").is_file(), preset
        assert commands_of(f"{preset}_cpu") == commands_of(preset), preset
    for preset in EXPERIMENTS:
        if preset.endswith("_cpu"):
            assert preset[: -len("_cpu")] in PAPER, preset


def test_presets_sharing_a_train_directory_share_the_training_recipe(composed):
    check_shared_train_directories(composed)
    assert reproduce.preset_paths("fig1_resnet56_noshort")["train"] == reproduce.preset_paths(
        "fig5_resnet56_noshort")["train"]
    assert reproduce.preset_paths("flat_vs_sharp_vgg9_sgd_small_cpu")["train"] == reproduce.preset_paths(
        "fig3_vgg9_bs128_wd5e-4_cpu")["train"]


def check_shared_train_directories(composed):
    from omegaconf import OmegaConf

    recipe_of: dict[str, tuple[str, str]] = {}
    for preset, (command, cfg) in composed.items():
        if command != "train":
            continue
        recipe = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, ["model", "dataset", "train", "seed"]))
        seen = recipe_of.setdefault(cfg.out, (preset, recipe))
        assert seen[1] == recipe, f"{preset} and {seen[0]} train into {cfg.out} with different recipes"


def test_no_two_presets_write_the_same_result_directory_unless_aliases():
    from omegaconf import OmegaConf

    from llv.config import compose

    writers: dict[str, list[tuple[str, str]]] = {}
    for preset in EXPERIMENTS:
        paths = reproduce.preset_paths(preset)
        for command in commands_of(preset):
            if command != "train":
                writers.setdefault(paths[command], []).append((preset, command))
    for out, users in writers.items():
        if len(users) == 1:
            continue
        configs = set()
        for preset, command in users:
            cfg = compose(command, [f"experiment={preset}"])
            configs.add(OmegaConf.to_yaml(OmegaConf.masked_copy(
                cfg, [k for k in cfg if k not in ("paths",)])))
        assert len(configs) == 1, f"{out} is written by different configs: {users}"
    aliases = sorted(sorted(p for p, _ in users) for users in writers.values() if len(users) > 1)
    assert aliases == [["fig5_resnet56", "fig6_wrn56_1"], ["fig5_resnet56_noshort", "fig6_wrn56_1_noshort"]]


def test_the_driver_uses_every_preset_and_only_existing_ones():
    used = set()
    for name, experiment in reproduce.experiments().items():
        assert experiment.steps, name
        for step in experiment.steps:
            if step.preset is not None:
                assert step.command in commands_of(step.preset), (name, step)
                used.add(step.preset)
    assert used == set(PAPER)


@pytest.mark.parametrize("cpu", [False, True])
def test_dry_run_prints_one_llv_command_per_step_with_resolved_paths(cpu, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing done here: no step is skipped or resumed
    assert reproduce.main(["flat_vs_sharp_vgg9", "--dry-run", "--figures", "figs", *(["--cpu"] if cpu else [])]) == 0
    lines = capsys.readouterr().out.splitlines()
    suffix = "_cpu" if cpu else ""
    assert lines[:3] == [f"llv train experiment=flat_vs_sharp_vgg9_{v}{suffix}" for v in reproduce.FLAT_SHARP]
    assert lines[3] == f"llv hessian experiment=flat_vs_sharp_vgg9_sgd_small{suffix}"
    plot = shlex.split(lines[6])
    assert plot[:3] == ["llv", "plot", "sharpness"]
    assert plot[3] == f"outputs/experiments/hessian/flat_vs_sharp_vgg9_sgd_small{suffix}/hessian.h5"
    assert plot[-1] == f"--out=figs/flat_vs_sharp_vgg9{suffix}.png"
    assert lines[-1] == "7 printed"


def test_interpolate_and_trajectory_presets_name_both_runs_without_command_line_help():
    """Presets come after the command's own keys, so checkpoint2 and run come from the preset."""
    from llv.config import compose

    cfg = compose("interpolate", ["experiment=fig2_vgg9_wd0_cpu"])
    assert cfg.checkpoint == "outputs/experiments/train/fig3_vgg9_bs128_wd0_cpu/final.pt"
    assert cfg.checkpoint2 == "outputs/experiments/train/fig3_vgg9_bs8192_wd0_cpu/final.pt"
    assert cfg.direction.kind == "target" and cfg.direction.type == "states" and cfg.grid.y is None
    cfg = compose("trajectory", ["experiment=fig9_vgg9_bs8192_wd5e-4"])
    assert cfg.run == "outputs/experiments/train/fig3_vgg9_bs8192_wd5e-4"
    assert cfg.direction.kind == "pca" and cfg.out == "outputs/experiments/trajectory/fig9_vgg9_bs8192_wd5e-4"
    argv = reproduce.command_line(reproduce._interpolate("fig2_vgg9_wd0"), cpu=True, figures=Path("f"))
    assert argv == ["llv", "interpolate", "experiment=fig2_vgg9_wd0_cpu"]


def test_driver_skips_finished_steps_and_resumes_unfinished_training(tmp_path, monkeypatch, capsys):
    import h5py

    monkeypatch.chdir(tmp_path)
    train = Path(reproduce.preset_paths("fig5_resnet20_cpu")["train"])
    (train / "checkpoints").mkdir(parents=True)
    (train / "checkpoints" / "epoch_003.pt").write_bytes(b"x")
    step = reproduce.compute("train", "fig5_resnet20")
    calls = []
    monkeypatch.setattr(reproduce.subprocess, "run", lambda argv, **kw: calls.append(argv) or
                        subprocess.CompletedProcess(argv, 0))
    assert reproduce.run_step(step, True, Path("f"), False, {}) == "ran"
    assert calls[-1][-1] == "train.resume=true"
    (train / "final.pt").write_bytes(b"x")
    assert reproduce.run_step(step, True, Path("f"), False, {}) == "skipped"
    surface = Path(reproduce.preset_paths("fig5_resnet20_cpu")["surface"]) / "surface.h5"
    surface.parent.mkdir(parents=True)
    with h5py.File(surface, "w") as f:
        f["done"] = np.array([[True, False]])
    assert not reproduce.is_done(surface)
    with h5py.File(surface, "w") as f:
        f["done"] = np.array([[True, True]])
    assert reproduce.is_done(surface)
    assert len(calls) == 1


def test_nonconvex_share_of_a_bowl_a_saddle_and_a_double_well():
    xs = np.linspace(-1, 1, 21)
    X, Y = np.meshgrid(xs, xs)
    assert summarize.nonconvex_fraction(X**2 + 3 * Y**2, xs, xs) == (0.0, 0.0)
    share, ratio = summarize.nonconvex_fraction(X**2 - 0.5 * Y**2, xs, xs)
    assert share == 1.0 and ratio == pytest.approx(0.5, rel=1e-6)
    # (x²-0.25)² + y²: concave in x for |x| < 0.5/√3 = 0.289 -> the columns x = ±0.2, ±0.1, 0 of 19
    share, _ = summarize.nonconvex_fraction((X**2 - 0.25) ** 2 + Y**2, xs, xs)
    assert share == pytest.approx(5 / 19)
    basin, _ = summarize.nonconvex_fraction(X**2 - 0.5 * Y**2, xs, xs, below=-0.2)
    assert basin == 1.0


def test_interpolation_numbers_read_the_barrier_and_the_curvature_at_each_end(tmp_path):
    import h5py

    alphas = np.linspace(-0.5, 1.5, 81)
    loss = 2.0 * alphas**2 * (alphas - 1) ** 2 + 0.1  # minima at 0 and 1, a bump at 0.5
    with h5py.File(tmp_path / "interpolation.h5", "w") as f:
        f["alphas"], f["train_loss"] = alphas, loss
    numbers = summarize.interpolation_numbers(tmp_path / "interpolation.h5")
    assert numbers["train_loss_A"] == pytest.approx(0.1) and numbers["train_loss_B"] == pytest.approx(0.1)
    assert numbers["train_barrier"] == pytest.approx(2 * 0.5**4, abs=1e-9)
    assert numbers["train_curvature_A"] == pytest.approx(4.0, rel=1e-2)  # f''(0) = 4
    assert numbers["train_curvature_B"] == pytest.approx(4.0, rel=1e-2)


def test_a_cpu_preset_trains_and_its_hessian_step_finds_the_checkpoint(tmp_path, monkeypatch):
    """flat_vs_sharp_resnet56_sgd_small_cpu (an MLP on digits), cut to 2 epochs: the hessian step
    reads the train step's final.pt through paths.train, as the driver's steps do."""
    from llv.cli import run_command

    monkeypatch.chdir(tmp_path)
    preset = ["experiment=flat_vs_sharp_resnet56_sgd_small_cpu", "device=cpu"]
    run_command("train", [*preset, "train.epochs=2", "train.milestones=[1]"])
    final = tmp_path / "outputs/experiments/train/flat_vs_sharp_resnet56_sgd_small_cpu/final.pt"
    assert final.is_file()
    run_command("hessian", [*preset, "plot=false", "++sharpness.enabled=false", "hessian.max_samples=64",
                            "hessian.trace_probes=4", "hessian.density_runs=1", "hessian.density_steps=8"])
    import h5py

    with h5py.File(tmp_path / "outputs/experiments/hessian/flat_vs_sharp_resnet56_sgd_small_cpu/hessian.h5") as f:
        assert f.attrs["checkpoint"] == str(final.resolve())  # recorded absolute: resumable from anywhere
        assert f.attrs["lambda_max"] > 0 and f.attrs["lambda_max"] >= f.attrs["lambda_min"]
        assert f.attrs["model"] == "mlp"


# ---------------------------------------------------------------------------- slow: everything


@pytest.mark.slow
def test_every_preset_composes_with_out_checkpoint_recipe_and_shared_runs_checked():
    everything = compose_first_commands(EXPERIMENTS)
    check_out_checkpoint_and_data(everything)
    check_paper_recipes(everything)
    assert sum(1 for p, (c, _) in everything.items() if c == "train" and not p.endswith("_cpu")) == 34
    check_shared_train_directories(everything)


@pytest.mark.slow
def test_every_preset_composes_for_every_command_through_the_cli_cfg():
    from typer.testing import CliRunner

    from llv.cli import app

    runner = CliRunner()
    for preset in EXPERIMENTS:
        paths = reproduce.preset_paths(preset)
        for command in commands_of(preset):
            result = runner.invoke(app, [command, f"experiment={preset}", "--cfg"])
            assert result.exit_code == 0, (preset, command, result.output)
            assert f"\nout: {paths[command]}\n" in "\n" + result.output, (preset, command)
    out = subprocess.run([sys.executable, "-m", "llv", "surface", "experiment=fig5_resnet56_noshort", "--cfg"],
                         capture_output=True, text=True, check=True).stdout
    assert "out: outputs/experiments/surface/fig5_resnet56_noshort" in out and "name: resnet56_noshort" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["flat_vs_sharp_vgg9", "fig2", "fig9", "fig5", "fig1", "fig7", "table1", "fig3",
                                  "fig6"])
def test_cpu_experiment_runs_end_to_end(name, tmp_path, monkeypatch):
    """Each _cpu experiment through the driver, in an empty directory: every step's result
    exists and is complete, every figure is written, and the numbers are sane."""
    monkeypatch.chdir(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), name, "--cpu",
                             "--figures", "figs", "--threads", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for step in reproduce.experiments()[name].steps:
        if step.preset is not None:
            assert reproduce.is_done(reproduce.product(step, True)), step
        else:
            out = [a for a in reproduce.command_line(step, True, Path("figs")) if a.startswith("--out=")]
            assert Path(out[0][len("--out="):]).stat().st_size > 10_000, step
    tables = summarize.collect(name, cpu=True)
    for _, numbers in tables.get("train", []):
        assert numbers["test_error"] < 50 and numbers["weight_norm"] > 0
    for _, numbers in tables.get("trajectory", []):
        assert 0 < numbers["pc1+pc2"] <= 1
    for _, numbers in tables.get("hessian", []):
        assert np.isfinite(list(numbers.values())).all()


# ---------------------------------------------------------------------------- the report


def report_commands() -> list[str]:
    """Every command in the fenced code blocks of docs/reproduction.md (continuations joined)."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", REPORT.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("llv ", "python scripts/")):
                commands.append(" ".join(line.split()))
    return commands


def test_report_figures_exist_are_small_and_each_comes_from_a_listed_command():
    text = REPORT.read_text()
    shown = set(re.findall(r"\]\(figures/([^)]+\.png)\)", text))
    others = {name for page in DOCS.glob("*.md") if page != REPORT
              for name in re.findall(r"\]\(figures/([^)]+\.png)\)", page.read_text())}
    files = {p.name for p in FIGURES.glob("*.png")} - (others - shown)  # other pages' figures
    assert shown and shown == files, (shown ^ files)
    assert sum(p.stat().st_size for p in FIGURES.rglob("*") if p.is_file()) < 3_000_000
    produced = {}
    for command in report_commands():
        out = re.search(r"--out[= ]docs/figures/(\S+\.png)", command)
        if out:
            produced[out.group(1)] = command
    assert set(produced) == files


def test_report_commands_are_the_drivers_commands():
    """The `llv` lines of the report equal the driver's dry-run of the experiments it names."""
    listed = [c for c in report_commands() if c.startswith("llv ")]
    runs = [c for c in report_commands() if c.startswith("python scripts/reproduce.py")]
    assert runs
    expected = set()
    for run in runs:
        args = shlex.split(run)[2:]
        if not args or args[0].startswith("-"):
            continue  # --list
        name = args[0]
        name, cpu = (name[:-4], True) if name.endswith("_cpu") else (name, "--cpu" in args)
        for step in reproduce.experiments()[name].steps:
            expected.add(shlex.join(reproduce.command_line(step, cpu, Path("docs/figures"))))
    assert listed and set(listed) <= expected, set(listed) - expected


def test_compact_png_keeps_the_picture_and_shrinks_the_file(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    xs = np.linspace(-1, 1, 41)
    figure, ax = plt.subplots()
    ax.contourf(xs, xs, np.add.outer(xs**2, 2 * xs**2), levels=20)
    path = tmp_path / "f.png"
    figure.savefig(path, dpi=150)
    plt.close(figure)
    before = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    size = path.stat().st_size
    reproduce.compact_png(path)
    after = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    assert after.shape == before.shape
    assert path.stat().st_size < size / 2
    assert np.mean(np.abs(after - before)) < 2.0  # a palette of 128 colours: almost no change
