"""Automatic extent (``llv.extent``): on a quadratic loss the chosen range is the closed-form
root of loss(α) = level on each side, to the search tolerance."""

import math

import pytest
import torch
from torch import nn

import llv
from llv.auto_extent import search_side
from llv.errors import LlvError


@pytest.fixture(scope="module")
def quadratic():
    """A linear model with mse: along a direction d, loss(α) = a·α² + b·α + c exactly, with
    a = mean(r₁²), b = 2·mean(r₀·r₁), c = mean(r₀²) over examples and classes, where r₀ is the
    residual at θ and r₁ the change of the outputs along d."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    with torch.no_grad():  # near the least-squares fit: the loss rises on both sides
        augmented = torch.cat([x, torch.ones(32, 1)], 1).double()
        fit = torch.linalg.lstsq(augmented, nn.functional.one_hot(y, 3).double()).solution.T.float()
        model.weight.copy_(fit[:, :5] + 0.05 * model.weight)
        model.bias.copy_(fit[:, 5])
    directions = llv.directions(model, "random", ndim=2, seed=1, norm="filter", ignore="none")

    def coefficients(axis: int) -> tuple[float, float, float]:
        w, b = model.weight.detach().double(), model.bias.detach().double()
        dw, db = (t.double() for t in directions.axes[axis])
        r0 = x.double() @ w.T + b - nn.functional.one_hot(y, 3).double()
        r1 = x.double() @ dw.T + db
        return float((r1 ** 2).mean()), float(2 * (r0 * r1).mean()), float((r0 ** 2).mean())

    return model, (x, y), directions, coefficients


def _roots(a: float, b: float, c: float, level: float) -> tuple[float, float]:
    disc = math.sqrt(b * b - 4 * a * (c - level))
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("rise, add", [(2.0, None), (None, 0.05)])
def test_extent_is_the_closed_form_root(quadratic, rise, add):
    model, data, directions, coefficients = quadratic
    tol = 1e-4
    found = llv.extent(model, data, directions, rise=rise, add=add, tol=tol, loss="mse",
                       precision="fp64", progress=False)
    centre = coefficients(0)[2]
    assert found.centre_loss == pytest.approx(centre, rel=1e-9)
    level = rise * centre if add is None else centre + add
    assert found.level == pytest.approx(level, rel=1e-9)
    for axis in (0, 1):
        low, high = _roots(*coefficients(axis), level)
        assert low < 0 < high
        got_low, got_high = found.ranges[axis]
        assert abs(got_low - low) <= tol and abs(got_high - high) <= tol
        assert -got_low >= -low - 1e-12 and got_high >= high - 1e-12  # the range holds the rise
    assert found.capped == [(False, False), (False, False)]
    record = found.record()
    assert record["auto_x"] == f"{found.x[0]:.6g}:{found.x[1]:.6g}"
    x_axis, y_axis = found.grid(11)
    assert x_axis == (found.x[0], found.x[1], 11) and y_axis[:2] == found.y


def test_extent_capped_at_max_extent(quadratic):
    model, data, directions, coefficients = quadratic
    low, high = _roots(*coefficients(0), 2.0 * coefficients(0)[2])
    cap = 0.5 * min(-low, high)
    found = llv.extent(model, data, directions, rise=2.0, max_extent=cap, loss="mse", progress=False)
    assert found.ranges[0] == (-cap, cap) and found.capped[0] == (True, True)
    assert found.record()["auto_x_capped"] == "min,max"


def test_search_side_counts_a_nan_as_risen_and_refuses_a_level_below_the_centre(quadratic):
    alpha, capped, _ = search_side(lambda a: float("nan") if a > 0.7 else 0.0, 1.0, tol=1e-6)
    assert alpha == pytest.approx(0.7, abs=1e-6) and not capped
    model, data, directions, _ = quadratic
    with pytest.raises(LlvError, match="add="):
        llv.extent(model, data, directions, rise=0.5, loss="mse", progress=False)
