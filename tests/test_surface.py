"""The surface engine against brute force, closed forms, and the promises of SPEC §3–5."""

import copy

import h5py
import numpy as np
import pytest
import torch
from conftest import save_tiny_checkpoint, tiny_overrides

from llv import direction as dirs
from llv.checkpoint import load_into
from llv.config import compose
from llv.console import LlvError
from llv.data import load_eval_data
from llv.losses import per_example_loss as per_sample_loss
from llv.models import build_model
from llv.params import ParameterSpace
from llv.tasks import surface as surface_task


def run_surface(overrides):
    cfg = compose("surface", overrides)
    return surface_task.run(cfg), cfg


def read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}, dict(f.attrs)


def brute_force_loss(cfg, checkpoint, direction_file, alpha, beta, split="train"):
    """Deep-copy the model, set θ + αδ + βη by hand, loop over examples one batch at a time."""
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    model = copy.deepcopy(model).eval()
    space = ParameterSpace.of(model, cfg.direction.type)
    d = dirs.load(direction_file, space, 2)
    with torch.no_grad():
        state = model.state_dict()
        for name, dx, dy in zip(space.names, d.axes[0], d.axes[1]):
            if state[name].is_floating_point():
                state[name].copy_(state[name] + alpha * dx + beta * dy)
        data = load_eval_data(cfg.dataset, split, cfg.eval.max_samples, seed=cfg.seed)
        losses, correct = [], 0
        for x, y in zip(data.inputs.split(7), data.targets.split(7)):
            out = model(x)
            losses.append(per_sample_loss(out, y, cfg.loss).double())
            correct += int((out.argmax(1) == y).sum())
        losses = torch.cat(losses)
    return float(losses.mean()), 100.0 * correct / len(losses)


@pytest.mark.parametrize("points_per_batch", [1, 5])
def test_every_value_equals_brute_force(tiny, points_per_batch):
    overrides, checkpoint = tiny
    path, cfg = run_surface([*overrides, "grid.x=-1:1:5", "grid.y=-0.5:0.5:3", "eval.splits=[train,test]",
                             f"eval.points_per_batch={points_per_batch}", "eval.chunk_points=4"])
    values, attrs = read(path)
    assert values["train_loss"].shape == (3, 5) and values["done"].all()
    for iy, beta in enumerate(values["ycoordinates"]):
        for ix, alpha in enumerate(values["xcoordinates"]):
            for split in ("train", "test"):
                loss, acc = brute_force_loss(cfg, checkpoint, attrs["dir_file"], alpha, beta, split)
                assert values[f"{split}_loss"][iy, ix] == pytest.approx(loss, rel=1e-6)
                assert values[f"{split}_acc"][iy, ix] == pytest.approx(acc, abs=1e-9)


def test_batched_points_equal_point_by_point(tiny):
    overrides, _ = tiny
    one, _ = run_surface([*overrides, "grid=11x11", "name=one"])
    many, _ = run_surface([*overrides, "grid=11x11", "name=many", "eval.points_per_batch=8",
                           f"dir_file={read(one)[1]['dir_file']}"])
    np.testing.assert_allclose(read(many)[0]["train_loss"], read(one)[0]["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(read(many)[0]["train_acc"], read(one)[0]["train_acc"], rtol=1e-5)


def test_quadratic_loss_gives_the_closed_form_surface(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="TinyLinear")
    overrides = [*tiny_overrides(tmp_path, "TinyLinear"), f"checkpoint={checkpoint}", "loss=mse",
                 "grid.x=-2:2:9", "grid.y=-1:3:5", "direction.ignore=none", "eval.precision=fp64"]
    path, cfg = run_surface(overrides)
    values, attrs = read(path)
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    space = ParameterSpace.of(model)
    d = dirs.load(attrs["dir_file"], space, 2)
    data = load_eval_data(cfg.dataset, "train")
    x = torch.cat([data.inputs.flatten(1), torch.ones(len(data.targets), 1)], 1).double()
    y = torch.nn.functional.one_hot(data.targets, 3).double()

    def augmented(weight, bias):
        return torch.cat([weight, bias[:, None]], 1).double()

    w = augmented(model.fc.weight.detach(), model.fc.bias.detach())
    r, u, v = x @ w.T - y, x @ augmented(*d.axes[0]).T, x @ augmented(*d.axes[1]).T
    n = r.numel()  # mse: mean over examples and classes
    c = {"1": (r * r).sum(), "a": 2 * (r * u).sum(), "b": 2 * (r * v).sum(),
         "aa": (u * u).sum(), "ab": 2 * (u * v).sum(), "bb": (v * v).sum()}
    for iy, b in enumerate(values["ycoordinates"]):
        for ix, a in enumerate(values["xcoordinates"]):
            closed = float(c["1"] + a * c["a"] + b * c["b"] + a * a * c["aa"] + a * b * c["ab"] + b * b * c["bb"]) / n
            assert values["train_loss"][iy, ix] == pytest.approx(closed, rel=1e-9)


def test_theta_is_bit_identical_after_a_run(tiny):
    overrides, checkpoint = tiny
    cfg = compose("surface", [*overrides, "grid=11x11", "eval.points_per_batch=4"])
    from llv.tasks._grid import compute_surface
    from llv.tasks.session import start

    session = start(cfg, "surface.h5", checkpoint=checkpoint)
    before = {k: v.clone() for k, v in session.model.state_dict().items()}
    compute_surface(session, __import__("llv.config").config.GridSpec.from_cfg(cfg.grid))
    after = session.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_filter_normalization_is_scale_invariant_and_no_normalization_is_not(tmp_path):
    """Scaling a conv that feeds BN by 10 leaves the network and the filter-normalized plot as they were."""
    base = save_tiny_checkpoint(tmp_path, name="base.pt")
    state = torch.load(base, weights_only=False)
    scaled = copy.deepcopy(state)
    sd = scaled["state_dict"]
    sd["conv.weight"] *= 10
    sd["bn.running_mean"] *= 10
    sd["bn.running_var"] *= 100
    torch.save(scaled, tmp_path / "scaled.pt")
    results = {}
    for norm in ("filter", "none"):
        for name in ("base", "scaled"):
            path, _ = run_surface([*tiny_overrides(tmp_path), f"checkpoint={tmp_path / (name + '.pt')}",
                                   f"norm={norm}", "grid=11x11", f"name={norm}{name}", "eval.precision=fp64"])
            results[norm, name] = read(path)[0]["train_loss"]
    centre = results["filter", "base"][5, 5]
    assert results["filter", "scaled"][5, 5] == pytest.approx(centre, rel=1e-5)  # same function
    np.testing.assert_allclose(results["filter", "scaled"], results["filter", "base"], rtol=1e-5)
    assert np.abs(results["none", "scaled"] - results["none", "base"]).max() > 1e-3


def test_resume_after_k_points_equals_an_uninterrupted_run(tiny):
    overrides, _ = tiny
    full, _ = run_surface([*overrides, "grid=11x11", "name=full", "eval.chunk_points=8"])
    dir_file = read(full)[1]["dir_file"]
    partial, _ = run_surface([*overrides, "grid=11x11", "name=part", f"dir_file={dir_file}",
                              "stop_after_points=37", "eval.chunk_points=8"])
    values, _ = read(partial)
    assert values["done"].sum() == 37 and np.isnan(values["train_loss"][~values["done"]]).all()
    resumed, _ = run_surface([*overrides, "grid=11x11", f"resume={partial}", "eval.chunk_points=5"])
    assert resumed == partial
    a, b = read(full)[0], read(resumed)[0]
    assert b["done"].all()
    for key in ("train_loss", "train_acc", "train_loss_se"):
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(("change", "needle"), [
    ("grid=21x21", "grid"),
    ("eval.splits=[test]", "test_loss"),
])
def test_resume_refuses_a_file_for_another_run(tiny, change, needle):
    overrides, _ = tiny
    path, _ = run_surface([*overrides, "grid=11x11", "stop_after_points=3"])
    with pytest.raises(LlvError, match=needle):
        run_surface([*overrides, "grid=11x11", change, f"resume={path}"])


def test_resume_refuses_another_checkpoint(tiny, tmp_path):
    overrides, _ = tiny
    path, _ = run_surface([*overrides, "grid=11x11", "stop_after_points=3"])
    other = save_tiny_checkpoint(tmp_path, seed=5, name="other.pt")
    with pytest.raises(LlvError, match="checkpoint sha256 differs"):
        run_surface([*overrides, f"checkpoint={other}", "grid=11x11", f"resume={path}"])


def test_one_dimensional_surface_layout(tiny):
    overrides, _ = tiny
    path, _ = run_surface([*overrides, "grid=1d_51"])
    values, attrs = read(path)
    assert "ycoordinates" not in values and values["train_loss"].shape == (51,)
    assert values["train_loss"].dtype == np.float64 and values["done"].dtype == bool
    with h5py.File(attrs["dir_file"], "r") as f:
        assert "ydirection" not in f and len(f["xdirection"]) == 5


def test_non_finite_losses_are_nan_and_counted(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="TinyLinear")
    path, _ = run_surface([*tiny_overrides(tmp_path, "TinyLinear"), f"checkpoint={checkpoint}", "loss=mse",
                           "grid.x=-1e30:1e30:3", "grid.y=null", "norm=none"])
    values, attrs = read(path)
    assert np.isnan(values["train_loss"][[0, 2]]).all() and np.isfinite(values["train_loss"][1])
    assert values["done"].all() and attrs["nonfinite_count"] == 2


def test_summary_is_stored_with_provenance(tiny):
    overrides, checkpoint = tiny
    path, _ = run_surface([*overrides, "grid=11x11"])
    values, attrs = read(path)
    assert attrs["summary_train_centre_loss"] == pytest.approx(values["train_loss"][5, 5])
    assert attrs["summary_train_min_loss"] == pytest.approx(np.nanmin(values["train_loss"]))
    loss = values["train_loss"]
    assert attrs["summary_train_curvature_x"] == pytest.approx((loss[5, 6] - 2 * loss[5, 5] + loss[5, 4]) / 0.2 ** 2)
    from llv.checkpoint import sha256

    assert attrs["checkpoint_sha256"] == sha256(checkpoint) and attrs["llv_version"]
    assert attrs["world_size"] == 1 and attrs["seconds"] > 0 and "grid:" in attrs["config"]


def test_standard_error_matches_numpy_on_per_sample_losses(tiny):
    overrides, checkpoint = tiny
    path, cfg = run_surface([*overrides, "grid.x=-1:1:3", "grid.y=null", "eval.max_samples=30"])
    values, attrs = read(path)
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    space = ParameterSpace.of(model)
    d = dirs.load(attrs["dir_file"], space, 1)
    data = load_eval_data(cfg.dataset, "train", 30, seed=cfg.seed)
    assert len(data.targets) == 30
    for ix, alpha in enumerate(values["xcoordinates"]):
        shifted = copy.deepcopy(model).eval()
        with torch.no_grad():
            for p, dx in zip(shifted.parameters(), d.axes[0]):
                p.add_(alpha * dx)
            losses = per_sample_loss(shifted(data.inputs), data.targets).double().numpy()
        assert values["train_loss_se"][ix] == pytest.approx(np.std(losses, ddof=1) / np.sqrt(30), rel=1e-6)
        assert values["train_loss"][ix] == pytest.approx(losses.mean(), rel=1e-6)
