"""Shared fixtures: a tiny model + checkpoint on tiny synthetic data, and config helpers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # so Hydra finds nets.TinyConvBN


def pytest_configure(config):
    """One intra-op thread: tests use tiny tensors, and on a shared 2-core machine a second
    spinning thread per process slows everything down many times over."""
    import torch

    torch.set_num_threads(1)

TINY_DATA = ["dataset=synthetic", "dataset.in_channels=1", "dataset.image_size=4",
             "dataset.num_classes=3", "dataset.num_train=40", "dataset.num_test=24"]


def tiny_overrides(tmp_path: Path, net: str = "TinyConvBN") -> list[str]:
    """Overrides for a custom tiny net on tiny synthetic data, outputs under tmp_path."""
    return ["model=custom", f"model.module._target_=nets.{net}", "+model.module.in_channels=1",
            "+model.module.image_size=4", "model.module.num_classes=3", *TINY_DATA,
            f"outputs={tmp_path / 'outputs'}", "device=cpu", "dist=none", "plot=false", "eval.batch_size=16"]


def save_tiny_checkpoint(tmp_path: Path, net: str = "TinyConvBN", seed: int = 0, name: str = "tiny.pt",
                         scale: float = 1.0) -> Path:
    """A checkpoint of a freshly initialised tiny net (weights scaled by ``scale``)."""
    import torch

    from llv.checkpoint import save_checkpoint
    from llv.config import compose
    from llv.models import build_model

    cfg = compose("surface", tiny_overrides(tmp_path, net))
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    return save_checkpoint(tmp_path / name, model, 0, cfg, {})


@pytest.fixture
def tiny(tmp_path):
    """(overrides with checkpoint=..., checkpoint path) for the conv+BN tiny net."""
    path = save_tiny_checkpoint(tmp_path)
    return [*tiny_overrides(tmp_path), f"checkpoint={path}"], path


@pytest.fixture
def run(capsys, monkeypatch):
    """``llv ARGS`` in this process, as a subprocess would run it, at a fraction of the cost:
    a ``CompletedProcess`` (returncode, stdout, stderr)."""
    import subprocess

    from llv import cli, console

    def invoke(*args, env=None):
        state, level = dict(console._state), console.log.level  # -q must not outlive the call
        with monkeypatch.context() as patch:
            for key, value in (env or {}).items():
                patch.setenv(key, value)
            code = 0
            try:
                cli.main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            finally:
                console._state.update(state)
                console.log.setLevel(level)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return invoke


def llv_in_process(*args, capfd=None) -> tuple[int, str]:
    """``llv ARGS`` through typer's test runner: (exit status, everything it printed)."""
    from typer.testing import CliRunner

    from llv.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    printed = result.output
    if capfd is not None:
        captured = capfd.readouterr()
        printed += captured.out + captured.err
    return result.exit_code, printed
