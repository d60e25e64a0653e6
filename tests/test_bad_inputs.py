"""The bad-input matrix (issue 19): every subcommand refuses wrong input in one short line.

Each case runs ``llv <command> ...`` and asserts what a user relies on: exit status 2, at most
three lines of output, no traceback, no file of the working folder created, changed or removed,
and no data read (the refusal comes before the data set is loaded: the loaders are replaced by
ones that record the call). Most cases run in-process through Typer's CliRunner; the
``SUBPROCESS_CASES`` run as real processes on a data set that would fail if it were read
(``dataset=cifar10`` with an empty ``dataset.root``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_checkpoint, tiny_overrides

from llv.checkpoint import save_checkpoint
from llv.config import compose, to_yaml
from llv.models import build_model

TRACEBACK = "Traceback (most recent call last)"


# ------------------------------------------------------------------------------ the world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A working folder: checkpoints, a complete surface run, a direction run, a (fake) train
    run, a file, an empty folder, an HDF5 file that is not llv's, a text file named .h5."""
    import h5py

    import llv.tasks.direction
    import llv.tasks.surface

    root = tmp_path_factory.mktemp("world")
    tiny = save_tiny_checkpoint(root)
    save_tiny_checkpoint(root, seed=1, name="tiny2.pt")
    state = torch.load(tiny, weights_only=False)
    state["state_dict"]["conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, root / "nan.pt")
    base = tiny_overrides(root)
    llv.tasks.surface.run(compose("surface", [*base, f"checkpoint={tiny}", "grid.x=-1:1:3", "grid.y=-1:1:3",
                                              f"out={root / 'surf'}", "probe=false", "summary.cross_check=false"]))
    llv.tasks.direction.run(compose("direction", [*base, f"checkpoint={tiny}", f"out={root / 'dirs'}"]))
    train = root / "trainrun"
    (train / "checkpoints").mkdir(parents=True)
    cfg = compose("train", [o for o in base if not o.startswith(("plot=", "eval.", "dist="))] + [f"out={train}"])
    (train / "config.yaml").write_text(to_yaml(cfg))
    for epoch in range(3):
        torch.manual_seed(epoch)
        save_checkpoint(train / "checkpoints" / f"epoch_{epoch:03d}.pt", build_model(cfg.model), epoch, cfg, {})
    (root / "afile.txt").write_text("not a folder, not a checkpoint\n")
    (root / "text.h5").write_text("not HDF5\n")
    (root / "empty").mkdir()
    with h5py.File(root / "other.h5", "w") as f:
        f["numbers"] = [1.0, 2.0]
    (root / "cifar").mkdir()  # an empty data root: reading CIFAR-10 there fails
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its size and modification time (folders: None).

    The lock file is left out: whoever takes a folder's lock rewrites the writer's record in it
    (PID, host, command); it holds no data.
    """
    out = {}
    for path in sorted(root.rglob("*")):
        if path.name == ".llv.lock":
            continue
        stat = path.stat()
        out[str(path.relative_to(root))] = None if path.is_dir() else (stat.st_size, stat.st_mtime_ns)
    return out


def fill(args: list[str], root: Path) -> list[str]:
    """``{W}`` -> the world folder; ``{T}`` -> the tiny-net overrides; ``{C}`` -> checkpoint=tiny.pt."""
    out = []
    engine_only = ("plot=", "eval.batch_size=", "dist=") if args[0] == "train" else ()
    for arg in args:
        if arg == "{T}":
            out += [o for o in tiny_overrides(root) if not o.startswith(engine_only)]
        elif arg == "{C}":
            out.append(f"checkpoint={root / 'tiny.pt'}")
        else:
            out.append(arg.replace("{W}", str(root)))
    return out


# -------------------------------------------------------------------------------- the cases
# (command line after `llv`, a word the one-line message must contain). {T}{C}: the tiny net.

T, C = "{T}", "{C}"
CASES = {
    # train: values, paths, another command's folder
    "train-lr-nan": (["train", T, "train.lr=nan"], "train.lr"),
    "train-lr-negative": (["train", T, "train.lr=-1"], "train.lr"),
    "train-epochs-negative": (["train", T, "train.epochs=-1"], "train.epochs"),
    "train-batch-zero": (["train", T, "train.batch_size=0"], "train.batch_size"),
    "train-momentum-2": (["train", T, "train.momentum=2"], "train.momentum"),
    "train-optimizer": (["train", T, "train.optimizer=foo"], "train.optimizer"),
    "train-seed-abc": (["train", T, "seed=abc"], "seed"),
    "train-out-file": (["train", T, "out={W}/afile.txt"], "afile.txt"),
    "train-out-under-file": (["train", T, "out={W}/afile.txt/run"], "afile.txt"),
    "train-out-surface-run": (["train", T, "out={W}/surf"], "llv surface"),
    "train-model-unknown": (["train", T, "model=nosuch"], "model"),
    "train-dataset-unknown": (["train", T, "dataset=nosuch"], "dataset"),
    "train-save-every-0": (["train", T, "train.save_every=0"], "train.save_every"),
    "train-gamma-nan": (["train", T, "train.gamma=nan"], "train.gamma"),
    "train-milestones-text": (["train", T, "train.milestones=[a]"], "train.milestones"),
    "train-weight-decay-negative": (["train", T, "train.weight_decay=-1"], "train.weight_decay"),
    "train-unknown-key": (["train", T, "train.foo=1"], "train.foo"),
    "train-device": (["train", T, "device=tpu"], "device"),
    # direction
    "direction-kind-pca": (["direction", T, C, "direction.kind=pca"], "dir_file"),
    "direction-kind-file": (["direction", T, C, "direction.kind=file"], "dir_file"),
    "direction-target-missing": (["direction", T, C, "direction.kind=target"], "direction.target"),
    "direction-target-absent": (["direction", T, C, "direction.kind=target", "direction.target={W}/no.pt"],
                                "does not exist"),
    "direction-target-folder": (["direction", T, C, "direction.kind=target", "direction.target={W}/empty"],
                                "folder"),
    "direction-overwrite": (["direction", T, C, "out={W}/dirs"], "overwrite=true"),
    "direction-out-surface-run": (["direction", T, C, "out={W}/surf"], "llv surface"),
    "direction-checkpoint-folder": (["direction", T, "checkpoint={W}/empty"], "folder"),
    "direction-checkpoint-absent": (["direction", T, "checkpoint={W}/no.pt"], "does not exist"),
    "direction-checkpoint-text": (["direction", T, "checkpoint={W}/afile.txt"], "not a PyTorch checkpoint"),
    "direction-checkpoint-nan": (["direction", T, "checkpoint={W}/nan.pt"], "conv.weight"),
    "direction-norm": (["direction", T, C, "norm=foo"], "norm"),
    "direction-ensemble-0": (["direction", T, C, "direction.ensemble=0"], "direction.ensemble"),
    "direction-seed-negative": (["direction", T, C, "direction.seed=-1"], "direction.seed"),
    "direction-overwrite-maybe": (["direction", T, C, "overwrite=maybe"], "overwrite"),
    "direction-grid-inf": (["direction", T, C, "grid.x=-inf:inf:5"], "grid"),
    "direction-out-file": (["direction", T, C, "out={W}/afile.txt"], "afile.txt"),
    "direction-model-contradicts": (["direction", T, C, "model=mlp"], "model"),
    "direction-type": (["direction", T, C, "direction.type=foo"], "direction.type"),
    # surface: values
    "surface-grid-inf": (["surface", T, C, "grid.x=-inf:inf:5"], "grid"),
    "surface-grid-huge": (["surface", T, C, "grid.x=-1:1:100000", "grid.y=-1:1:100000"], "GiB"),
    "surface-grid-point": (["surface", T, C, "grid=point"], "1D or 2D"),
    "surface-grid-auto-one-point": (["surface", T, C, "grid.x=auto:1"], "at least 2 points"),
    "surface-grid-auto-rise-below-one": (["surface", T, C, "grid.x=auto", "grid.auto_rise=0.9"], "grid.auto_rise"),
    "surface-grid-auto-add-negative": (["surface", T, C, "grid.x=auto", "grid.auto_add=-1"], "grid.auto_add"),
    "surface-batch-abc": (["surface", T, C, "eval.batch_size=abc"], "eval.batch_size"),
    "surface-batch-0": (["surface", T, C, "eval.batch_size=0"], "eval.batch_size"),
    "surface-seed-abc": (["surface", T, C, "seed=abc"], "seed"),
    "surface-stop-abc": (["surface", T, C, "stop_after_points=abc"], "stop_after_points"),
    "surface-stop-negative": (["surface", T, C, "stop_after_points=-1"], "stop_after_points"),
    "surface-probe-maybe": (["surface", T, C, "probe=maybe"], "probe"),
    "surface-ensemble-0": (["surface", T, C, "direction.ensemble=0"], "direction.ensemble"),
    "surface-eps-nan": (["surface", T, C, "summary.eps=nan"], "summary.eps"),
    "surface-chunk-0": (["surface", T, C, "eval.chunk_points=0"], "eval.chunk_points"),
    "surface-splits-empty": (["surface", T, C, "eval.splits=[]"], "eval.splits"),
    "surface-splits-val": (["surface", T, C, "eval.splits=[val]"], "eval.splits"),
    "surface-precision": (["surface", T, C, "eval.precision=fp16"], "eval.precision"),
    "surface-max-samples-0": (["surface", T, C, "eval.max_samples=0"], "eval.max_samples"),
    "surface-loss": (["surface", T, C, "loss=foo"], "loss"),
    "surface-device": (["surface", T, C, "device=tpu"], "device"),
    "surface-dist": (["surface", T, C, "dist=foo"], "dist"),
    "surface-points-per-batch-0": (["surface", T, C, "eval.points_per_batch=0"], "eval.points_per_batch"),
    "surface-bn": (["surface", T, C, "eval.bn=foo"], "eval.bn"),
    "surface-strict-maybe": (["surface", T, C, "strict=maybe"], "strict"),
    "surface-hessian-tol-nan": (["surface", T, C, "direction.kind=hessian", "hessian.tol=nan"], "hessian.tol"),
    "surface-kind-pca": (["surface", T, C, "direction.kind=pca"], "dir_file"),
    "surface-kind-target": (["surface", T, C, "direction.kind=target"], "direction.target"),
    "surface-unquoted-non-ascii-file": (["surface", T, C, "out={W}/afile.txt/é"], "afile.txt"),
    # surface: paths
    "surface-checkpoint-folder": (["surface", T, "checkpoint={W}/empty"], "folder"),
    "surface-checkpoint-absent": (["surface", T, "checkpoint={W}/no.pt"], "does not exist"),
    "surface-checkpoint-text": (["surface", T, "checkpoint={W}/afile.txt"], "not a PyTorch checkpoint"),
    "surface-checkpoint-nan": (["surface", T, "checkpoint={W}/nan.pt"], "strict=false"),
    "surface-dir-file-absent": (["surface", T, C, "dir_file={W}/no.h5"], "does not exist"),
    "surface-dir-file-folder": (["surface", T, C, "dir_file={W}/empty"], "folder"),
    "surface-resume-absent": (["surface", T, C, "resume={W}/no.h5"], "no such file"),
    "surface-resume-text": (["surface", "resume={W}/text.h5"], "not an HDF5 file"),
    "surface-resume-other-h5": (["surface", "resume={W}/other.h5"], "not an llv result file"),
    "surface-resume-empty-folder": (["surface", "resume={W}/empty"], "surface.h5"),
    "surface-out-file": (["surface", T, C, "out={W}/afile.txt"], "afile.txt"),
    "surface-out-under-file": (["surface", T, C, "out={W}/afile.txt/run"], "afile.txt"),
    "surface-out-long-name": (["surface", T, C, "out={W}/" + "a" * 300], "too long"),
    # surface: another command's or another run's folder
    "surface-out-direction-run": (["surface", T, C, "out={W}/dirs"], "llv direction"),
    "surface-out-train-run": (["surface", T, C, "out={W}/trainrun"], "llv train"),
    "surface-out-seed": (["surface", "out={W}/surf", "direction.seed=5"], "direction.seed"),
    "surface-out-grid": (["surface", "out={W}/surf", "grid=11x11"], "grid.x"),
    "surface-out-splits": (["surface", "out={W}/surf", "eval.splits=[test]"], "eval.splits"),
    "surface-out-checkpoint": (["surface", "out={W}/surf", "checkpoint={W}/tiny2.pt"], "checkpoint"),
    "surface-resume-norm": (["surface", "resume={W}/surf/surface.h5", "norm=layer"], "direction.norm"),
    "surface-resume-model": (["surface", "resume={W}/surf/surface.h5", "model=mlp"], "model"),
    "surface-resume-kind": (["surface", "resume={W}/surf/surface.h5", "direction.kind=target"], "direction.kind"),
    "surface-resume-dir-file": (["surface", "resume={W}/surf/surface.h5", "dir_file={W}/dirs/directions.h5"],
                                "dir_file"),
    "surface-resume-max-samples": (["surface", "resume={W}/surf/surface.h5", "eval.max_samples=5"],
                                   "eval.max_samples"),
    "surface-resume-outside-out": (["surface", "resume={W}/surf/surface.h5", "out={W}/elsewhere"], "out="),
    "surface-model-contradicts": (["surface", T, C, "model=mlp"], "model"),
    # interpolate
    "interpolate-no-checkpoint2": (["interpolate", T, C], "checkpoint2"),
    "interpolate-checkpoint2-absent": (["interpolate", T, C, "checkpoint2={W}/no.pt"], "does not exist"),
    "interpolate-checkpoint2-folder": (["interpolate", T, C, "checkpoint2={W}/empty"], "folder"),
    "interpolate-2d-grid": (["interpolate", T, C, "checkpoint2={W}/tiny2.pt", "grid=21x21"], "1D grid"),
    "interpolate-checkpoint-nan": (["interpolate", T, "checkpoint={W}/nan.pt", "checkpoint2={W}/tiny.pt"],
                                   "conv.weight"),
    "interpolate-recompute-maybe": (["interpolate", T, C, "checkpoint2={W}/tiny2.pt",
                                     "interpolate.recompute_bn=maybe"], "interpolate.recompute_bn"),
    "interpolate-out-surface-run": (["interpolate", T, C, "checkpoint2={W}/tiny2.pt", "out={W}/surf"],
                                    "llv surface"),
    "interpolate-grid-nan": (["interpolate", T, C, "checkpoint2={W}/tiny2.pt", "grid.x=nan:1:5"], "grid"),
    "interpolate-grid-auto": (["interpolate", T, C, "checkpoint2={W}/tiny2.pt", "grid.x=auto"], "set by the two models"),
    "interpolate-checkpoint-folder": (["interpolate", T, "checkpoint={W}/empty", "checkpoint2={W}/tiny.pt"],
                                      "folder"),
    "interpolate-resume-surface": (["interpolate", "resume={W}/surf/surface.h5"], "llv surface"),
    # hessian
    "hessian-tol-nan": (["hessian", T, C, "hessian.tol=nan"], "hessian.tol"),
    "hessian-tol-0": (["hessian", T, C, "hessian.tol=0"], "hessian.tol"),
    "hessian-top-k-0": (["hessian", T, C, "hessian.top_k=0"], "hessian.top_k"),
    "hessian-probes-0": (["hessian", T, C, "hessian.trace_probes=0"], "hessian.trace_probes"),
    "hessian-max-samples-0": (["hessian", T, C, "hessian.max_samples=0"], "hessian.max_samples"),
    "hessian-dtype": (["hessian", T, C, "hessian.dtype=float16"], "hessian.dtype"),
    "hessian-checkpoint-folder": (["hessian", T, "checkpoint={W}/empty"], "folder"),
    "hessian-checkpoint-nan": (["hessian", T, "checkpoint={W}/nan.pt"], "conv.weight"),
    "hessian-out-surface-run": (["hessian", T, C, "out={W}/surf"], "llv surface"),
    "hessian-grid-dir-file-absent": (["hessian", T, C, "grid=11x11", "dir_file={W}/no.h5"], "does not exist"),
    "hessian-sharpness-eps-nan": (["hessian", T, C, "sharpness.eps=nan"], "sharpness.eps"),
    "hessian-resume-surface": (["hessian", "resume={W}/surf/surface.h5"], "llv surface"),
    "hessian-grid-kind-pca": (["hessian", T, C, "grid=11x11", "direction.kind=pca"], "dir_file"),
    # trajectory
    "trajectory-run-absent": (["trajectory", T, "run={W}/no-run"], "does not exist"),
    "trajectory-run-file": (["trajectory", T, "run={W}/afile.txt"], "afile.txt"),
    "trajectory-two-epochs": (["trajectory", T, "run={W}/trainrun", "trajectory.epochs=[0,1]"], "3 epochs"),
    "trajectory-epoch-missing": (["trajectory", T, "run={W}/trainrun", "trajectory.epochs=[0,1,7]"], "7"),
    "trajectory-1d-grid": (["trajectory", T, "run={W}/trainrun", "grid=1d_51"], "grid"),
    "trajectory-grid-auto": (["trajectory", T, "run={W}/trainrun", "grid.x=auto"], "fitted to the path"),
    "trajectory-margin-negative": (["trajectory", T, "run={W}/trainrun", "trajectory.margin=-1"],
                                   "trajectory.margin"),
    "trajectory-memory-0": (["trajectory", T, "run={W}/trainrun", "trajectory.memory_mb=0"],
                            "trajectory.memory_mb"),
    "trajectory-out-surface-run": (["trajectory", T, "run={W}/trainrun", "out={W}/surf"], "llv surface"),
    "trajectory-run-empty": (["trajectory", T, "run={W}/empty"], "no checkpoints"),
    "trajectory-center-maybe": (["trajectory", T, "run={W}/trainrun", "trajectory.center=maybe"],
                                "trajectory.center"),
    # plot
    "plot-file-absent": (["plot", "contour", "{W}/no.h5"], "no.h5"),
    "plot-kind": (["plot", "nosuch", "{W}/surf/surface.h5"], "plot kind"),
    "plot-text-file": (["plot", "contour", "{W}/text.h5"], "text.h5"),
    "plot-other-h5": (["plot", "contour", "{W}/other.h5"], "other.h5"),
    "plot-format": (["plot", "contour", "{W}/surf/surface.h5", "--format", "bmp"], "format"),
    "plot-trajectory-of-surface": (["plot", "trajectory", "{W}/surf/surface.h5"], "surface.h5"),
    "plot-spectrum-of-surface": (["plot", "spectrum", "{W}/surf/surface.h5"], "surface.h5"),
    "plot-folder": (["plot", "contour", "{W}/empty"], "empty"),
    "plot-metric": (["plot", "contour", "{W}/surf/surface.h5", "--metric", "nosuch"], "nosuch"),
    "plot-direction-file": (["plot", "contour", "{W}/dirs/directions.h5"], "direction file"),
    "plot-weights-of-file": (["plot", "weights", "{W}/afile.txt"], "afile.txt"),
}

#: Run as real processes, on CIFAR-10 in an empty folder (reading it would fail).
SUBPROCESS_CASES = {
    "train-lr-nan": ["train", "dataset=cifar10", "dataset.root={W}/cifar", "train.lr=nan", "out={W}/new"],
    "train-out-surface-run": ["train", "dataset=cifar10", "dataset.root={W}/cifar", "out={W}/surf"],
    "direction-overwrite": ["direction", "dataset=cifar10", "dataset.root={W}/cifar", C, "out={W}/dirs"],
    "surface-checkpoint-folder": ["surface", "dataset=cifar10", "dataset.root={W}/cifar", "checkpoint={W}/empty"],
    "surface-grid-inf": ["surface", "dataset=cifar10", "dataset.root={W}/cifar", C, "grid.x=-inf:inf:5"],
    "surface-out-direction-run": ["surface", "dataset=cifar10", "dataset.root={W}/cifar", C, "out={W}/dirs"],
    "surface-resume-seed": ["surface", "resume={W}/surf/surface.h5", "direction.seed=5"],
    "surface-checkpoint-nan": ["surface", "dataset=cifar10", "dataset.root={W}/cifar", "checkpoint={W}/nan.pt",
                               "model=custom", "model.module._target_=nets.TinyConvBN",
                               "+model.module.in_channels=1", "+model.module.image_size=4",
                               "model.module.num_classes=3"],
    "interpolate-no-checkpoint2": ["interpolate", "dataset=cifar10", "dataset.root={W}/cifar", C],
    "hessian-tol-nan": ["hessian", "dataset=cifar10", "dataset.root={W}/cifar", C, "hessian.tol=nan"],
    "trajectory-run-absent": ["trajectory", "dataset=cifar10", "dataset.root={W}/cifar", "run={W}/no-run"],
    "plot-file-absent": ["plot", "contour", "{W}/no.h5"],
}


def test_the_matrix_covers_every_subcommand_with_at_least_80_cases():
    commands = {args[0] for args, _ in CASES.values()}
    assert commands == {"train", "direction", "surface", "interpolate", "hessian", "trajectory", "plot"}
    assert len(CASES) >= 80
    assert len(SUBPROCESS_CASES) >= 10


@pytest.fixture
def no_data(monkeypatch):
    """The data loaders, replaced by ones that record the call and fail."""
    import llv.data

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise RuntimeError("a data set was read")

    for name in ("load_eval_data", "load_split"):
        monkeypatch.setattr(llv.data, name, refuse)
    return calls


def _check_refusal(code: int, output: str, needle: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert TRACEBACK not in output, output
    assert len(lines) <= 3, output
    assert any(line.startswith("llv: error:") for line in lines), output
    assert needle.lower() in output.lower(), output


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_any_data_and_changes_nothing(case, world, no_data,
                                                                         monkeypatch, capfd):
    from typer.testing import CliRunner

    from llv.cli import app

    args, needle = CASES[case]
    monkeypatch.chdir(world)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    before = snapshot(world)
    result = CliRunner().invoke(app, fill(args, world))
    captured = capfd.readouterr()
    output = result.output + captured.out + captured.err
    _check_refusal(result.exit_code, output, needle)
    assert no_data == [], f"data were read before the refusal: {output}"
    assert snapshot(world) == before


#: The real-process cases in the default suite; the others are slow (a process each).
QUICK_PROCESSES = ("train-lr-nan", "direction-overwrite", "surface-checkpoint-folder", "plot-file-absent")


@pytest.mark.parametrize("case", [c if c in QUICK_PROCESSES else pytest.param(c, marks=pytest.mark.slow)
                                  for c in SUBPROCESS_CASES])
def test_bad_input_in_a_real_process(case, world):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    before = snapshot(world)
    done = subprocess.run([sys.executable, "-m", "llv", *fill(SUBPROCESS_CASES[case], world)],
                          capture_output=True, text=True, cwd=world, env=env, timeout=300)
    needle = CASES[case][1] if case in CASES else "direction.seed"
    _check_refusal(done.returncode, done.stdout + done.stderr, needle)
    assert snapshot(world) == before
