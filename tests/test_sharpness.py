"""Sharpness measures against closed forms, the surfaces they promise to match, and the report."""

import csv
import itertools
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from scipy.optimize import brentq
from scipy.stats import kendalltau

from llv.config import compose
from llv.plot import make_plot
from llv.plot.sharpness import COLUMNS, GAPS, MEASURES, read_rows
from llv.sharpness import adaptive_sharpness, direction_increase, epsilon_sharpness
from llv.tasks import hessian as hessian_task
from llv.tasks import surface as surface_task
from llv.training import SAM

# ------------------------------------------------------------------------- a quadratic loss


def quadratic(a, b, theta):
    """δ -> (L(θ+δ), ∇L(θ+δ)) for L(x) = ½ xᵀAx + bᵀx, and L(θ)."""

    def objective(delta):
        x = theta + delta
        return float(0.5 * x @ a @ x + b @ x), a @ x + b

    return objective, objective(torch.zeros_like(theta))[0]


def spd(n, seed, spread=4.0):
    """A seeded symmetric positive definite matrix with eigenvalues in [1, spread]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(1.0, spread, n, dtype=torch.float64)) @ q.T


CASES = {  # name -> (A, b, θ)
    "diagonal": (torch.diag(torch.tensor([3.0, 1.0, 0.5, 2.0], dtype=torch.float64)),
                 torch.tensor([0.1, -0.2, 0.0, 0.3], dtype=torch.float64),
                 torch.tensor([0.5, -1.5, 2.0, 0.0], dtype=torch.float64)),
    "dense": (spd(4, 1), torch.tensor([0.05, 0.1, -0.3, 0.2], dtype=torch.float64),
              torch.tensor([0.3, -0.2, 1.0, -0.6], dtype=torch.float64)),
    "plane": (torch.tensor([[2.0, 0.7], [0.7, 1.0]], dtype=torch.float64),
              torch.tensor([0.2, -0.1], dtype=torch.float64),
              torch.tensor([0.4, 0.8], dtype=torch.float64)),
}


def box_maximum(a, b, theta, eps):
    """A convex function's maximum over a box is at one of its 2ⁿ vertices: try them all."""
    objective, _ = quadratic(a, b, theta)
    half = eps * (theta.abs() + 1)
    signs = itertools.product((-1.0, 1.0), repeat=len(theta))
    return max(objective(torch.tensor(s, dtype=torch.float64) * half)[0] for s in signs)


def ellipsoid_increase(a, b, theta, rho, eta):
    """max ½uᵀMu + cᵀu over ‖u‖ ≤ ρ (M = TAT, c = T∇L, δ = Tu) by the secular equation:
    u = (λI − M)⁻¹c with λ > λmax(M) and ‖u‖ = ρ (the trust-region maximum of a convex q)."""
    t = (theta.abs() + eta).numpy()
    m = t[:, None] * a.numpy() * t[None, :]
    c = t * (a @ theta + b).numpy()
    eigenvalues, q = np.linalg.eigh(m)
    projected = q.T @ c

    def radius_gap(lam):
        return np.linalg.norm(projected / (lam - eigenvalues)) - rho

    top = eigenvalues[-1]
    lam = brentq(radius_gap, top + 1e-12, top + np.linalg.norm(c) / rho + 1.0, xtol=1e-15)
    u = q @ (projected / (lam - eigenvalues))
    return 0.5 * u @ m @ u + c @ u


@pytest.mark.parametrize("case", CASES)
def test_epsilon_sharpness_equals_the_best_vertex(case):
    a, b, theta = CASES[case]
    eps = 0.1
    objective, loss = quadratic(a, b, theta)
    result = epsilon_sharpness(objective, theta, eps=eps, steps=20, restarts=4, seed=0)
    exact = box_maximum(a, b, theta, eps)
    assert result["loss"] == pytest.approx(loss, abs=1e-12)
    assert result["max_loss"] == pytest.approx(exact, abs=1e-10)
    assert result["value"] == pytest.approx(100 * (exact - loss) / (1 + loss), abs=1e-4)
    assert result["value"] > 1.0  # the box is large enough for the vertices to differ


@pytest.mark.parametrize("case", CASES)
def test_adaptive_sharpness_equals_the_secular_equation(case):
    a, b, theta = CASES[case]
    rho, eta = 0.3, 0.01
    objective, loss = quadratic(a, b, theta)
    result = adaptive_sharpness(objective, theta, rho=rho, eta=eta, steps=200, restarts=2,
                                seed=0, tol=1e-12)
    exact = ellipsoid_increase(a, b, theta, rho, eta)
    assert result["value"] == pytest.approx(exact, abs=1e-4)
    assert result["value"] <= exact + 1e-12  # a loss that was evaluated: never above the maximum
    assert result["max_loss"] == pytest.approx(loss + result["value"], abs=1e-12)


def test_secular_maximum_equals_a_fine_search_on_the_ellipse():
    """The closed form used above, checked against brute force in 2-D (a convex function's
    maximum over the ellipse is on its boundary)."""
    a, b, theta = (t.numpy() for t in CASES["plane"])
    rho, eta = 0.3, 0.01
    angles = np.linspace(0, 2 * np.pi, 2_000_001)
    points = theta + rho * (np.abs(theta) + eta) * np.stack([np.cos(angles), np.sin(angles)], 1)
    losses = 0.5 * np.einsum("ni,ij,nj->n", points, a, points) + points @ b
    centre = 0.5 * theta @ a @ theta + b @ theta
    exact = ellipsoid_increase(*CASES["plane"], rho, eta)
    assert exact == pytest.approx(losses.max() - centre, abs=1e-9)


def test_first_ascent_step_is_asams():
    """Restart 0's first move is exactly the ascent of llv.training.SAM(adaptive=True)."""
    a, b, theta = CASES["dense"]
    rho, eta = 0.2, 0.01
    objective, _ = quadratic(a, b, theta)
    visited = []

    def logged(delta):
        visited.append(delta.clone())
        return objective(delta)

    adaptive_sharpness(logged, theta, rho=rho, eta=eta, steps=2, restarts=1)
    parameter = torch.nn.Parameter(theta.clone())
    parameter.grad = objective(torch.zeros_like(theta))[1].clone()
    sam = SAM(torch.optim.SGD([parameter], lr=0.1), rho=rho, adaptive=True, eta=eta)
    sam.first_step()
    torch.testing.assert_close(visited[1], parameter.detach() - theta, rtol=1e-12, atol=1e-12)


def test_restarts_find_a_vertex_the_first_start_misses():
    """Maximizing a convex quadratic over a box is hard in general (strong off-diagonal curvature,
    θ near the centre): the ascent from θ ends at a worse vertex, a random restart finds the best,
    and the reported maximum is never above the true one."""
    a, b = spd(5, 5, spread=20.0), torch.zeros(5, dtype=torch.float64)
    theta = 0.01 * torch.randn(5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    objective, _ = quadratic(a, b, theta)
    exact = box_maximum(a, b, theta, 0.1)
    single = epsilon_sharpness(objective, theta, eps=0.1, steps=20, restarts=1)
    several = epsilon_sharpness(objective, theta, eps=0.1, steps=20, restarts=4)
    assert single["max_loss"] < exact - 1e-3
    assert several["max_loss"] == pytest.approx(exact, abs=1e-12) and several["restart"] > 0


def test_ascent_stops_at_a_fixed_vertex():
    """On a diagonal quadratic the sign step lands on the best vertex at once; the next step would
    not move, so a restart costs two evaluations."""
    a, b, theta = CASES["diagonal"]
    objective, _ = quadratic(a, b, theta)
    result = epsilon_sharpness(objective, theta, eps=0.1, steps=20, restarts=1)
    assert result["num_evaluations"] == 2


def test_nan_losses_are_never_the_maximum():
    """A perturbation that overflows the loss ends its restart; the finite losses decide."""
    theta = torch.tensor([1.0, 2.0], dtype=torch.float64)

    def objective(delta):
        if delta.abs().sum() == 0:
            return 0.5, torch.ones(2, dtype=torch.float64)
        return float("nan"), torch.full((2,), float("nan"), dtype=torch.float64)

    for measure in (epsilon_sharpness, adaptive_sharpness):
        result = measure(objective, theta, steps=20, restarts=3)
        assert (result["value"], result["max_loss"]) == (0.0, 0.5)
        assert result["num_evaluations"] == 2 + 1 + 1  # θ, its first step, one per random start


def test_direction_increase_averages_both_signs():
    result = direction_increase(1.0, [1.2, 1.6, 1.1], [1.4, 1.0, 1.5])
    np.testing.assert_allclose(result["values"], [0.3, 0.3, 0.3])
    assert result["mean"] == pytest.approx(0.3) and result["std"] == pytest.approx(0.0, abs=1e-12)
    assert direction_increase(1.0, [2.0, 3.0], [2.0, 2.0])["std"] == pytest.approx(np.sqrt(0.125))


# ------------------------------------------------------------------- llv hessian on a tiny net

RADIUS, COUNT, SEED = 0.5, 3, 4


@pytest.fixture(scope="module")
def tiny_point(tmp_path_factory):
    """``llv hessian`` (cheap settings) on the tiny conv+BN net, with K=3 directions at r=0.5."""
    from conftest import save_tiny_checkpoint

    tmp = tmp_path_factory.mktemp("sharpness")
    checkpoint = save_tiny_checkpoint(tmp)
    overrides = [*tiny_overrides(tmp), f"checkpoint={checkpoint}", f"direction.seed={SEED}"]
    cfg = compose("hessian", [*overrides, "hessian.trace_probes=4", "hessian.density_runs=1",
                              "hessian.density_steps=8", "hessian.top_k=1",
                              f"sharpness.radius={RADIUS}", f"sharpness.directions={COUNT}",
                              "sharpness.eps=0.01", "sharpness.steps=5"])
    path = hessian_task.run(cfg)
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
    return overrides, path, attrs


def test_direction_increase_equals_the_matching_1d_surfaces(tiny_point):
    overrides, _, attrs = tiny_point
    plus, minus, centre = [], [], []
    for k in range(COUNT):
        cfg = compose("surface", [*overrides, f"direction.seed={SEED + k}",
                                  f"grid.x=-{RADIUS}:{RADIUS}:3", "grid.y=null"])
        with h5py.File(surface_task.run(cfg), "r") as f:
            losses = f["train_loss"][()]
        minus.append(losses[0]), centre.append(losses[1]), plus.append(losses[2])
    np.testing.assert_allclose(attrs["direction_losses_plus"], plus, rtol=1e-5)
    np.testing.assert_allclose(attrs["direction_losses_minus"], minus, rtol=1e-5)
    assert attrs["loss"] == pytest.approx(centre[0], rel=1e-5)
    increases = 0.5 * (np.array(plus) + np.array(minus)) - centre[0]
    assert attrs["direction_increase"] == pytest.approx(increases.mean(), rel=1e-4)
    assert attrs["direction_increase_std"] == pytest.approx(increases.std(ddof=1), rel=1e-4)
    assert attrs["direction_count"] == COUNT and attrs["direction_radius"] == RADIUS
    assert abs(attrs["direction_increase"]) > 1e-3  # r = 0.5 moves the loss: a real comparison


def test_gap_equals_the_surface_at_the_centre(tiny_point):
    overrides, _, attrs = tiny_point
    cfg = compose("surface", [*overrides, "grid.x=0:0:1", "grid.y=null",
                              "eval.splits=[train,test]"])
    with h5py.File(surface_task.run(cfg), "r") as f:
        centre = {k: float(f[k][()][0])
                  for k in ("train_loss", "test_loss", "train_acc", "test_acc")}
    for key, value in centre.items():
        assert attrs[key] == pytest.approx(value, rel=1e-5)
    assert attrs["gap_loss"] == pytest.approx(centre["test_loss"] - centre["train_loss"], rel=1e-5)
    assert attrs["gap_acc"] == pytest.approx(centre["train_acc"] - centre["test_acc"], abs=1e-9)
    assert attrs["test_error"] == pytest.approx(100 - centre["test_acc"], abs=1e-9)


def test_point_file_sharpness_is_at_least_the_first_ascent_step(tiny_point):
    """Both maxima are losses reached inside their sets: above L(θ), and finite."""
    _, _, attrs = tiny_point
    assert attrs["epsilon_sharpness_max_loss"] > attrs["loss"] and attrs["epsilon_sharpness"] > 0
    assert attrs["adaptive_sharpness_max_loss"] > attrs["loss"] and attrs["adaptive_sharpness"] > 0
    assert attrs["epsilon_sharpness"] == pytest.approx(
        100 * (attrs["epsilon_sharpness_max_loss"] - attrs["loss"]) / (1 + attrs["loss"]))
    assert 1 <= attrs["num_evaluations_epsilon_sharpness"] <= 5 * 2
    assert "seconds_epsilon_sharpness" in attrs and "seconds_generalization_gap" in attrs


def test_sharpness_can_be_turned_off(tmp_path):
    from conftest import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path)
    cfg = compose("hessian", [*tiny_overrides(tmp_path), f"checkpoint={checkpoint}",
                              "sharpness.enabled=false", "hessian.trace_probes=2",
                              "hessian.density_runs=1", "hessian.density_steps=4",
                              "hessian.top_k=1"])
    with h5py.File(hessian_task.run(cfg), "r") as f:
        assert "lambda_max" in f.attrs and "epsilon_sharpness" not in f.attrs


# ------------------------------------------------------------------------------- the report

STORED = {  # three models; the third has no ε-sharpness (an older file)
    "sgd": dict(lambda_max=5.0, lambda_min=-0.1, trace=40.0, trace_stderr=1.0,
                epsilon_sharpness=12.0,
                adaptive_sharpness=0.02, direction_increase=0.3, direction_increase_std=0.05,
                train_loss=0.01, test_loss=0.30, train_acc=100.0, test_acc=95.0),
    "sam": dict(lambda_max=2.0, lambda_min=-0.3, trace=15.0, trace_stderr=0.5,
                epsilon_sharpness=4.0,
                adaptive_sharpness=0.01, direction_increase=0.1, direction_increase_std=0.02,
                train_loss=0.02, test_loss=0.12, train_acc=99.5, test_acc=97.0),
    "large_batch": dict(lambda_max=9.0, lambda_min=-0.05, trace=30.0, trace_stderr=2.0,
                        adaptive_sharpness=0.05, direction_increase=0.6, direction_increase_std=0.1,
                        train_loss=0.005, test_loss=0.45, train_acc=100.0, test_acc=93.0),
}


def write_point(folder, values):
    folder.mkdir(parents=True)
    with h5py.File(folder / "hessian.h5", "w") as f:
        f.create_dataset("eigenvalues", data=np.array([values["lambda_max"]]))
        for key, value in values.items():
            f.attrs[key] = value
        f.attrs["gap_loss"] = values["test_loss"] - values["train_loss"]
        f.attrs["gap_acc"] = values["train_acc"] - values["test_acc"]
        f.attrs["test_error"] = 100 - values["test_acc"]
        f.attrs["checkpoint"] = f"outputs/train/2024-01-01_00-00-00_{folder.name}/final.pt"
    return folder


def test_report_has_a_row_per_model_and_scipys_kendall_tau(tmp_path):
    folders = [write_point(tmp_path / f"2024-05-0{i + 1}_10-00-00_{name}", values)
               for i, (name, values) in enumerate(STORED.items())]
    figure, markdown, table = make_plot("sharpness", folders, out=tmp_path / "report.png")
    assert figure.stat().st_size > 10_000
    assert (markdown.name, table.name) == ("report.md", "report.csv")

    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == list(STORED)
    assert list(rows[0]) == ["model", *COLUMNS, "file"]
    assert float(rows[1]["gap_loss"]) == pytest.approx(0.12 - 0.02)
    assert float(rows[0]["test_error"]) == pytest.approx(5.0)
    assert rows[2]["epsilon_sharpness"] == "nan"

    lines = markdown.read_text().splitlines()
    taus = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in lines
            if line.startswith("| ") and line.split("|")[1].strip() in
            {COLUMNS[m] for m in MEASURES}}
    for measure in MEASURES:
        x = np.array([STORED[n].get(measure, np.nan) for n in STORED])
        for column, gap in enumerate(GAPS):
            y = np.array([float(r[gap]) for r in rows])
            keep = np.isfinite(x)
            expected = kendalltau(x[keep], y[keep]).statistic
            assert float(taus[COLUMNS[measure]][column]) == pytest.approx(expected, abs=1e-6)
    # the sharper models have the larger gaps in this data: λmax ranks them perfectly
    assert float(taus[COLUMNS["lambda_max"]][0]) == pytest.approx(1.0)
    assert float(taus[COLUMNS["epsilon_sharpness"]][0]) == pytest.approx(1.0)  # from 2 models


def test_report_reads_a_real_point_file_and_labels_it_by_checkpoint(tiny_point):
    _, path, attrs = tiny_point
    [row] = read_rows([path.parent])
    # the run folder has no name: the checkpoint's folder and stem
    assert row.label == f"{Path(str(attrs['checkpoint'])).parent.name}/tiny"
    for key in COLUMNS:
        assert row.values[key] == pytest.approx(float(attrs[key]))


def _float64_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    x = torch.randn(20, 2, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    with torch.no_grad():  # weights with more bits than float32 holds
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 1e-3 / 3)
    return net, (x, y)


def test_float64_points_are_formed_in_float64():
    # θ ± r d and a Hessian map's points are formed in the operator's precision: a float64 net
    # seen through float32 points gets increases of 1e-7 wrong by percents
    import llv
    from llv.curvature import HessianOperator
    from llv.sharpness import random_direction_losses

    net, data = _float64_net()
    base = llv.hessian(net, data, dtype=torch.float64).operator
    along = random_direction_losses(net, lambda s=None: base if s is None else HessianOperator.like(base, s),
                                    1e-3, 1, seed=0)
    direction = llv.directions(net, kind="random", ndim=1, seed=0, norm="filter").flat()[0].double()
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def loss_at(flat):
        state, offset = {}, 0
        for name, p in net.named_parameters():
            state[name] = flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        return float(torch.nn.functional.cross_entropy(torch.func.functional_call(net, state, (data[0],)), data[1]))

    plus, minus = loss_at(theta + 1e-3 * direction), loss_at(theta - 1e-3 * direction)
    assert along["plus"][0] == pytest.approx(plus, rel=1e-10)
    assert along["minus"][0] == pytest.approx(minus, rel=1e-10)

    centre = llv.hessian_map(net, data, x=(0, 0, 1), y=None, tol=1e-10, dtype=torch.float64, progress=False)
    top = llv.hessian(net, data, dtype=torch.float64).eigenvalues(1, "extremes", tol=1e-10).values
    assert float(np.ravel(centre["max_eig"])[0]) == pytest.approx(float(top[0]), rel=1e-11)
