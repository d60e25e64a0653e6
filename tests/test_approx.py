"""The certified fast mode (eval.approx): within its standard errors of the exact surface, capped
at the split, and the same numbers however the grid is chunked, resumed or sharded."""

import numpy as np
import pytest
import torch
from torch import nn

import llv
from llv.evaluate import subset_mean_and_se


def problem(n=3000):
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    inputs = torch.randn(n, 6, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(2))
    return model, (inputs, targets)


def test_the_finite_population_correction_is_zero_for_the_whole_split():
    values = np.random.default_rng(0).normal(size=50)
    mean, se = subset_mean_and_se(values.sum(), (values**2).sum(), 50, 50)
    assert mean == pytest.approx(values.mean()) and se == 0.0


def test_the_squared_standard_error_is_unbiased_over_every_subset():
    # all 56 subsets of 3 from a population of 8: the mean of se² is the subset mean's variance
    import itertools

    population = np.random.default_rng(0).normal(size=8)
    means, squared = [], []
    for subset in itertools.combinations(population, 3):
        values = np.array(subset)
        mean, se = subset_mean_and_se(values.sum(), (values**2).sum(), 3, 8)
        means.append(mean)
        squared.append(se**2)
    assert np.mean(squared) == pytest.approx(np.var(means), rel=1e-12)


def test_approximate_surface_is_within_its_standard_errors_of_the_exact_one():
    model, data = problem()
    grid = dict(x=(-2, 2, 9), y=(-2, 2, 9), loss="mse", progress=False)
    exact = llv.surface(model, data, **grid)
    fast = llv.surface(model, data, approx=True, target_se=0.01, **grid)
    loss, se, n = fast["train_loss"], fast["train_loss_se"], fast["train_n"]
    span = exact["train_loss"].max() - exact["train_loss"].min()
    assert fast.attrs["approx"] and fast.attrs["approx_scale"] > 0
    assert np.all((n >= 128) & (n <= 3000))
    assert n.mean() < 3000  # subsets were enough somewhere
    assert np.all(se <= 0.01 * fast.attrs["approx_scale"] + 1e-12)
    # the summary says the surface is approximate, with its largest standard error
    assert fast.summary["train_approximate_max_loss_se"] == pytest.approx(se.max())
    assert fast.summary["train_approximate_mean_examples"] == pytest.approx(n.mean())
    assert not any("approximate" in key for key in exact.summary)
    rounding = 1e-7 * np.abs(exact["train_loss"])  # float32 sums in another order
    within = np.abs(loss - exact["train_loss"]) <= 3 * se + rounding
    assert within.mean() >= 0.95
    whole = n == 3000
    np.testing.assert_allclose(loss[whole], exact["train_loss"][whole], rtol=1e-7)
    assert np.abs(loss - exact["train_loss"]).max() <= 0.05 * span
    assert np.all(se[n == 3000] == 0)  # the whole split: exact
    assert "train_acc_se" in fast.values


def test_the_range_is_estimated_on_subsets_of_the_centre_and_corners():
    """The scale of target_se is the range over the centre and corners, found on growing subsets
    (within 10 % of the exact range here, for under two passes where exact pilots cost five);
    the corners are then grid points like any other, continuing those subsets under the grid's
    own stopping rule."""
    model, data = problem()
    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape[0]))
    grid = dict(x=(-2, 2, 5), y=(-2, 2, 5), loss="mse", progress=False)
    fast = llv.surface(model, data, approx=True, target_se=0.005, fold=False, compile="off", **grid)
    hook.remove()
    exact = llv.surface(model, data, **grid)["train_loss"]
    pilots = [exact[0, 0], exact[0, 4], exact[4, 0], exact[4, 4], exact[2, 2]]
    exact_range = max(pilots) - min(pilots)
    assert fast.attrs["approx_scale"] == pytest.approx(exact_range, rel=0.1)
    spent = fast.attrs["approx_pilot_examples"]
    assert 5 * 128 <= spent < 2 * 3000  # all five together: under two passes (exact pilots: five)
    n = fast["train_n"]
    corners = [n[0, 0], n[0, 4], n[4, 0], n[4, 4], n[2, 2]]
    # the grid continues the pilots' subsets: no example is forwarded twice at one point, so
    # the forwards are the grid's n plus what the pilots used beyond the grid's need
    assert n.sum() + spent - sum(corners) <= sum(seen) < n.sum() + spent
    se = fast["train_loss_se"]
    assert np.all(se <= 0.005 * fast.attrs["approx_scale"] + 1e-12)
    assert fast["train_n"][0, 4] < 3000 and se[0, 4] > 0  # a corner on a subset, like its neighbours


def test_the_pilot_rounds_go_on_while_the_range_shrinks():
    """A first stage that overstates the range (a few wild examples) is corrected: the next round
    is held to the range it found, and so on until the range settles."""
    from llv.api import _Pilots
    from llv.evaluate import Approximation
    from llv.grid import GridSpec

    class Losses:
        """Pilot losses by round: the range shrinks 10 → 4 → 3.5, then holds."""
        def __init__(self):
            self.rounds = iter([[0, 10, 1, 1, 1], [0, 4, 1, 1, 1], [0, 3.5, 1, 1, 1]])
            self.used = iter([128.0, 512.0, 256.0])  # examples per pilot in each round
            self.approx = Approximation(target_se=0.01)
            self.scales = []

        def evaluate(self, rows):
            self.scales.append(self.approx.scale)
            losses = torch.tensor(next(self.rounds), dtype=torch.float64)
            return {"train_loss": losses, "train_n": torch.full((5,), next(self.used), dtype=torch.float64)}

    fake = Losses()
    pilots = _Pilots(fake, GridSpec.of((-1, 1, 3), (-1, 1, 3)), 2)
    assert pilots.scale("train_loss") == 3.5
    assert fake.scales == [float("inf"), 10, 4]  # 4 < 10 / 2: once more; 3.5 ≥ 4 / 2: settled
    assert pilots.examples == 5 * 512  # a round continues the last one's subsets: the most counts
    assert fake.approx.scale is None and fake.approx.target_se == 0.01  # restored


def test_relative_tolerance_tightens_the_basin():
    model, data = problem()
    grid = dict(x=(-2, 2, 5), y=None, loss="mse", progress=False, approx=True, target_se=0.05)
    loose = llv.surface(model, data, **grid)
    tight = llv.surface(model, data, approx_rel_tol=0.002, **grid)
    assert np.all(tight["train_loss_se"] <= 0.002 * tight["train_loss"] + 1e-12)
    assert tight["train_n"].sum() >= loose["train_n"].sum()


def test_resumed_and_rechunked_runs_give_the_same_numbers(tmp_path):
    model, data = problem()
    grid = dict(x=(-2, 2, 6), y=(-1, 1, 3), loss="mse", progress=False, approx=True, target_se=0.02)
    # corners 0 and 5 come before the stop, 12 and 17 after it: the resumed process reads the
    # range from the file and evaluates them afresh, where the others continued the pilots'
    # subsets (Approximation.remember); the numbers must not tell the difference
    whole = llv.surface(model, data, chunk_points=64, **grid)
    llv.surface(model, data, path=tmp_path / "s.h5", chunk_points=4, stop_after=7, **grid)
    resumed = llv.surface(model, data, path=tmp_path / "s.h5", chunk_points=5, **grid)
    for name in ("train_loss", "train_loss_se", "train_n", "train_acc"):
        np.testing.assert_array_equal(resumed[name], whole[name])
    for key in ("approx_scale", "approx_pilot_examples"):  # read back, not estimated again
        assert resumed.attrs[key] == whole.attrs[key]


def test_recomputed_batchnorm_statistics_are_estimated_once_per_point(tmp_path, monkeypatch):
    """bn=recompute: a pilot's statistics are kept for its later rounds and its grid point (one
    re-estimate per point, as without pilots); a resumed run, which re-estimates them afresh,
    gives the same bits."""
    from llv.evaluate import PointEvaluator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    _, data = problem()
    calls = []
    recompute = PointEvaluator.recompute_bn
    monkeypatch.setattr(PointEvaluator, "recompute_bn", lambda self, point: calls.append(1) or recompute(self, point))
    grid = dict(x=(-1, 1, 3), y=(-1, 1, 3), loss="ce", progress=False, approx=True, target_se=0.01,
                bn="recompute", compile="off")
    whole = llv.surface(model, data, **grid)
    assert len(calls) == 9  # the 5 pilots (all grid points here) and the 4 other points, once each
    llv.surface(model, data, path=tmp_path / "s.h5", stop_after=4, **grid)
    resumed = llv.surface(model, data, path=tmp_path / "s.h5", **grid)
    for name in ("train_loss", "train_loss_se", "train_n", "train_acc"):
        np.testing.assert_array_equal(resumed[name], whole[name])
