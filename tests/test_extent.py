"""Automatic extent (``llv.extent``): on a quadratic loss the chosen range is the closed-form
root of loss(α) = level on each side, to the search tolerance."""

import math

import numpy as np
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
    assert [float(v) for v in record["auto_x"].split(":")] == list(found.x)  # to the bit
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


# ------------------------------------------------------------- grid.x=auto: API and command line


def test_surface_with_auto_axes_spans_the_closed_form_range(quadratic):
    """``llv.surface(x="auto:N")`` runs the search first: each side its own crossing
    (symmetric=False), or ± the larger one (default, the centre a grid point)."""
    model, data, directions, coefficients = quadratic
    centre = coefficients(0)[2]
    options = {"rise": 2.0, "tol": 1e-5}
    own = llv.surface(model, data, x="auto:5", y="auto:7", directions=directions, loss="mse",
                      precision="fp64", progress=False, fold=False, auto={**options, "symmetric": False})
    for axis, values in ((0, own.x), (1, own.y)):
        low, high = _roots(*coefficients(axis), 2.0 * centre)
        assert abs(values[0] - low) <= 1e-5 and abs(values[-1] - high) <= 1e-5
    assert own.x.shape == (5,) and own.y.shape == (7,)
    assert own.attrs["auto_rise"] == 2.0 and not own.attrs["auto_symmetric"]
    along_x = llv.directions(model, "random", ndim=1, seed=1, norm="filter", ignore="none")
    both = llv.surface(model, data, x="auto:5", y=None, directions=along_x, loss="mse", precision="fp64",
                       progress=False, fold=False, auto=options)
    assert both.x[0] == -both.x[-1] and both.x[2] == 0.0
    # the end on the side of the larger crossing is at the level, the other beyond it
    ends = sorted([both["train_loss"][0], both["train_loss"][-1]])
    assert ends[0] == pytest.approx(2.0 * centre, rel=1e-3) and ends[1] > 2.0 * centre


def _run(command, overrides):
    from llv.config import compose
    from llv.tasks import hessian as hessian_task
    from llv.tasks import surface as surface_task

    cfg = compose(command, overrides)
    return {"surface": surface_task, "hessian": hessian_task}[command].run(cfg)


def _read(path):
    import h5py

    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}, dict(f.attrs)


def test_cli_auto_grid_is_stored_repeatable_and_resumable(tiny, capfd):
    """``grid.x=auto grid.y=auto:5``: the chosen range is stored (``auto_x``) and printed as
    overrides that repeat the run to the bit; a stopped run resumes over the same range."""
    import numpy as np

    overrides, _ = tiny
    auto = [*overrides, "grid.x=auto:7", "grid.y=auto:5", "grid.auto_rise=1.5", "eval.chunk_points=4"]
    path = _run("surface", [*auto, "name=auto"])
    values, attrs = _read(path)
    assert values["xcoordinates"].shape == (7,) and values["ycoordinates"].shape == (5,)
    assert values["xcoordinates"][3] == 0.0 and values["ycoordinates"][2] == 0.0  # symmetric
    low, high = (float(v) for v in attrs["auto_x"].split(":"))
    assert values["xcoordinates"][-1] == max(-low, high)
    assert attrs["auto_rise"] == 1.5 and attrs["auto_level"] == pytest.approx(1.5 * attrs["auto_centre_loss"])
    printed = capfd.readouterr().err
    fixed = printed.split("to repeat this grid exactly: ", 1)[1].split("\n")[0].split()
    assert fixed[0].startswith("grid.x=") and fixed[1].startswith("grid.y=")
    again, _ = _read(_run("surface", [*overrides, *fixed, "name=fixed", f"dir_file={attrs['dir_file']}"]))
    np.testing.assert_array_equal(again["xcoordinates"], values["xcoordinates"])
    np.testing.assert_array_equal(again["train_loss"], values["train_loss"])
    part = _run("surface", [*auto, "name=part", f"dir_file={attrs['dir_file']}", "stop_after_points=9"])
    assert _read(part)[0]["done"].sum() == 9
    resumed = _run("surface", [f"resume={part}"])
    done, resumed_attrs = _read(resumed)
    assert done["done"].all() and resumed_attrs["auto_x"] == attrs["auto_x"]
    np.testing.assert_array_equal(done["train_loss"], values["train_loss"])


def test_cli_auto_hessian_map_and_refusals(tiny):
    from llv.config import compose
    from llv.console import LlvError
    from llv.tasks import interpolate as interpolate_task

    overrides, checkpoint = tiny
    path = _run("hessian", [*overrides, "grid.x=auto:3", "grid.y=null", "grid.auto_add=0.5",
                            "hessian.max_samples=16"])
    values, attrs = _read(path)
    assert values["xcoordinates"][1] == 0.0 and attrs["auto_add"] == 0.5
    assert np.isfinite(values["max_eig"]).all()
    for bad, needle in (("grid.x=auto:1", "at least 2 points"), ("grid.auto_rise=1", "grid.auto_rise"),
                        ("grid.x=automatic", "grid.x")):
        with pytest.raises(LlvError, match=needle):
            compose("surface", [*overrides, bad])
    with pytest.raises(LlvError, match="range of α is set by the two models"):
        interpolate_task.run(compose("interpolate", [*overrides, f"checkpoint2={checkpoint}", "grid.x=auto"]))
