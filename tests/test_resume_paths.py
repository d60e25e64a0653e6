"""Resuming needs nothing but ``resume=FILE``, from any working directory, even after the run
folder moved: every path a run records is absolute, and a recorded file that is gone is looked
for beside the result file, used only when its SHA-256 is the recorded one."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import TINY_DATA, save_tiny_checkpoint, tiny_overrides
from conftest import llv_in_process as llv

GRID = ["grid.x=-1:1:4", "grid.y=-1:1:3", "eval.chunk_points=2", "probe=false",
        "summary.cross_check=false"]
METRICS = ("train_loss", "train_acc")


def values_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in (*METRICS, "done")}


def attrs_of(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def assert_bit_identical(a: Path, b: Path) -> None:
    first, second = values_of(a), values_of(b)
    assert first["done"].all() and second["done"].all()
    for key in METRICS:
        np.testing.assert_array_equal(first[key], second[key])  # bit for bit


def data_overrides(tmp_path: Path) -> list[str]:
    """The tiny net on tiny data, without a checkpoint (each test passes its own)."""
    return tiny_overrides(tmp_path)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder (the cwd) holding ``ck/tiny.pt``, and another folder to resume from."""
    here, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (here / "ck").mkdir(parents=True)
    elsewhere.mkdir()
    checkpoint = save_tiny_checkpoint(here / "ck")
    assert checkpoint == here / "ck" / "tiny.pt"
    monkeypatch.chdir(here)
    return here, elsewhere


def _whole(tmp_path: Path, capfd, *extra) -> Path:
    """An uninterrupted run, for the bit-for-bit comparison."""
    out = tmp_path / "whole"
    code, printed = llv("surface", *data_overrides(tmp_path), f"checkpoint={tmp_path / 'work/ck/tiny.pt'}",
                        *GRID, *extra, f"out={out}", capfd=capfd)
    assert code == 0, printed
    return out / "surface.h5"


def _stored_config(result: Path) -> dict:
    return yaml.safe_load(attrs_of(result)["config"])


def test_relative_checkpoint_and_dir_file_resume_from_another_directory(work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    base = data_overrides(tmp_path)
    code, printed = llv("direction", *base, "checkpoint=ck/tiny.pt", *GRID, "out=dirs", capfd=capfd)
    assert code == 0, printed
    whole = _whole(tmp_path, capfd, f"dir_file={here / 'dirs/directions.h5'}")

    code, printed = llv("surface", *base, "checkpoint=ck/tiny.pt", "dir_file=dirs/directions.h5", *GRID,
                        "stop_after_points=4", "out=rel", capfd=capfd)
    assert code == 0, printed
    result = here / "rel" / "surface.h5"
    assert 0 < values_of(result)["done"].sum() < 12
    stored = _stored_config(result)
    assert stored["checkpoint"] == str(here / "ck" / "tiny.pt")
    assert stored["dir_file"] == str(here / "dirs" / "directions.h5")
    assert Path(stored["outputs"]).is_absolute() and Path(stored["dataset"]["root"]).is_absolute()
    on_disk = yaml.safe_load((here / "rel" / "config.yaml").read_text())
    assert on_disk["checkpoint"] == stored["checkpoint"] and on_disk["dir_file"] == stored["dir_file"]
    attrs = attrs_of(result)
    assert attrs["checkpoint"] == str(here / "ck" / "tiny.pt")
    assert attrs["dir_file"] == str(here / "dirs" / "directions.h5")

    monkeypatch.chdir(elsewhere)
    code, printed = llv("surface", f"resume={result}", capfd=capfd)
    assert code == 0, printed
    assert_bit_identical(result, whole)
    # the same relative dir_file typed again from the first folder is the same file, not a contradiction
    monkeypatch.chdir(here)
    code, printed = llv("surface", "resume=rel/surface.h5", "dir_file=dirs/directions.h5", capfd=capfd)
    assert code == 0, printed


def test_a_run_with_its_own_directions_and_a_relative_out_resumes_from_another_directory(
        work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    whole = _whole(tmp_path, capfd)
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=ck/tiny.pt", *GRID,
                        "stop_after_points=4", "out=rel", capfd=capfd)
    assert code == 0, printed
    result = here / "rel" / "surface.h5"
    assert attrs_of(result)["dir_file"] == str(here / "rel" / "directions.h5")
    monkeypatch.chdir(elsewhere)
    # choosing the data set again (dataset=...) does not choose another dataset.root: the
    # recorded one (absolute, in the first folder) is kept, not refused as a contradiction
    code, printed = llv("surface", f"resume={result}", *TINY_DATA, capfd=capfd)
    assert code == 0, printed
    assert_bit_identical(result, whole)
    assert _stored_config(result)["dataset"]["root"] == str(here / "data")


def test_a_moved_run_folder_resumes_with_the_directions_beside_its_result(work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    whole = _whole(tmp_path, capfd)
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=ck/tiny.pt", *GRID,
                        "stop_after_points=5", f"out={here / 'rel3'}", capfd=capfd)
    assert code == 0, printed
    shutil.move(here / "rel3", here / "rel3moved")
    monkeypatch.chdir(elsewhere)
    result = here / "rel3moved" / "surface.h5"
    code, printed = llv("surface", f"resume={result}", capfd=capfd)
    assert code == 0, printed
    assert_bit_identical(result, whole)
    assert attrs_of(result)["dir_file"] == str(here / "rel3moved" / "directions.h5")
    assert not (here / "rel3").exists()


def test_a_moved_run_folder_holding_its_checkpoint_and_dir_file_resumes(work, tmp_path, monkeypatch, capfd):
    """``checkpoint=`` and ``dir_file=`` inside the run folder: both found beside the result by
    name and SHA-256 once the folder moved."""
    here, elsewhere = work
    code, printed = llv("direction", *data_overrides(tmp_path), "checkpoint=ck/tiny.pt", *GRID, "out=dirs",
                        capfd=capfd)
    assert code == 0, printed
    whole = _whole(tmp_path, capfd, f"dir_file={here / 'dirs/directions.h5'}")
    run = here / "run"
    run.mkdir()
    shutil.copy(here / "ck" / "tiny.pt", run / "model.pt")
    shutil.copy(here / "dirs" / "directions.h5", run / "mine.h5")
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=run/model.pt", "dir_file=run/mine.h5",
                        *GRID, "stop_after_points=3", "out=run", capfd=capfd)
    assert code == 0, printed
    shutil.move(run, here / "moved")
    monkeypatch.chdir(elsewhere)
    result = here / "moved" / "surface.h5"
    code, printed = llv("surface", f"resume={result}", capfd=capfd)
    assert code == 0, printed
    assert_bit_identical(result, whole)
    stored = _stored_config(result)
    assert stored["checkpoint"] == str(here / "moved" / "model.pt")
    assert stored["dir_file"] == str(here / "moved" / "mine.h5")


def _tamper(path: Path) -> None:
    """Change one direction value, leaving the file's attrs (its recorded sha256) as they were."""
    with h5py.File(path, "r+") as f:
        data = f["xdirection"]["0"]
        values = data[()]
        values.flat[0] += 1.0
        data[...] = values


def test_a_moved_run_folder_with_tampered_directions_is_refused(work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=ck/tiny.pt", *GRID,
                        "stop_after_points=5", "out=rel3", capfd=capfd)
    assert code == 0, printed
    shutil.move(here / "rel3", here / "rel3moved")
    moved = here / "rel3moved"
    _tamper(moved / "directions.h5")
    before = {p.name: p.read_bytes() for p in moved.iterdir() if p.is_file()}
    monkeypatch.chdir(elsewhere)
    code, printed = llv("surface", f"resume={moved / 'surface.h5'}", capfd=capfd)
    assert code == 2, printed
    assert "Traceback" not in printed
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) <= 3, printed
    assert str(here / "rel3" / "directions.h5") in printed and str(moved / "directions.h5") in printed
    assert "sha-256" in printed.lower() and "put the direction file" in printed
    after = {p.name: p.read_bytes() for p in moved.iterdir() if p.is_file() and p.name != ".llv.lock"}
    assert after == {k: v for k, v in before.items() if k != ".llv.lock"}


def test_a_moved_run_folder_with_another_checkpoint_of_the_same_name_is_refused(
        work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    run = here / "run"
    run.mkdir()
    shutil.copy(here / "ck" / "tiny.pt", run / "model.pt")
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=run/model.pt", *GRID,
                        "stop_after_points=3", "out=run", capfd=capfd)
    assert code == 0, printed
    shutil.move(run, here / "moved")
    save_tiny_checkpoint(here / "moved", seed=1, name="model.pt")  # another model, the same name
    monkeypatch.chdir(elsewhere)
    code, printed = llv("surface", f"resume={here / 'moved' / 'surface.h5'}", capfd=capfd)
    assert code == 2, printed
    assert str(run / "model.pt") in printed and str(here / "moved" / "model.pt") in printed


def test_a_recorded_checkpoint_gone_everywhere_names_both_places(work, tmp_path, monkeypatch, capfd):
    here, elsewhere = work
    code, printed = llv("surface", *data_overrides(tmp_path), "checkpoint=ck/tiny.pt", *GRID,
                        "stop_after_points=3", "out=rel", capfd=capfd)
    assert code == 0, printed
    shutil.move(here / "ck" / "tiny.pt", elsewhere / "copy.pt")
    monkeypatch.chdir(elsewhere)
    code, printed = llv("surface", f"resume={here / 'rel' / 'surface.h5'}", capfd=capfd)
    assert code == 2, printed
    assert str(here / "ck" / "tiny.pt") in printed and str(here / "rel" / "tiny.pt") in printed
    assert "pass checkpoint=PATH" in printed and "Traceback" not in printed
    # as it says: the same checkpoint (by SHA-256) under another name continues the run
    code, printed = llv("surface", f"resume={here / 'rel' / 'surface.h5'}", "checkpoint=copy.pt", capfd=capfd)
    assert code == 0, printed
    assert values_of(here / "rel" / "surface.h5")["done"].all()


def _schema_path_keys() -> tuple[set[str], set[str]]:
    """Every key of every command's config (all model and data set families) that the schema
    types as a path, and every mapping of paths."""
    from dataclasses import fields

    from llv import schema

    paths, maps = set(), set()

    def walk(cls, prefix: str) -> None:
        for f in fields(cls):
            key = prefix + f.name
            if "node" in f.metadata:
                classes = {f.metadata["node"]}
                family = f.metadata.get("family")
                if family is not None:
                    classes |= {family({"name": option}) for option in schema.group_options(key)}
                for node in classes:
                    walk(node, key + ".")
            elif isinstance(f.metadata.get("check"), schema.PathText):
                paths.add(key)
            elif isinstance(f.metadata.get("check"), schema.TextMap):
                maps.add(key)

    for config in schema.CONFIGS.values():
        walk(config, "")
    return paths, maps


def test_every_path_key_of_the_schema_is_recorded_absolute():
    from llv.tasks.session import PATH_KEYS, PATH_MAPS

    paths, maps = _schema_path_keys()
    per_invocation = {"out", "resume", "name"}  # never inherited, or not a path (a folder suffix)
    assert paths - per_invocation == set(PATH_KEYS)
    assert maps == set(PATH_MAPS)


def test_absolute_paths_resolves_every_path_key_and_nothing_else(tmp_path, monkeypatch):
    from llv.tasks.session import absolute_paths

    monkeypatch.chdir(tmp_path)
    plain = {"checkpoint": "a.pt", "checkpoint2": "b.pt", "checkpoint3": None, "dir_file": "d/x.h5",
             "run": "outputs/train/r", "outputs": "outputs", "out": "rel", "resume": "rel/surface.h5",
             "name": "n", "direction": {"target": "t.pt", "seed": 0}, "seed": 0,
             "dataset": {"name": "text", "root": "data", "path": "~/t.txt"}, "paths": {"train": "tr"}}
    out = absolute_paths(plain)
    assert plain["checkpoint"] == "a.pt"  # a copy
    for key in ("checkpoint", "checkpoint2", "dir_file", "run", "outputs"):
        assert out[key] == str(tmp_path / plain[key])
    assert out["direction"] == {"target": str(tmp_path / "t.pt"), "seed": 0}
    assert out["dataset"]["root"] == str(tmp_path / "data")
    assert out["dataset"]["path"] == str(Path("~/t.txt").expanduser().resolve())
    assert out["paths"] == {"train": str(tmp_path / "tr")}
    assert (out["checkpoint3"], out["out"], out["resume"], out["name"], out["seed"]) == (None, "rel", "rel/surface.h5",
                                                                                          "n", 0)
