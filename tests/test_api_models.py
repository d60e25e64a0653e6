"""Ordinary models work with the default options: models that flatten with ``.view``, float64
models, and half-precision ones are refused with what to do."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llv
from llv.api import as_split_batches, channels_last_rule, point_metrics
from llv.errors import LlvError


class ViewFlatten(nn.Module):
    """conv → ReLU → ``.view(N, -1)`` → linear: ``.view`` needs NCHW-contiguous activations."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        h = F.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


def test_a_model_that_flattens_with_view_runs_in_nchw_under_auto():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = ViewFlatten()
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 5, (8,), generator=g)
    s = llv.surface(model, (x, y), x=(-1, 1, 3), y=None, progress=False)
    with torch.no_grad():
        assert float(s["train_loss"][1]) == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-6)
    with pytest.raises(RuntimeError, match="view"):  # asked for explicitly: the model's own error
        llv.surface(model, (x, y), x=(-1, 1, 3), y=None, progress=False, channels_last=True)
    assert channels_last_rule("auto", as_split_batches((x, y), device="cpu"), "cpu") is True


def test_a_float64_model_is_evaluated_in_float64():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64, generator=g), torch.randint(0, 3, (16,), generator=g)
    with torch.no_grad():
        want = float(F.cross_entropy(model(x), y))
    s = llv.surface(model, (x, y), x=(-1, 1, 3), y=None, progress=False)
    assert s.attrs["precision"] == "fp64"
    assert float(s["train_loss"][1]) == pytest.approx(want, rel=1e-13)
    assert point_metrics(model, (x, y))["train_loss"] == pytest.approx(want, rel=1e-13)
    ends = llv.interpolate(model, model, (x, y), alphas=(0, 1, 2), progress=False)
    assert float(ends["train_loss"][0]) == pytest.approx(want, rel=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_refused_with_what_to_do(dtype):
    model = nn.Linear(4, 3).to(dtype)
    x, y = torch.randn(8, 4, dtype=dtype), torch.randint(0, 3, (8,))
    with pytest.raises(LlvError, match=r"pass model.float\(\)"):
        llv.surface(model, (x, y), x=(-1, 1, 3), y=None, progress=False)


def test_an_error_in_the_users_loss_keeps_its_type_and_traceback(tmp_path):
    model = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

    def weighted(outputs, batch):
        return batch_weights * outputs.sum(-1)  # noqa: F821 - the user's bug

    with pytest.raises(NameError, match="batch_weights") as raised:
        llv.surface(model, (x, y), x=(-1, 1, 3), y=None, loss=weighted, progress=False,
                    path=tmp_path / "s.h5")
    assert raised.traceback[-1].name == "weighted"  # the traceback ends in the user's code


def test_trajectory_input_mistakes_are_one_line(tmp_path):
    model = nn.Linear(2, 2)
    with pytest.raises(LlvError, match="runs/typo is not a run directory"):
        llv.trajectory("runs/typo", model)
    with pytest.raises(LlvError, match="torch.save state dicts first"):
        llv.trajectory([model.state_dict(), model.state_dict()], model)
    paths = []
    for k in range(3):
        torch.manual_seed(k)
        paths.append(tmp_path / f"{k}.pt")
        torch.save(nn.Linear(2, 2).state_dict(), paths[-1])
    projection, _ = llv.trajectory(paths, model)
    assert hasattr(projection, "save") and hasattr(projection, "plot")  # llv.results.Projection


def test_argument_mistakes_are_one_line_before_any_work():
    from torch.utils.data import DataLoader, TensorDataset

    model = nn.Linear(4, 3)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    grid = dict(x=(-1, 1, 3), y=None, progress=False)
    cases = [
        (dict(data=(x, y), ensemble=0), "ensemble must be a whole number of at least 1, got 0"),
        (dict(data=(x, y), seed=-1), "seed must be a whole number of at least 0, got -1"),
        (dict(data=(x, y), seed=1.5), "seed must be a whole number"),
        (dict(data=(x, y), directions=5), "directions must be llv.Directions"),
        (dict(data=(x, y[:10])), r"one target per input along dim 0: got inputs \(32, 4\) and targets \(10,\)"),
        (dict(data=DataLoader(TensorDataset(x, y), batch_size=None)), "batch_size=None yields single examples"),
    ]
    for kwargs, said in cases:
        with pytest.raises(LlvError, match=said):
            llv.surface(model, **kwargs, **grid)
    with pytest.raises(LlvError, match=r"other model's weight is \(5, 4\), this model's \(3, 4\)"):
        llv.interpolate(model, nn.Linear(4, 5), (x, y), alphas=(0, 1, 3), progress=False)
    # a NumPy (X, y) pair is data like a tensor pair
    as_numpy = llv.surface(model, (x.numpy(), y.numpy()), **grid)["train_loss"]
    assert (as_numpy == llv.surface(model, (x, y), **grid)["train_loss"]).all()


def test_a_run_too_small_to_compile_says_why_only_at_debug_level(monkeypatch):
    import logging
    import types

    from llv import console
    from llv.api import _compile_attrs
    from llv.console import log

    monkeypatch.setitem(console._state, "quiet", False)  # whatever earlier tests left
    monkeypatch.setitem(console._state, "rank", 0)

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.DEBUG)
    try:
        skipped = types.SimpleNamespace(compiled=False, compile_seconds=0.0, reason="would save about 0 s")
        tried = types.SimpleNamespace(compiled=True, compile_seconds=21.0, reason="compiled in 21 s")
        assert _compile_attrs(skipped)["compile_reason"] == "would save about 0 s"  # kept in the file
        _compile_attrs(tried)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    levels = {r.getMessage(): r.levelno for r in records}
    assert levels == {"compile: would save about 0 s": logging.DEBUG, "compile: compiled in 21 s": logging.INFO}
