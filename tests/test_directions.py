"""Directions: every normalization of SPEC §3, seeds, orthogonalization, both file layouts, ensembles."""

import h5py
import numpy as np
import pytest
import torch
from nets import TinyConvBN

from llv import direction as dirs
from llv.config import compose
from llv.params import ParameterSpace
from llv.tasks import surface as surface_task


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TinyConvBN(width=4)


def made(model, norm, ignore="biasbn", type="weights"):
    space = ParameterSpace.of(model, type)
    values = space.values(model)
    raw = dirs.random_direction(space, dirs.axis_seed(0, 0))
    return space, values, raw, dirs.normalize(raw, values, norm, ignore)


def test_filter_norm_equals_each_weight_filters_norm(model):
    space, values, _, d = made(model, "filter")
    for w, t in zip(values, d):
        if w.dim() > 1:
            for i in range(w.shape[0]):
                assert float(t[i].norm()) == pytest.approx(float(w[i].norm()), rel=1e-6)


@pytest.mark.parametrize("norm", dirs.NORMALIZATIONS)
def test_biasbn_zeroes_one_dimensional_tensors_and_none_copies_theta(model, norm):
    for ignore in ("biasbn", "none"):
        space, values, _, d = made(model, norm, ignore)
        for w, t in zip(values, d):
            if w.dim() <= 1:
                expected = torch.zeros_like(w) if ignore == "biasbn" else w
                assert torch.equal(t, expected)


def test_layer_weight_dfilter_dlayer_none(model):
    multi = lambda space, values, d: [(w, t) for w, t in zip(values, d) if w.dim() > 1]  # noqa: E731
    space, values, raw, d = made(model, "layer")
    for w, t in multi(space, values, d):
        assert float(t.norm()) == pytest.approx(float(w.norm()), rel=1e-6)
    space, values, raw, d = made(model, "weight")
    for w, r, t in zip(values, raw, d):
        if w.dim() > 1:
            assert torch.allclose(t, r * w)
    space, values, raw, d = made(model, "dfilter")
    for w, t in multi(space, values, d):
        assert torch.allclose(t.flatten(1).norm(dim=1), torch.ones(w.shape[0]), rtol=1e-6)
    space, values, raw, d = made(model, "dlayer")
    for _, t in multi(space, values, d):
        assert float(t.norm()) == pytest.approx(1.0, rel=1e-6)
    space, values, raw, d = made(model, "none")
    for w, r, t in zip(values, raw, d):
        if w.dim() > 1:
            assert torch.equal(t, r)


def test_seeded_streams_are_reproducible_and_independent(model):
    space = ParameterSpace.of(model)
    values = space.values(model)
    a = dirs.make_random(space, values, 2, seed=3)
    b = dirs.make_random(space, values, 2, seed=3)
    assert a.digest() == b.digest()
    fx, fy = a.flat()
    cosine = float(fx @ fy / (fx.norm() * fy.norm()))
    assert abs(cosine) < 0.5 and not torch.equal(fx, fy)
    assert dirs.make_random(space, values, 2, seed=4).digest() != a.digest()
    ortho = dirs.make_random(space, values, 2, seed=3, orthogonal=True).flat().double()
    assert abs(float(ortho[0] @ ortho[1])) < 1e-8 * float(ortho[0].norm() * ortho[1].norm())


def test_states_directions_follow_the_state_dict_order(model):
    space = ParameterSpace.of(model, "states")
    assert space.names == list(model.state_dict().keys())
    assert "bn.running_mean" in space.perturbed and "bn.num_batches_tracked" not in space.perturbed


def test_file_round_trip_and_reference_layout(model, tmp_path):
    space = ParameterSpace.of(model)
    values = space.values(model)
    d = dirs.make_random(space, values, 2, seed=1)
    path = dirs.save(d, tmp_path / "d.h5")
    with h5py.File(path, "r") as f:  # what the reference implementation reads
        assert sorted(f["xdirection"].keys(), key=int) == [str(i) for i in range(len(space.names))]
        assert f["ydirection"]["0"].shape == tuple(space.shapes[0])
        assert f.attrs["norm"] == "filter" and f.attrs["kind"] == "random"
    back = dirs.load(path, space)
    assert back.digest() == d.digest()
    # a hand-made file in the reference's layout: no attrs, datasets "0", "1", ...
    reference = tmp_path / "ref.h5"
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(tuple(s)).astype(np.float32) for s in space.shapes]
    with h5py.File(reference, "w") as f:
        group = f.create_group("xdirection")
        for i, a in enumerate(arrays):
            group.create_dataset(str(i), data=a)
    loaded = dirs.load(reference, space)
    assert loaded.ndim == 1 and all(np.array_equal(t.numpy(), a) for t, a in zip(loaded.axes[0], arrays))


def test_wrong_direction_file_is_one_clear_error(model, tmp_path):
    from llv.console import LlvError

    d = dirs.make_random(ParameterSpace.of(model, "states"), ParameterSpace.of(model, "states").values(model), 1)
    path = dirs.save(d, tmp_path / "states.h5")
    with pytest.raises(LlvError, match="direction.type=states"):
        dirs.load(path, ParameterSpace.of(model, "weights"))
    with pytest.raises(LlvError, match="only an x direction"):
        dirs.load(path, ParameterSpace.of(model, "states"), ndim=2)


@pytest.mark.slow  # kept out of `make test` for its 10-minute budget
def test_ensemble_equals_separate_runs_with_the_matching_seeds(tiny):
    overrides, _ = tiny
    cfg = compose("surface", [*overrides, "grid.x=-1:1:5", "grid.y=-1:1:3", "direction.ensemble=3",
                              "direction.seed=7", "eval.points_per_batch=4"])
    with h5py.File(surface_task.run(cfg), "r") as f:
        ensemble, attrs = f["train_loss"][()], dict(f.attrs)
    assert ensemble.shape == (3, 3, 5) and attrs["ensemble"] == 3
    for k in range(3):
        single = compose("surface", [*overrides, "grid.x=-1:1:5", "grid.y=-1:1:3", f"direction.seed={7 + k}",
                                     f"name=seed{k}"])
        with h5py.File(surface_task.run(single), "r") as f:
            np.testing.assert_allclose(ensemble[k], f["train_loss"][()], rtol=1e-6)
    assert "train_curvature_x_std" in "".join(attrs)
