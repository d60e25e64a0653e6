"""Losses never broadcast into wrong numbers: float targets must match the outputs, a user's loss
must give one value per example, and torch's loss modules are refused with the signature to use."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llv
from llv.errors import LlvError
from llv.losses import per_example_loss


class Squeezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x):
        return self.linear(x).squeeze(1)


def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5])


def at_centre(model, data, **kwargs):
    return float(llv.surface(model, data, x=(0, 0, 1), y=None, progress=False, **kwargs)["train_loss"][0])


def test_mse_takes_one_value_per_example_as_b_or_b_by_1_on_either_side():
    x, y = regression()
    torch.manual_seed(1)
    column = nn.Linear(3, 1)
    squeezed = Squeezed()
    squeezed.linear.load_state_dict(column.state_dict())
    with torch.no_grad():
        want = float(F.mse_loss(column(x).squeeze(1), y))
    for model in (column, squeezed):
        for targets in (y, y[:, None]):
            assert at_centre(model, (x, targets), loss="mse") == pytest.approx(want, rel=1e-6)
    assert llv.hessian(column, (x, y), loss="mse").loss() == pytest.approx(want, rel=1e-6)
    # several points in one vmapped pass: outputs (k, B) and (k, B, 1) take the same rule
    with torch.no_grad():
        stacked = per_example_loss(torch.stack([squeezed(x), squeezed(x)]), y, "mse")
    assert stacked.shape == (2, 32)
    assert float(stacked[1].mean()) == pytest.approx(want, rel=1e-6)


def test_mse_with_outputs_that_do_not_match_the_targets_is_one_line():
    x, y = regression()
    with pytest.raises(LlvError, match=r"outputs \(32, 1\) do not match the float targets \(32, 2\)"):
        at_centre(nn.Linear(3, 1), (x, torch.randn(32, 2)), loss="mse")
    with pytest.raises(LlvError, match="do not match"):
        llv.hessian(nn.Linear(3, 2), (x, y), loss="mse").loss()
    # class targets: one-hot over the outputs' classes, as before
    assert per_example_loss(torch.zeros(1, 2), torch.tensor([0]), "mse").tolist() == [0.5]


def test_a_user_loss_must_give_one_value_per_example():
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(64, 5, generator=g), torch.randn(64, 2, generator=g)
    model = nn.Linear(5, 2)
    per_example = lambda outputs, batch: F.mse_loss(outputs, batch[1], reduction="none").mean(-1)  # noqa: E731
    with torch.no_grad():
        want = float(F.mse_loss(model(x), t))
    assert at_centre(model, (x, t), loss=per_example, batch_size=16) == pytest.approx(want, rel=1e-6)
    assert llv.hessian(model, (x, t), loss=per_example).loss() == pytest.approx(want, rel=1e-6)
    batch_mean = lambda outputs, batch: F.mse_loss(outputs, batch[1])  # noqa: E731
    too_short = lambda outputs, batch: per_example(outputs, batch)[:3]  # noqa: E731
    for wrong, said in ((batch_mean, r"returned shape \(\) \(use reduction='none'\)"),
                        (too_short, r"shape \(16,\), for a batch of 16; it returned shape \(3,\)")):
        with pytest.raises(LlvError, match=said):
            at_centre(model, (x, t), loss=wrong, batch_size=16)
        with pytest.raises(LlvError, match="one value per example"):
            llv.hessian(model, (x, t), loss=wrong).loss()
    with pytest.raises(LlvError, match="one value per example"):
        at_centre(model, (x, t), loss=per_example, accuracy=batch_mean, batch_size=16)


def test_torch_loss_modules_are_refused_with_the_signature_to_use():
    x, y = regression()
    with pytest.raises(LlvError, match=r"loss=MSELoss\(\): .*loss\(outputs, batch\)"):
        at_centre(nn.Linear(3, 1), (x, y), loss=nn.MSELoss())
