"""``llv train train.resume=true``: a resumed run keeps the settings that define it, refuses a
path that holds no run, and the digits split refuses a ``test_fraction`` it cannot honour, each
as one line before any work."""

import os
import shutil
import subprocess
import sys

import pytest

from llv.config import compose
from llv.console import LlvError
from llv.tasks.train import run as train

BASE = ["model=mlp", "train.epochs=2", "train.milestones=[1]"]


def overrides(out, *extra):
    return [f"out={out}", f"outputs={out.parent / 'outputs'}", *BASE, *extra]


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory):
    """A finished two-epoch mlp run on digits (trained once per module, copied per test)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(compose("train", overrides(out)))
    return out


@pytest.fixture
def run_copy(two_epochs, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(two_epochs, copy)
    return copy


def snapshot(folder):
    """Every file under ``folder`` with its bytes (the lock file's text names its last holder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".llv.lock"}


def no_data(monkeypatch):
    """Make any data read fail: a refusal must come before it."""
    import llv.data

    def refuse(*args, **kwargs):
        raise AssertionError("data were read before the refusal")

    monkeypatch.setattr(llv.data, "load_split", refuse)
    monkeypatch.setattr(llv.data, "load_eval_data", refuse)


# ------------------------------------------------------------------ 1. settings on resume


@pytest.mark.parametrize(("extra", "message"), [
    (["train.lr=0.5"], "train.lr=0.1, not train.lr=0.5"),
    (["train.batch_size=16"], "train.batch_size=128, not train.batch_size=16"),
    (["seed=7"], "seed=0, not seed=7"),
    (["dataset.test_fraction=0.5"], "dataset.test_fraction=0.2, not dataset.test_fraction=0.5"),
    (["dataset.split_seed=3"], "dataset.split_seed=0, not dataset.split_seed=3"),
    (["train.momentum=0.5"], "train.momentum=0.9, not train.momentum=0.5"),
    (["train.weight_decay=0"], "train.weight_decay=0.0005, not train.weight_decay=0"),
    (["train.milestones=[5]"], "train.milestones=[1], not train.milestones=[5]"),
    (["train.gamma=0.5"], "train.gamma=0.1, not train.gamma=0.5"),
    (["train.optimizer=adam"], "train.optimizer=sgd, not train.optimizer=adam"),
    (["train.sam.rho=0.5"], "train.sam.rho=0.05, not train.sam.rho=0.5"),
    (["model.hidden=[32]"], "model.hidden=[64, 64], not model.hidden=[32]"),
    (["model=resnet8"], "it trains model mlp, which does not fit model resnet8"),
    (["dataset=synthetic"], "it trains on dataset digits, not dataset synthetic"),
])
def test_a_resume_with_other_settings_is_refused_before_any_work(run_copy, monkeypatch, extra,
                                                                 message):
    before = snapshot(run_copy)
    no_data(monkeypatch)
    with pytest.raises(LlvError, match="^cannot resume .*run: ") as refused:
        train(compose("train", overrides(run_copy, "train.epochs=3", "train.resume=true", *extra)))
    text = str(refused.value)
    assert message in text and "\n" not in text
    assert snapshot(run_copy) == before  # config.yaml, checkpoints and metrics untouched


def test_the_qa_case_is_refused_naming_the_first_differing_key(run_copy, monkeypatch):
    before = snapshot(run_copy)
    no_data(monkeypatch)
    with pytest.raises(LlvError, match=r"seed=0, not seed=7"):
        train(compose("train", overrides(
            run_copy, "train.epochs=3", "train.lr=0.5", "train.batch_size=16",
            "dataset.test_fraction=0.5", "seed=7", "train.resume=true")))
    assert snapshot(run_copy) == before


def test_fewer_epochs_than_done_is_refused_before_any_work(run_copy, monkeypatch):
    before = snapshot(run_copy)
    no_data(monkeypatch)
    with pytest.raises(LlvError, match=r"trained 2 epochs.*train\.epochs=1"):
        train(compose("train", overrides(run_copy, "train.epochs=1", "train.resume=true")))
    assert snapshot(run_copy) == before


def test_more_epochs_and_computing_settings_may_change_and_the_record_stays_true(run_copy):
    import yaml

    resumed = train(compose("train", overrides(
        run_copy, "train.epochs=3", "train.resume=true", "device=cpu", "eval.batch_size=100",
        "train.num_workers=0", "train.save_every=2", "train.optimizer=SGD")))
    assert resumed == run_copy
    saved = yaml.safe_load((run_copy / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["train"]["lr"] == 0.1
    assert saved["seed"] == 0 and saved["dataset"]["test_fraction"] == 0.2
    rows = (run_copy / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    assert (run_copy / "checkpoints" / "epoch_003.pt").is_file()


# ------------------------------------------------------------------ 2. nothing to resume


def test_resume_into_a_path_without_a_run_is_refused_and_creates_nothing(tmp_path, monkeypatch):
    no_data(monkeypatch)
    missing = tmp_path / "T_nonexist"
    with pytest.raises(LlvError, match=r"^there is no training run in .*T_nonexist to resume"):
        train(compose("train", overrides(missing, "train.resume=true")))
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LlvError, match=r"^there is no training run in .*empty to resume"):
        train(compose("train", overrides(empty, "train.resume=true")))
    assert set(os.listdir(empty)) <= {".llv.lock"}  # the lock's (empty) file of a refused run


def test_resume_without_a_checkpoint_but_with_its_config_starts_that_run(two_epochs, tmp_path):
    """A run stopped before its epoch-0 checkpoint left only config.yaml: resuming starts it."""
    stopped = tmp_path / "run"
    stopped.mkdir()
    shutil.copy(two_epochs / "config.yaml", stopped / "config.yaml")
    train(compose("train", overrides(stopped, "train.resume=true")))
    assert (stopped / "final.pt").is_file()


# ------------------------------------------------------------------ 3. digits split sizes


@pytest.mark.parametrize("fraction", ["0.001", "0.005", "0.995", "0.999"])
def test_a_test_fraction_the_stratified_split_cannot_honour_is_one_line(tmp_path, monkeypatch,
                                                                       fraction):
    no_data(monkeypatch)
    out = tmp_path / "V6"
    with pytest.raises(LlvError, match=r"between 0\.0056 and 0\.9944") as refused:
        train(compose("train", overrides(out, f"dataset.test_fraction={fraction}")))
    assert f"dataset.test_fraction={fraction}" in str(refused.value)
    assert not out.exists()


def test_the_advertised_bounds_work():
    from sklearn.datasets import load_digits

    from llv.data.digits import split_indices

    labels = load_digits().target
    for fraction in (0.0056, 0.9944):
        parts = split_indices(labels, fraction, 0)
        assert min(len(parts["train"]), len(parts["test"])) >= 10
        assert len(parts["train"]) + len(parts["test"]) == len(labels)


def test_split_indices_names_the_bounds_for_any_labels():
    import numpy as np

    from llv.data.digits import split_indices

    labels = np.repeat(np.arange(4), 5)  # 20 examples, 4 classes: 0.2 .. 0.8
    assert len(split_indices(labels, 0.2, 0)["test"]) == 4
    with pytest.raises(LlvError, match=r"between 0\.2 and 0\.8"):
        split_indices(labels, 0.15, 0)
    with pytest.raises(LlvError, match=r"between 0\.2 and 0\.8"):
        split_indices(labels, 0.85, 0)
    with pytest.raises(LlvError, match=r"class 3 has 1 example"):
        split_indices(np.array([0, 0, 1, 1, 2, 2, 3]), 0.5, 0)


@pytest.mark.slow  # a fresh interpreter (5-6 s); the in-process test above covers the check
def test_a_bad_test_fraction_in_a_real_process_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llv", "train", "model=mlp", "train.epochs=1",
         "dataset.test_fraction=0.001", "out=V6"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "between 0.0056 and 0.9944" in lines[0], result.stderr
    assert os.listdir(tmp_path) == []
