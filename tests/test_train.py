"""Training: SAM/ASAM against hand computations, run layout, accuracy, determinism, resume."""

import copy
import csv
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from llv.checkpoint import load_state_dict
from llv.config import compose
from llv.tasks.train import METRICS_COLUMNS
from llv.tasks.train import run as train
from llv.training import SAM, build_optimizer, train_step

LR, MOMENTUM, WEIGHT_DECAY, RHO = 0.1, 0.9, 5e-4, 0.05




# ------------------------------------------------------------------------------------- SAM


def tiny_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    inputs = torch.randn(16, 5, dtype=torch.float64)
    targets = torch.randint(0, 3, (16,))
    return model, inputs, targets


def loss_gradient(model, params, inputs, targets):
    """∇L at ``params`` (a list shaped like ``model.parameters()``), by functional_call."""
    names = [name for name, _ in model.named_parameters()]
    leaves = [p.detach().clone().requires_grad_(True) for p in params]
    logits = torch.func.functional_call(model, dict(zip(names, leaves, strict=True)), (inputs,))
    return torch.autograd.grad(nn.functional.cross_entropy(logits, targets), leaves)


def nesterov_first_step(w, g):
    """SGD with Nesterov momentum and weight decay, first step (empty momentum buffer)."""
    d = g + WEIGHT_DECAY * w
    return w - LR * (d + MOMENTUM * d)


def sam_settings(adaptive=False, eta=0.01, base="sgd"):
    return {"kind": "sam", "lr": LR, "momentum": MOMENTUM, "nesterov": True,
            "weight_decay": WEIGHT_DECAY, "sam_rho": RHO, "sam_adaptive": adaptive,
            "sam_eta": eta, "sam_base": base}


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_step_equals_hand_computation(adaptive):
    model, inputs, targets = tiny_problem()
    w = [p.detach().clone() for p in model.parameters()]
    g = loss_gradient(model, w, inputs, targets)
    # ASAM: T = |w| + eta elementwise (eta = 0.01); SAM: T = 1.
    t = [wi.abs() + 0.01 if adaptive else torch.ones_like(wi) for wi in w]
    norm = torch.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g, strict=True)))
    e = [RHO * ti * ti * gi / norm for ti, gi in zip(t, g, strict=True)]
    g_sharp = loss_gradient(model, [wi + ei for wi, ei in zip(w, e, strict=True)], inputs, targets)
    expected = [nesterov_first_step(wi, gi) for wi, gi in zip(w, g_sharp, strict=True)]

    optimizer = build_optimizer(model, **sam_settings(adaptive=adaptive))
    assert isinstance(optimizer, SAM)
    train_step(model, optimizer, inputs, targets)
    for got, want, start in zip(model.parameters(), expected, w, strict=True):
        assert not torch.allclose(want, start)
        torch.testing.assert_close(got.detach(), want, rtol=0, atol=1e-6)
    # Plain SGD from the same start lands elsewhere: SAM's gradient is really taken at w + e.
    plain = [nesterov_first_step(wi, gi) for wi, gi in zip(w, g, strict=True)]
    assert max((a - b).abs().max() for a, b in zip(plain, expected, strict=True)) > 1e-4


def test_sam_with_adam_base_steps_from_w_with_the_sharp_gradient():
    model, inputs, targets = tiny_problem()
    w = [p.detach().clone() for p in model.parameters()]
    g = loss_gradient(model, w, inputs, targets)
    norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    g_sharp = loss_gradient(model, [wi + RHO * gi / norm for wi, gi in zip(w, g, strict=True)],
                            inputs, targets)
    reference = copy.deepcopy(model)
    adam = torch.optim.Adam(reference.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    for p, gi in zip(reference.parameters(), g_sharp, strict=True):
        p.grad = gi.clone()
    adam.step()
    train_step(model, build_optimizer(model, **sam_settings(base="adam")), inputs, targets)
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_sam_updates_batchnorm_running_stats_on_the_first_pass_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    inputs, targets = torch.randn(32, 6) * 3 + 1, torch.randint(0, 3, (32,))
    once = copy.deepcopy(model).train()
    with torch.no_grad():
        once(inputs)  # one train-mode forward of the batch at w
    optimizer = build_optimizer(model, **sam_settings())
    train_step(model, optimizer, inputs, targets)
    bn, expected = model[1], once[1]
    assert not torch.equal(bn.running_mean, torch.zeros(8))
    torch.testing.assert_close(bn.running_mean, expected.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, expected.running_var, rtol=0, atol=0)
    assert int(bn.num_batches_tracked) == 1


# -------------------------------------------------------------------------------- llv train


def overrides(out, *extra, seed=0):
    return [f"out={out}", f"outputs={out.parent / 'outputs'}", f"seed={seed}", "train.epochs=3",
            "train.milestones=[2]", "train.save_every=1", *extra]


def read_metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as handle:
        return list(csv.reader(handle))


def final_state(run_dir):
    return load_state_dict(run_dir / "final.pt")[0]


def assert_identical(a, b):
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    return train(compose("train", overrides(out)))


def test_short_run_writes_checkpoints_metrics_and_final(short_run):
    names = sorted(p.name for p in (short_run / "checkpoints").iterdir())
    assert names == ["epoch_000.pt", "epoch_001.pt", "epoch_002.pt", "epoch_003.pt"]
    rows = read_metrics(short_run)
    assert rows[0] == list(METRICS_COLUMNS)
    assert rows[0] == ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]
    assert [int(r[0]) for r in rows[1:]] == [0, 1, 2, 3]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([0.1, 0.1, 0.1, 0.01])  # drop after 2
    state, meta = load_state_dict(short_run / "final.pt")
    assert (meta["epoch"], meta["model"], meta["dataset"]) == (3, "resnet8", "digits")
    assert meta["metrics"]["test_acc"] == pytest.approx(float(rows[-1][5]), abs=1e-5)
    # Epoch checkpoints keep the training state and load without unsafe unpickling.
    raw = torch.load(short_run / "checkpoints" / "epoch_003.pt", weights_only=True)
    assert {"optimizer", "scheduler", "rng"} <= set(raw)
    assert_identical(raw["state_dict"], state)
    first = torch.load(short_run / "checkpoints" / "epoch_000.pt", weights_only=True)
    assert not torch.equal(first["state_dict"]["conv1.weight"], state["conv1.weight"])
    assert (short_run / "config.yaml").is_file()


def test_short_run_learns_digits(short_run):
    rows = read_metrics(short_run)[1:]
    assert float(rows[0][5]) < 30  # chance level before training
    assert float(rows[-1][5]) >= 90  # test accuracy after 3 epochs (96-97 % over seeds 0-4)
    assert float(rows[-1][2]) < float(rows[0][2]) / 5  # training loss fell


@pytest.mark.parametrize("optimizer", [["train.optimizer=adam", "train.lr=0.01"],
                                       ["train.optimizer=sam", "train.sam.adaptive=true"]],
                         ids=["adam", "asam"])
def test_other_optimizers_learn_digits(tmp_path, optimizer):
    run_dir = train(compose("train", overrides(tmp_path / "run", *optimizer)))
    assert float(read_metrics(run_dir)[-1][5]) >= 90


def test_same_seed_gives_bit_identical_weights(short_run, tmp_path):
    again = train(compose("train", overrides(tmp_path / "again")))
    assert_identical(final_state(again), final_state(short_run))
    assert [r[:6] for r in read_metrics(again)] == [r[:6] for r in read_metrics(short_run)]
    other = train(compose("train", overrides(tmp_path / "other", seed=1)))
    key = "linear.weight"
    assert not torch.equal(final_state(other)[key], final_state(short_run)[key])


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_resume_after_k_epochs_is_bit_identical(tmp_path, optimizer):
    extra = [f"train.optimizer={optimizer}", "train.save_every=1"]
    full = train(compose("train", overrides(tmp_path / "full", *extra)))
    # A run stopped after epoch 1: its later checkpoints, metrics rows and final.pt never came.
    stopped = tmp_path / "stopped"
    shutil.copytree(full, stopped)
    for name in ("checkpoints/epoch_002.pt", "checkpoints/epoch_003.pt", "final.pt"):
        (stopped / name).unlink()
    lines = (stopped / "metrics.csv").read_text().splitlines(keepends=True)
    (stopped / "metrics.csv").write_text("".join(lines[:4]))  # header, 0, 1, 2 (epoch 2 half done)
    args = overrides(stopped, *extra, "train.resume=true")
    if optimizer == "sam":  # without out=, the newest run (outputs/train/latest) is continued
        latest = tmp_path / "outputs" / "train" / "latest"  # made by the CLI after a success
        latest.parent.mkdir(parents=True, exist_ok=True)
        latest.unlink(missing_ok=True)
        latest.symlink_to(stopped)
        args = [a for a in args if not a.startswith("out=")]
    resumed = train(compose("train", args))
    assert resumed.resolve() == stopped.resolve()
    assert_identical(final_state(resumed), final_state(full))
    for epoch in (2, 3):
        name = f"checkpoints/epoch_{epoch:03d}.pt"
        assert_identical(load_state_dict(resumed / name)[0], load_state_dict(full / name)[0])
    assert [r[:6] for r in read_metrics(resumed)] == [r[:6] for r in read_metrics(full)]
    # Resuming a finished run changes nothing.
    before = (resumed / "final.pt").stat().st_mtime_ns
    assert train(compose("train", overrides(stopped, *extra, "train.resume=true"))) == stopped
    assert (resumed / "final.pt").stat().st_mtime_ns == before


def test_resume_refuses_another_model(short_run, tmp_path):
    from llv.console import LlvError

    stopped = tmp_path / "stopped"
    shutil.copytree(short_run, stopped)
    with pytest.raises(LlvError, match="does not fit model resnet8_noshort"):
        train(compose("train", overrides(stopped, "model=resnet8_noshort", "train.resume=true")))


def test_a_fresh_run_refuses_a_directory_that_holds_a_run(short_run):
    from llv.console import LlvError

    before = (short_run / "final.pt").stat().st_mtime_ns
    with pytest.raises(LlvError, match="already holds a training run \\(up to epoch 3\\)"):
        train(compose("train", overrides(short_run)))
    assert (short_run / "final.pt").stat().st_mtime_ns == before


def test_missing_data_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llv", "train", "dataset=cifar10", f"dataset.root={tmp_path}",
         f"outputs={tmp_path / 'outputs'}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llv: error:") and "cifar" in lines[0].lower()
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "outputs").exists()  # no run directory for a run that cannot start


# ---------------------------------------------------------------------------- reliability


def cli(*args):
    """``llv ARGS`` in a fresh process (``python -m llv``)."""
    return [sys.executable, "-m", "llv", *args]


def wait_for(path, process, seconds=180):
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"llv ended (exit {process.returncode}) before {path.name} appeared: "
                        f"{process.stderr.read()[-2000:] if process.stderr else ''}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} did not appear within {seconds} s")
        time.sleep(0.05)


def assert_same_run(run, reference):
    """Bit-identical weights in every checkpoint and final.pt, identical metrics (not times)."""
    for name in ("final.pt", *(f"checkpoints/epoch_{e:03d}.pt" for e in range(4))):
        assert_identical(load_state_dict(run / name)[0], load_state_dict(reference / name)[0])
    assert [r[:6] for r in read_metrics(run)] == [r[:6] for r in read_metrics(reference)]


def test_checkpoints_record_their_model_config(short_run):
    from omegaconf import OmegaConf

    from llv.checkpoint import load_into, model_config_of
    from llv.models import build_model

    expected = OmegaConf.to_container(compose("train", overrides(short_run)).model, resolve=True)
    for name in ("final.pt", "checkpoints/epoch_000.pt"):
        assert model_config_of(short_run / name) == expected
    model = build_model(OmegaConf.create(model_config_of(short_run / "final.pt")))
    load_into(model, short_run / "final.pt")  # strict: the rebuilt model is the trained one
    assert torch.equal(model.state_dict()["linear.weight"], final_state(short_run)["linear.weight"])


@pytest.mark.parametrize(("key", "value"), [("train.lr", "nan"), ("train.lr", -0.1),
                                          ("train.momentum", "inf"), ("train.gamma", "nan"),
                                          ("train.weight_decay", "-inf"), ("train.sam.rho", "nan")])
def test_invalid_numbers_are_refused_before_anything_is_written(tmp_path, key, value):
    """train refuses them itself, whatever the config schema lets through."""
    from omegaconf import OmegaConf

    from llv.console import LlvError

    cfg = compose("train", overrides(tmp_path / "run"))
    OmegaConf.update(cfg, key, float(value))
    with pytest.raises(LlvError, match=f"^{key} must be "):
        train(cfg)
    assert not (tmp_path / "run").exists() and not (tmp_path / "outputs").exists()


def test_an_out_that_is_a_file_is_one_line_and_unchanged(tmp_path):
    from llv.console import LlvError

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LlvError, match=r"^out=.*notes\.txt is a file, not a folder$"):
        train(compose("train", overrides(tmp_path / "notes.txt")))
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_an_out_of_another_command_is_refused_and_unchanged(tmp_path):
    from llv.config import to_yaml
    from llv.console import LlvError

    surface_run = tmp_path / "surface_run"
    surface_run.mkdir()
    config = to_yaml(compose("surface", [f"outputs={tmp_path / 'outputs'}"]))
    (surface_run / "config.yaml").write_text(config)
    for extra in ([], ["train.resume=true"]):
        with pytest.raises(LlvError, match=r"surface_run holds a `llv surface` run: pass another"):
            train(compose("train", overrides(surface_run, *extra)))
    assert (surface_run / "config.yaml").read_text() == config
    assert sorted(os.listdir(surface_run)) == [".llv.lock", "config.yaml"]


def test_ctrl_c_in_process_says_how_to_continue_and_releases_the_lock(tmp_path, monkeypatch,
                                                                     capsys, caplog):
    import llv.training
    from llv.runlock import RunLock

    real_epoch, calls = llv.training.train_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(llv.training, "train_epoch", interrupted_in_epoch_2)
    monkeypatch.setattr(sys, "argv", ["llv", "train", *overrides(tmp_path / "run")])
    with pytest.raises(KeyboardInterrupt):
        train(compose("train", overrides(tmp_path / "run")))
    err = " ".join(capsys.readouterr().err.split())
    assert "Ctrl-C stopped training in epoch 2 of 3; the checkpoints up to epoch 1 are saved" \
        in caplog.text
    kept = [a for a in overrides(tmp_path / "run") if not a.startswith("out=")]
    command = shlex.join(["llv", "train", *kept, "train.resume=true", f"out={tmp_path / 'run'}"])
    assert f"llv: continue with: {command}" in err
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_000.pt", "epoch_001.pt"]
    with RunLock(tmp_path / "run", "next run"):  # released: a new writer gets it at once
        pass


def test_a_second_writer_is_refused_before_any_work(tmp_path):
    from test_runlock import start_holder

    from llv.console import LlvError

    run_dir = tmp_path / "run"
    holder = start_holder(run_dir, tmp_path)
    try:
        with pytest.raises(LlvError, match=f"^{run_dir} is being written by pid {holder.pid} "):
            train(compose("train", overrides(run_dir, "dataset.root=/nonexistent")))
        with pytest.raises(LlvError, match=f"being written by pid {holder.pid} "):
            train(compose("train", overrides(run_dir, "train.resume=true")))
    finally:
        holder.kill()
        holder.wait()
    assert os.listdir(run_dir) == [".llv.lock"]  # nothing written by the refused runs


@pytest.mark.slow  # two fresh llv processes and three epochs: about a minute on 2 loaded cores
def test_sigterm_saves_exits_143_and_prints_the_command_that_continues(short_run, tmp_path):
    run = tmp_path / "run"
    args = overrides(run)
    process = subprocess.Popen(cli("train", *args), stderr=subprocess.PIPE, text=True,
                               cwd=tmp_path)
    wait_for(run / "checkpoints" / "epoch_001.pt", process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "SIGTERM stopped training in epoch 2 of 3; the checkpoints up to epoch 1 are saved" \
        in " ".join(stderr.split())
    hints = [line for line in stderr.splitlines() if line.startswith("llv: continue with: ")]
    assert len(hints) == 1
    command = shlex.split(hints[0].removeprefix("llv: continue with: "))
    kept = [a for a in args if not a.startswith("out=")]
    assert command == ["llv", "train", *kept, "train.resume=true", f"out={run}"]
    assert not (run / "final.pt").exists()
    resumed = subprocess.run(cli(*command[1:]), capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(run, short_run)


KILL_DURING_CHECKPOINT_WRITE = """
import os, sys, time
from pathlib import Path
import llv.fsio as fsio
marker, real_fsync = Path(sys.argv[1]), fsio._fsync_path
def stall(path):
    if ".epoch_002.pt.llv-tmp-" in path.name:
        os.truncate(path, path.stat().st_size // 2)  # half of the checkpoint is on disk
        marker.write_text(path.name)
        time.sleep(600)  # killed here
    real_fsync(path)
fsio._fsync_path = stall
sys.argv = ["llv", *sys.argv[2:]]
from llv.cli import main
main()
"""


@pytest.mark.slow  # two fresh llv processes and three epochs: about a minute on 2 loaded cores
def test_kill_9_during_a_checkpoint_write_then_resume_is_bit_identical(short_run, tmp_path):
    run = tmp_path / "run"
    marker = tmp_path / "writing"
    process = subprocess.Popen([sys.executable, "-c", KILL_DURING_CHECKPOINT_WRITE, str(marker),
                                "train", *overrides(run)], stderr=subprocess.PIPE, text=True)
    wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    temporary = run / "checkpoints" / marker.read_text()
    assert temporary.is_file() and not (run / "checkpoints" / "epoch_002.pt").exists()
    assert [int(r[0]) for r in read_metrics(run)[1:]] == [0, 1, 2]  # epoch 2's row came first
    resumed = subprocess.run(cli("train", *overrides(run), "train.resume=true"),
                             capture_output=True, text=True, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"removed {temporary}" in " ".join(resumed.stderr.split())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        f"epoch_{e:03d}.pt" for e in range(4)]  # the stale temporary is gone
    assert_same_run(run, short_run)


@pytest.mark.slow  # kept out of `make test` for its 10-minute budget
def test_full_disk_while_writing_checkpoints_is_one_line_and_exit_2(tmp_path):
    from test_fsio import mount_tmpfs, unmount

    disk = mount_tmpfs(tmp_path / "disk")  # 1 MiB: epoch 0's checkpoint fits, epoch 1's not
    try:
        result = subprocess.run(cli("train", *overrides(disk / "run")), capture_output=True,
                                text=True, cwd=tmp_path)
        assert result.returncode == 2
        lines = [line for line in result.stderr.splitlines() if line.startswith("llv: error:")]
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert lines[0].startswith(f"llv: error: cannot write checkpoint {disk / 'run'}/checkpoints/")
        assert "No space left on device" in lines[0] and "free of 1.0 MiB" in lines[0]
        names = [p.name for p in (disk / "run").rglob("*")]
        assert not any(".llv-tmp-" in n for n in names)
        assert "epoch_000.pt" in names  # the complete checkpoints stay
    finally:
        unmount(disk)
