"""Faults in the grid commands (issue 19, docs/reliability.md): what llv promises about files.

Two writers into one folder, a direction file over a partial run, a full disk, SIGTERM and
Ctrl-C then ``llv surface resume=FILE`` with nothing else, a checkpoint with NaN weights, the
``latest`` link, and the exit status of a bug. ``kill -9`` of ``llv train`` during a checkpoint
write is ``tests/test_train.py::test_kill_9_during_a_checkpoint_write_then_resume_is_bit_identical``.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import llv_in_process, save_tiny_checkpoint, tiny_overrides
from typer.testing import CliRunner

from llv.cli import app

HERE = Path(__file__).parent
METRICS = ("train_loss", "train_acc", "train_loss_se")


def llv(*args, monkeypatch=None, capfd=None):
    """``llv ARGS`` in this process: (exit status, everything it printed)."""
    return llv_in_process(*args, capfd=capfd)


def llv_process(*args, cwd=None, **options):
    env = dict(os.environ, PYTHONPATH=str(HERE), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "llv", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options)


def values_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in (*METRICS, "done")}


def assert_same_values(a: Path, b: Path) -> None:
    first, second = values_of(a), values_of(b)
    assert first["done"].all() and second["done"].all()
    for key in METRICS:
        np.testing.assert_array_equal(first[key], second[key])  # bit for bit, NaN nowhere


def slow_tiny(tmp_path: Path, delay: float = 0.02) -> list[str]:
    checkpoint = save_tiny_checkpoint(tmp_path, net="SlowTinyConvBN", name="slow.pt")
    return [*tiny_overrides(tmp_path, "SlowTinyConvBN"), f"+model.module.delay={delay}",
            f"checkpoint={checkpoint}", "probe=false", "summary.cross_check=false"]


# ------------------------------------------------------------------------- one writer per folder


def test_two_writers_into_one_out_the_second_is_refused_naming_the_first(tmp_path, capfd):
    from llv.runlock import RunLock

    checkpoint = save_tiny_checkpoint(tmp_path)
    base = [*tiny_overrides(tmp_path), f"checkpoint={checkpoint}", "probe=false",
            "summary.cross_check=false"]
    run = tmp_path / "run"
    grid = ["grid.x=-1:1:21", "grid.y=-1:1:21"]  # 441 points: seconds of work under the lock
    first = llv_process("surface", *base, *grid, f"out={run}", "direction.seed=0", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while (RunLock.holder(run) or {}).get("pid") != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        code, printed = llv("surface", *base, *grid, f"out={run}", "direction.seed=1", capfd=capfd)
        assert code == 2 and f"is being written by pid {first.pid} " in printed, printed
        assert len(printed.strip().splitlines()) == 1
        while not (run / "surface.h5").is_file() and first.poll() is None:
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # no need to wait for the rest: it saves what it has
        _, err = first.communicate(timeout=300)
        assert first.returncode in (0, 143), err
    finally:
        first.kill()
    # the surface belongs to the directions on disk: the second writer changed nothing
    with h5py.File(run / "surface.h5", "r") as surface, h5py.File(run / "directions.h5", "r") as made:
        assert surface.attrs["direction_sha256"] == made.attrs["sha256"]
        assert int(made.attrs["seed"]) == 0


# ------------------------------------------------------------ never another run's or command's


def test_llv_direction_never_overwrites_without_overwrite_true(tiny, tmp_path, capfd):
    overrides, _ = tiny
    run = tmp_path / "dirs"
    assert llv("direction", *overrides, f"out={run}", capfd=capfd)[0] == 0
    before = (run / "directions.h5").read_bytes()
    code, printed = llv("direction", *overrides, f"out={run}", "direction.seed=1", capfd=capfd)
    assert code == 2 and "overwrite=true" in printed
    assert (run / "directions.h5").read_bytes() == before
    assert llv("direction", *overrides, f"out={run}", "direction.seed=1", "overwrite=true",
               capfd=capfd)[0] == 0
    with h5py.File(run / "directions.h5", "r") as f:
        assert int(f.attrs["seed"]) == 1


def test_llv_direction_into_a_partial_surface_run_is_refused_and_the_run_finishes(tiny, tmp_path, capfd):
    overrides, _ = tiny
    run = tmp_path / "surface"
    assert llv("surface", *overrides, "grid=11x11", f"out={run}", "stop_after_points=5",
               capfd=capfd)[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".llv.lock"}
    code, printed = llv("direction", *overrides, f"out={run}", "overwrite=true", capfd=capfd)
    assert code == 2 and "holds a `llv surface` run" in printed
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".llv.lock"} == before
    assert llv("surface", f"out={run}", capfd=capfd)[0] == 0  # finishes with nothing else given
    assert values_of(run / "surface.h5")["done"].all()


def test_a_surface_out_of_a_train_run_is_refused_and_its_config_kept(tmp_path, capfd):
    run = tmp_path / "trained"
    run.mkdir()
    (run / "config.yaml").write_text("command: train\nmodel:\n  name: mlp\n")
    before = (run / "config.yaml").read_bytes()
    code, printed = llv("surface", f"out={run}", "dataset.root=/nonexistent", capfd=capfd)
    assert code == 2 and "holds a `llv train` run" in printed
    assert (run / "config.yaml").read_bytes() == before


def test_a_completed_run_asked_for_other_directions_is_refused_by_key(tiny, tmp_path, capfd):
    overrides, _ = tiny
    run = tmp_path / "run"
    assert llv("surface", *overrides, "grid.x=-1:1:3", "grid.y=-1:1:3", f"out={run}", capfd=capfd)[0] == 0
    stamp = (run / "surface.h5").stat().st_mtime_ns
    for change, key in (("direction.seed=7", "direction.seed"), ("norm=layer", "direction.norm"),
                        ("grid.y=-1:1:5", "grid.y"), ("eval.splits=[train,test]", "eval.splits")):
        code, printed = llv("surface", *overrides, "grid.x=-1:1:3", "grid.y=-1:1:3", f"out={run}",
                            change, capfd=capfd)
        assert code == 2 and f"{key}=" in printed and "contradicts" in printed, printed
    assert (run / "surface.h5").stat().st_mtime_ns == stamp


# --------------------------------------------------------------------- stopping and resuming


def interrupt():
    raise KeyboardInterrupt


def _stop_after(monkeypatch, points: int, stop) -> None:
    """Make the point evaluator call ``stop()`` once ``points`` points were evaluated."""
    from llv.evaluate import PointEvaluator

    real, seen = PointEvaluator.evaluate, [0]

    def evaluate(self, coefficients):
        seen[0] += len(coefficients)
        if seen[0] > points:
            stop()
        return real(self, coefficients)

    monkeypatch.setattr(PointEvaluator, "evaluate", evaluate)


@pytest.mark.parametrize(("how", "status"), [("sigterm", 143), ("ctrl-c", 130)])
def test_a_stop_saves_prints_the_continue_line_and_resume_file_alone_equals_an_uninterrupted_run(
        tiny, tmp_path, monkeypatch, capfd, how, status):
    from llv.runlock import RunLock

    overrides, _ = tiny
    grid = ["grid.x=-1:1:7", "grid.y=-1:1:5", "eval.chunk_points=4", "probe=false",
            "summary.cross_check=false"]
    assert llv("surface", *overrides, *grid, f"out={tmp_path / 'whole'}", capfd=capfd)[0] == 0

    def stop():
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # what a batch scheduler sends
            time.sleep(5)  # the handler raises in here
        raise KeyboardInterrupt

    _stop_after(monkeypatch, 12, stop)
    run = tmp_path / "stopped"
    code, printed = llv("surface", *overrides, *grid, f"out={run}", capfd=capfd)
    monkeypatch.undo()
    assert code == status, printed
    continue_line = f"llv: continue with: llv surface resume={(run / 'surface.h5').resolve()}"
    assert continue_line in printed, printed
    done = values_of(run / "surface.h5")["done"]
    assert 12 <= done.sum() < done.size
    with RunLock(run, "next"):  # released
        pass
    command = shlex.split(continue_line.partition("continue with: ")[2])
    assert command[:2] == ["llv", "surface"] and len(command) == 3  # nothing but resume=FILE
    assert llv(*command[1:], capfd=capfd)[0] == 0
    assert_same_values(run / "surface.h5", tmp_path / "whole" / "surface.h5")


@pytest.mark.slow
def test_sigterm_of_a_real_process_then_the_printed_command_equals_an_uninterrupted_run(tmp_path, capfd):
    base = slow_tiny(tmp_path)
    grid = ["grid.x=-1:1:15", "grid.y=-1:1:15", "eval.chunk_points=2"]
    assert llv("surface", *base, *grid, f"out={tmp_path / 'whole'}", capfd=capfd)[0] == 0
    run = tmp_path / "stopped"
    proc = llv_process("surface", *base, *grid, f"out={run}", cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not (run / "surface.h5").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = next(x for x in err.splitlines() if x.startswith("llv: continue with: "))
    command = shlex.split(line.partition("continue with: ")[2])
    assert len(command) == 3 and command[2].startswith("resume=")
    resumed = llv_process(*command[1:], cwd=tmp_path)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert_same_values(run / "surface.h5", tmp_path / "whole" / "surface.h5")


def test_resume_removes_temporaries_of_a_killed_run(tiny, tmp_path, capfd):
    overrides, _ = tiny
    run = tmp_path / "run"
    assert llv("surface", *overrides, "grid=11x11", f"out={run}", "stop_after_points=3", capfd=capfd)[0] == 0
    dead = 2**22 + 12345  # above the usual pid_max: no such process
    stale = [run / f".surface.h5.llv-tmp-{dead}-abc123", run / f".surface.h5.tmp{dead}",
             run / f"directions.h5.tmp{dead}"]
    for path in stale:
        path.write_bytes(b"half a file")
    assert llv("surface", f"resume={run / 'surface.h5'}", "stop_after_points=3", capfd=capfd)[0] == 0
    assert not any(p.exists() for p in stale)


# ----------------------------------------------------------------- what a run knows by itself


def test_surface_takes_the_model_from_the_checkpoint(tiny, tmp_path, capfd):
    _, checkpoint = tiny
    data = [o for o in tiny_overrides(tmp_path) if not o.lstrip("+").startswith("model")]
    code, printed = llv("surface", *data, f"checkpoint={checkpoint}", "grid.x=-1:1:3", "grid.y=null",
                        f"out={tmp_path / 'run'}", capfd=capfd)
    assert code == 0, printed
    from omegaconf import OmegaConf

    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.model.module._target_ == "nets.TinyConvBN"
    code, printed = llv("surface", *data, f"checkpoint={checkpoint}", "model=mlp", capfd=capfd)
    assert code == 2 and "model=mlp contradicts checkpoint" in printed


def test_non_finite_weights_are_refused_unless_strict_false_then_nan_points_without_alarm(
        tmp_path, capfd):
    import torch

    checkpoint = save_tiny_checkpoint(tmp_path)
    state = torch.load(checkpoint, weights_only=False)
    state["state_dict"]["conv.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    args = [*tiny_overrides(tmp_path), f"checkpoint={tmp_path / 'nan.pt'}", "grid.x=-1:1:3",
            "grid.y=null", "probe=false", "summary.cross_check=false"]
    code, printed = llv("surface", *args, f"out={tmp_path / 'refused'}", capfd=capfd)
    assert code == 2 and "conv.weight holds 1 NaN" in printed
    assert not (tmp_path / "refused").exists()
    code, printed = llv("surface", *args, f"out={tmp_path / 'run'}", "strict=false", capfd=capfd)
    assert code == 0, printed
    assert "strict=false" in printed and "please report" not in printed
    with h5py.File(tmp_path / "run" / "surface.h5", "r") as f:
        assert f["done"][()].all() and np.isnan(f["train_loss"][()]).all()


# ------------------------------------------------------------------------------ I/O faults


@pytest.fixture
def small_disk(tmp_path):
    from test_fsio import mount_tmpfs, unmount

    folder = mount_tmpfs(tmp_path / "disk")
    yield folder
    unmount(folder)


def _fill(folder: Path, leave: int) -> None:
    """Fill the file system of ``folder`` up to ``leave`` free bytes."""
    import shutil

    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


def test_full_disk_in_direction_and_surface_is_one_line_and_keeps_the_old_file(tiny, small_disk, capfd):
    overrides, _ = tiny
    run = small_disk / "run"
    assert llv("direction", *overrides, f"out={run}", capfd=capfd)[0] == 0
    before = (run / "directions.h5").read_bytes()
    _fill(small_disk, 8192)  # room for config.yaml, not for the 12 KiB direction file
    code, printed = llv("direction", *overrides, f"out={run}", "direction.seed=1", "overwrite=true",
                        capfd=capfd)
    assert code == 2 and "free of" in printed and "No space left on device" in printed, printed
    assert len(printed.strip().splitlines()) <= 3 and "Traceback" not in printed
    assert (run / "directions.h5").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [".llv.lock", "config.yaml", "directions.h5"]
    code, printed = llv("surface", *overrides, "grid=11x11", f"out={small_disk / 'surface'}", capfd=capfd)
    assert code == 2 and "No space left on device" in printed and "Traceback" not in printed, printed
    assert not [p for p in small_disk.rglob("*") if "tmp" in p.name]


# ------------------------------------------------------------------------------ exit status


def test_an_internal_error_is_one_line_that_says_bug_and_exit_1(tiny, monkeypatch, capfd):
    from llv.tasks import surface as surface_task

    overrides, _ = tiny

    def broken(cfg):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(surface_task, "run", broken)
    code, printed = llv("surface", *overrides, capfd=capfd)
    assert code == 1 and "a bug in llv" in printed and "run with -v" in printed
    assert len(printed.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["surface", *overrides, "-v"])
    assert result.exit_code == 1 and isinstance(result.exception, TypeError)  # -v: the traceback


# -------------------------------------------------------------------------- the latest link


def test_latest_moves_only_after_success_and_runs_write_only_under_their_outputs(tiny, tmp_path,
                                                                                 monkeypatch, capfd):
    repository_outputs = HERE.parent / "outputs"

    def listing(folder: Path):
        if not folder.exists():
            return None
        return sorted((str(p.relative_to(folder)), os.readlink(p) if p.is_symlink() else None)
                      for p in folder.rglob("*"))

    before = listing(repository_outputs)
    overrides, _ = tiny
    outputs = tmp_path / "outputs"
    monkeypatch.chdir(tmp_path)
    assert llv("surface", *overrides, "grid.x=-1:1:3", "grid.y=null", capfd=capfd)[0] == 0
    latest = outputs / "surface" / "latest"
    first = latest.resolve()
    assert first.parent == (outputs / "surface").resolve() and (first / "surface.h5").is_file()
    # a refused run and a stopped run leave latest where it was
    assert llv("surface", *overrides, "grid.x=-1:1:3", "grid.y=null", "eval.splits=[val]",
               capfd=capfd)[0] == 2
    _stop_after(monkeypatch, 0, interrupt)
    assert llv("surface", *overrides, "grid.x=-1:1:3", "grid.y=null", capfd=capfd)[0] == 130
    assert latest.resolve() == first
    assert listing(repository_outputs) == before  # nothing of the repository's outputs/ moved
