"""llv hessian against the dense Hessian of tiny nets and the known spectrum of a quadratic."""

import h5py
import numpy as np
import pytest
import torch
from conftest import save_tiny_checkpoint, tiny_overrides
from torch.func import functional_call

from llv import direction as dirs
from llv.checkpoint import load_into
from llv.config import compose
from llv.data import load_eval_data
from llv.losses import per_example_loss as per_sample_loss
from llv.models import build_model
from llv.params import ParameterSpace
from llv.tasks import hessian as hessian_task
from llv.tasks import surface as surface_task


def dense_hessian(cfg, checkpoint, shift=None):
    """H of the mean loss over all parameters (flattened), float64, at θ (+ shift: name -> delta)."""
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    model = model.double().eval()
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() + (shift[n].double() if shift and n in shift else 0) for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    shapes = [params[n].shape for n in names]
    data = load_eval_data(cfg.dataset, cfg.eval.splits[0], cfg.hessian.max_samples, seed=cfg.seed)
    x, y = data.inputs.double(), data.targets

    def loss(flat):
        pieces, start = {}, 0
        for n, s in zip(names, shapes):
            pieces[n] = flat[start:start + s.numel()].reshape(s)
            start += s.numel()
        return per_sample_loss(functional_call(model, {**pieces, **buffers}, (x,)), y, cfg.loss).mean()

    flat = torch.cat([params[n].reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat)


def run_hessian(overrides):
    cfg = compose("hessian", overrides)
    path = hessian_task.run(cfg)
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}, dict(f.attrs), cfg


@pytest.fixture
def tiny64(tiny):
    overrides, checkpoint = tiny
    return [*overrides, "hessian.dtype=float64", "hessian.tol=1e-8", "hessian.max_samples=null",
            "hessian.trace_probes=200", "hessian.density_steps=200"], checkpoint


def test_point_figures_match_the_dense_hessian(tiny64):
    overrides, checkpoint = tiny64
    values, attrs, cfg = run_hessian(overrides)
    exact = torch.linalg.eigvalsh(dense_hessian(cfg, checkpoint)).numpy()
    assert attrs["lambda_max"] == pytest.approx(exact[-1], rel=1e-4)
    assert attrs["lambda_min"] == pytest.approx(exact[0], rel=1e-4)
    np.testing.assert_allclose(values["eigenvalues"], exact[::-1][:3], rtol=1e-4)
    trace = exact.sum()
    assert abs(attrs["trace"] - trace) <= 3 * attrs["trace_stderr"] and attrs["trace_stderr"] > 0
    for key in ("num_hvp_extremes", "num_hvp_top_k", "num_hvp_trace", "num_hvp_density"):
        assert attrs[key] > 0
    assert attrs["num_hvp_trace"] == 200


def test_quadratic_loss_gives_its_known_spectrum_in_the_density(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="TinyLinear")
    overrides = [*tiny_overrides(tmp_path, "TinyLinear"), f"checkpoint={checkpoint}", "loss=mse",
                 "hessian.dtype=float64", "hessian.max_samples=null", "hessian.density_steps=60",
                 "hessian.density_runs=3"]
    values, attrs, cfg = run_hessian(overrides)
    data = load_eval_data(cfg.dataset, "train")
    x = torch.cat([data.inputs.flatten(1), torch.ones(len(data.targets), 1)], 1).double()
    classes = 3
    # mse = mean over examples and classes of squared error: H = 2/(N C) X^T X (x) I_C
    known = np.sort(np.repeat(torch.linalg.eigvalsh(2 * x.T @ x / (len(x) * classes)).numpy(), classes))
    nodes, weights = values["density_nodes"], values["density_weights"]
    n = len(known)  # 51 <= steps: SLQ is exact, every node is an eigenvalue
    for run_nodes, run_weights in zip(nodes, weights):
        assert run_weights.sum() == pytest.approx(1.0, abs=1e-10)
        heavy = run_nodes[run_weights > 1e-8]
        assert np.abs(heavy[:, None] - known[None, :]).min(axis=1).max() < 1e-6 * known.max()
        # sum_j w_j theta_j = v^T H v for a unit Rademacher v = trace / n exactly in expectation
    assert np.mean([(w * t).sum() for t, w in zip(nodes, weights)]) == pytest.approx(known.sum() / n, rel=0.2)
    assert attrs["lambda_max"] == pytest.approx(known[-1], rel=1e-6)


def test_grid_map_equals_per_point_dense_eigenvalues(tiny64):
    overrides, checkpoint = tiny64
    values, attrs, cfg = run_hessian([*overrides, "grid.x=-0.5:0.5:3", "grid.y=-0.5:0.5:2"])
    assert values["max_eig"].shape == (2, 3) and values["done"].all()
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    space = ParameterSpace.of(model)
    d = dirs.load(attrs["dir_file"], space, 2)
    for iy, beta in enumerate(values["ycoordinates"]):
        for ix, alpha in enumerate(values["xcoordinates"]):
            shift = {n: alpha * dx + beta * dy for n, dx, dy in zip(space.names, d.axes[0], d.axes[1])}
            exact = torch.linalg.eigvalsh(dense_hessian(cfg, checkpoint, shift)).numpy()
            assert values["max_eig"][iy, ix] == pytest.approx(exact[-1], rel=1e-4)
            assert values["min_eig"][iy, ix] == pytest.approx(exact[0], rel=1e-4)


def test_hessian_directions_are_the_extreme_eigenvectors(tiny64):
    overrides, checkpoint = tiny64
    cfg = compose("surface", [*overrides, "direction.kind=hessian", "grid=11x11"])
    path = surface_task.run(cfg)
    with h5py.File(path, "r") as f:
        dir_file = f.attrs["dir_file"]
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    d = dirs.load(dir_file, ParameterSpace.of(model), 2).flat(torch.float64)
    h = dense_hessian(cfg, checkpoint)
    exact = torch.linalg.eigvalsh(h)
    for vector, value in ((d[0], exact[-1]), (d[1], exact[0])):
        assert torch.linalg.vector_norm(h @ vector - value * vector) < 1e-3 * abs(float(value))


def test_compute_extremes_costs_only_its_lanczos_run(tiny64, monkeypatch):
    """``hessian.compute=[extremes]``: every Hessian-vector product of the run is its one
    Lanczos run (the reported residuals come from the run itself), nothing else is computed."""
    from llv.curvature import HessianOperator

    overrides, checkpoint = tiny64
    calls = []
    original = HessianOperator.matvec
    monkeypatch.setattr(HessianOperator, "matvec", lambda self, v: calls.append(1) or original(self, v))
    values, attrs, cfg = run_hessian([*overrides, "hessian.compute=[extremes]", "name=extremes"])
    assert len(calls) == attrs["num_hvp_extremes"] > 0
    for absent in ("trace", "num_hvp_trace", "num_hvp_density", "num_hvp_top_k"):
        assert absent not in attrs
    assert "eigenvalues" not in values and "density" not in values
    exact = torch.linalg.eigvalsh(dense_hessian(cfg, checkpoint)).numpy()
    assert attrs["lambda_max"] == pytest.approx(exact[-1], rel=1e-6)
    assert attrs["lambda_min"] == pytest.approx(exact[0], rel=1e-6)


def test_extremes_and_top_k_share_one_krylov_run(tiny64):
    overrides, _ = tiny64
    _, attrs, _ = run_hessian([*overrides, "hessian.compute=[extremes,top_k]", "name=shared"])
    assert attrs["num_hvp_extremes"] == attrs["num_hvp_top_k"] > 0
