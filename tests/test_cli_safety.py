"""CLI safety: refusals before any work, and results never replaced (docs/reliability.md).

The matrix here follows tests/test_bad_inputs.py (its fixtures and checks are reused): every
case exits 2 with one short line, reads no data and leaves the working folder as it was. The
other tests cover what a matrix cannot: a result of an earlier run in the same folder, a
resume that changes only how points are computed, a direction file changed since.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
from conftest import llv_in_process, save_tiny_checkpoint, tiny_overrides
from test_bad_inputs import _check_refusal, fill, no_data, snapshot, world  # noqa: F401  (fixtures)

from llv.config import compose, to_yaml

T, C = "{T}", "{C}"
GRID2 = ["grid.x=-1:1:3", "grid.y=-1:1:3"]


@pytest.fixture(scope="module")
def safety_world(world):  # noqa: F811
    """The bad-input world plus a checkpoint of another architecture, its directions, and a 1D
    direction file of the tiny net."""
    import llv.tasks.direction

    linear = save_tiny_checkpoint(world, net="TinyLinear", name="linear.pt")
    llv.tasks.direction.run(compose("direction", [*tiny_overrides(world, "TinyLinear"), f"checkpoint={linear}",
                                                  f"out={world / 'ldirs'}"]))
    llv.tasks.direction.run(compose("direction", [*tiny_overrides(world), f"checkpoint={world / 'tiny.pt'}",
                                                  "grid.x=-1:1:3", "grid.y=null", f"out={world / 'dirs1d'}"]))
    return world


CASES = {
    # wrong-kind secondary inputs: read and checked before config.yaml is written (defect 2)
    "surface-dir-file-checkpoint": (["surface", T, C, *GRID2, "dir_file={W}/tiny.pt"], "direction file"),
    "surface-dir-file-other-h5": (["surface", T, C, *GRID2, "dir_file={W}/other.h5"], "xdirection"),
    "surface-dir-file-1d-on-2d": (["surface", T, C, *GRID2, "dir_file={W}/dirs1d/directions.h5"], "2D"),
    "surface-dir-file-other-model": (["surface", T, C, *GRID2, "dir_file={W}/ldirs/directions.h5"], "tensors"),
    "hessian-grid-dir-file-checkpoint": (["hessian", T, C, *GRID2, "dir_file={W}/tiny.pt"], "direction file"),
    "interpolate-checkpoint2-text": (["interpolate", T, C, "checkpoint2={W}/afile.txt"], "not a PyTorch checkpoint"),
    "interpolate-checkpoint2-other-model": (["interpolate", T, C, "checkpoint2={W}/linear.pt"], "does not fit"),
    "surface-target-text": (["surface", T, C, *GRID2, "direction.kind=target", "direction.target={W}/afile.txt"],
                            "not a PyTorch checkpoint"),
    "surface-target-other-model": (["surface", T, C, *GRID2, "direction.kind=target",
                                    "direction.target={W}/linear.pt"], "direction.target"),
    "direction-target-other-model": (["direction", T, C, "direction.kind=target", "direction.target={W}/linear.pt"],
                                     "does not fit"),
    "surface-plane-other-model": (["surface", T, C, *GRID2, "direction.kind=plane", "checkpoint2={W}/tiny2.pt",
                                   "checkpoint3={W}/linear.pt"], "checkpoint3"),
    # a required key deleted with ~ (defect 3)
    "surface-delete-batch-size": (["surface", T, C, "~eval.batch_size"], "eval.batch_size"),
    "surface-delete-direction-seed": (["surface", T, C, "~direction.seed"], "direction.seed"),
    "surface-delete-eval": (["surface", T, C, "~eval"], "eval"),
    "surface-delete-model": (["surface", C, "~model"], "model"),
    "hessian-delete-tol": (["hessian", T, C, "~hessian.tol"], "hessian.tol"),
    "train-delete-lr": (["train", T, "~train.lr"], "train.lr"),
    # name= is a folder-name suffix, never a path (defect 6)
    "surface-name-escapes": (["surface", T, C, "name=../../../esc"], "name"),
    "surface-name-slash": (["surface", T, C, "name=a/b"], "name"),
    "surface-name-backslash": (["surface", T, C, "name=a\\b"], "name"),
    "surface-name-hidden": (["surface", T, C, "name=.hidden"], "name"),
    "train-name-escapes": (["train", T, "name=../esc"], "name"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_any_data_and_changes_nothing(case, safety_world, no_data,  # noqa: F811
                                                                         monkeypatch, capfd):
    args, needle = CASES[case]
    monkeypatch.chdir(safety_world)
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    before = snapshot(safety_world)
    code, printed = llv_in_process(*fill(args, safety_world), capfd=capfd)
    _check_refusal(code, printed, needle)
    assert no_data == [], f"data were read before the refusal: {printed}"
    assert snapshot(safety_world) == before
    assert not (safety_world.parent / "esc").exists() and not (safety_world / "esc").exists()


def test_a_refused_secondary_input_leaves_no_config_that_a_rerun_inherits(tiny, tmp_path, capfd):
    """The reported trap: a bad dir_file= left config.yaml, so a corrected run was refused."""
    overrides, ckpt = tiny
    run = tmp_path / "run"
    code, printed = llv_in_process("surface", *overrides, *GRID2, f"dir_file={ckpt}", f"out={run}", capfd=capfd)
    _check_refusal(code, printed, "direction file")
    assert not run.exists()
    code, printed = llv_in_process("surface", *overrides, *GRID2, "probe=false", "summary.cross_check=false",
                                   f"out={run}", capfd=capfd)
    assert code == 0, printed


# ----------------------------------------------------------- results of an earlier run (defect 1)


def test_a_hessian_point_at_another_checkpoint_is_refused_and_the_result_kept(tiny, tmp_path, capfd):
    overrides, _ = tiny
    other = save_tiny_checkpoint(tmp_path, seed=1, name="other.pt")
    run = tmp_path / "H"
    point = ["hessian.compute=[extremes]", "hessian.max_samples=16", f"out={run}"]
    assert llv_in_process("hessian", *overrides, *point, capfd=capfd)[0] == 0
    before = (run / "hessian.h5").read_bytes()
    code, printed = llv_in_process("hessian", *overrides, *point, f"checkpoint={other}", capfd=capfd)
    _check_refusal(code, printed, "another checkpoint")
    assert (run / "hessian.h5").read_bytes() == before
    # the same checkpoint recomputes the point, as documented
    assert llv_in_process("hessian", *overrides, *point, capfd=capfd)[0] == 0


def test_a_stopped_run_asked_for_another_checkpoint_is_refused(tiny, tmp_path, capfd):
    """Stopped before its first result (config.yaml only, directions from dir_file=): the
    checkpoint its config.yaml names is compared by content."""
    overrides, ckpt = tiny
    other = save_tiny_checkpoint(tmp_path, seed=1, name="other.pt")
    run = tmp_path / "run"
    run.mkdir()
    cfg = compose("surface", [*overrides, *GRID2, f"out={run}"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    before = (run / "config.yaml").read_bytes()
    code, printed = llv_in_process("surface", f"out={run}", f"checkpoint={other}", capfd=capfd)
    _check_refusal(code, printed, "checkpoint")
    assert (run / "config.yaml").read_bytes() == before
    assert ckpt.is_file()


# ------------------------------------------------------------- resumes (defects 4 and 5)


def test_a_resume_may_change_how_points_are_computed_not_what(tiny, tmp_path, capfd):
    overrides, _ = tiny
    run = tmp_path / "K"
    fixed = [*overrides, "grid.x=-1:1:5", "grid.y=null", "probe=false", "summary.cross_check=false"]
    assert llv_in_process("surface", *fixed, f"out={run}", "stop_after_points=2", capfd=capfd)[0] == 0
    code, printed = llv_in_process("surface", f"out={run}", "eval.precision=fp64", capfd=capfd)
    assert code == 2 and "eval.precision" in printed and "contradicts" in printed, printed
    code, printed = llv_in_process("surface", f"out={run}", "eval.compile=off", "eval.fold=false",
                                   "eval.channels_last=false", capfd=capfd)
    assert code == 0, printed
    with h5py.File(run / "surface.h5", "r") as f:
        assert f["done"][()].all()


def _surface_then_change_directions(overrides, tmp_path, capfd):
    dirs, run = tmp_path / "D", tmp_path / "E"
    one_d = ["grid.x=-1:1:5", "grid.y=null"]
    assert llv_in_process("direction", *overrides, *one_d, f"out={dirs}", capfd=capfd)[0] == 0
    assert llv_in_process("surface", *overrides, *one_d, f"dir_file={dirs / 'directions.h5'}", f"out={run}",
                          "stop_after_points=2", "plot=false", capfd=capfd)[0] == 0
    assert llv_in_process("direction", *overrides, *one_d, f"out={dirs}", "overwrite=true", "direction.seed=9",
                          capfd=capfd)[0] == 0
    return run


def test_a_direction_file_changed_since_the_stop_is_one_line_before_the_probe(tiny, tmp_path, monkeypatch,
                                                                             capfd):
    overrides, _ = tiny
    run = _surface_then_change_directions(overrides, tmp_path, capfd)
    before = (run / "surface.h5").read_bytes()
    import llv.data

    read = []

    def refuse(*args, **kwargs):
        read.append(args)
        raise RuntimeError("a data set was read")

    for name in ("load_eval_data", "load_split"):
        monkeypatch.setattr(llv.data, name, refuse)
    code, printed = llv_in_process("surface", f"out={run}", capfd=capfd)
    _check_refusal(code, printed, "direction sha256 differs")
    assert read == [], printed
    assert (run / "surface.h5").read_bytes() == before


# --------------------------------------------------------------------------- stops (defect 7)


def test_a_stop_before_the_first_save_says_nothing_was_lost(tmp_path, capfd):
    from llv.runlock import Stopped
    from llv.tasks.session import report_stop

    session = SimpleNamespace(is_root=True, cfg=SimpleNamespace(command="surface"), run_dir=tmp_path)
    stop = Stopped(15)
    with caplog_of_llv() as records:
        report_stop(session, stop, "surface.h5")
    printed = capfd.readouterr().err
    said = " ".join(r.getMessage() for r in records)
    assert "nothing is lost" in said and "before it saved a result" not in said
    assert stop.llv_saved is False  # the final line (llv.cli.user_errors) says the same
    assert f"llv: continue with: llv surface out={tmp_path.resolve()}" in printed


@contextlib.contextmanager
def caplog_of_llv():
    """The records llv's logger emits inside the block, whatever handlers earlier tests left."""
    import logging

    from llv.console import log

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, level = Keep(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def test_settings_only_the_model_or_data_refute_are_refused_before_anything_is_written(tmp_path, capfd):
    # hessian.top_k above the parameter count, and a digits split with fewer test images than
    # classes, are one line before config.yaml exists (no folder a rerun would inherit)
    from llv.checkpoint import save_checkpoint
    from llv.models import build_model

    checkpoint = save_tiny_checkpoint(tmp_path)
    code, printed = llv_in_process("hessian", *tiny_overrides(tmp_path), f"checkpoint={checkpoint}",
                                   "hessian.compute=[top_k]", "hessian.top_k=100000",
                                   f"out={tmp_path / 'h'}", capfd=capfd)
    assert code == 2 and "eigenvalues asked for" in printed, printed
    assert not (tmp_path / "h" / "config.yaml").exists()
    mlp = compose("surface", ["model=mlp"])
    digits = save_checkpoint(tmp_path / "mlp.pt", build_model(mlp.model), 0, mlp, {})
    code, printed = llv_in_process("surface", "model=mlp", f"checkpoint={digits}",
                                   "dataset.test_fraction=0.001", "grid.x=-1:1:3",
                                   "grid.y=null", "device=cpu", "dist=none", "plot=false",
                                   f"outputs={tmp_path / 'outputs'}", f"out={tmp_path / 's'}", capfd=capfd)
    assert code == 2 and "test_fraction" in printed, printed
    assert not (tmp_path / "s" / "config.yaml").exists()


def test_a_stop_before_any_point_says_nothing_was_lost_in_both_lines(tmp_path, capsys):
    # the warning and the final line agree: no "results computed so far are saved" with no result
    import types

    import typer

    from llv.cli import user_errors
    from llv.tasks.session import report_stop

    session = types.SimpleNamespace(is_root=True, cfg=types.SimpleNamespace(command="surface"),
                                    run_dir=tmp_path)
    for saved in (False, True):
        if saved:
            (tmp_path / "surface.h5").write_bytes(b"")
        stop = KeyboardInterrupt()
        report_stop(session, stop, "surface.h5")
        try:
            with user_errors():
                raise stop
        except (typer.Exit, SystemExit):
            pass
        printed = " ".join(capsys.readouterr().err.split())
        assert ("results computed so far are saved" in printed) == saved, printed
        assert ("nothing was computed yet, nothing is lost" in printed) != saved, printed
