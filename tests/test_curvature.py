"""Curvature estimators against dense float64 Hessians of tiny networks and exact quadratics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llv.curvature import (
    HVP_METHODS,
    HessianOperator,
    bottom_eigenpairs,
    extreme_eigenvalues,
    hutchinson_trace,
    smooth_density,
    spectral_density,
    top_eigenpairs,
)
from llv.errors import LlvError

# -- cases ------------------------------------------------------------------------------------


def mlp_case():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    return model, torch.randn(20, 4), torch.randint(0, 3, (20,))


def conv_bn_case():
    """conv 1→2 3×3, BatchNorm with non-trivial running statistics, relu, linear → 3."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)
    )
    bn = model[1]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.3, 0.7]))
        bn.bias.copy_(torch.tensor([0.2, -0.1]))
        bn.running_mean.copy_(torch.tensor([0.1, -0.3]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0]))
    return model, torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))


CASES = {"mlp": mlp_case, "conv_bn": conv_bn_case}
LOSS_CASES = [("mlp", "ce"), ("mlp", "mse"), ("conv_bn", "ce"), ("conv_bn", "mse")]


# -- the obviously-correct reference ----------------------------------------------------------


def reference_loss(outputs, targets, loss):
    if loss == "ce":
        return F.cross_entropy(outputs, targets)
    one_hot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return ((outputs - one_hot) ** 2).mean(dim=1).mean()  # llv.losses: mean over classes


def reference(model, inputs, targets, loss="ce", wrt=None, state=None):
    """Dense float64 Hessian, gradient and loss of the mean loss as a function of flat θ."""
    model = copy.deepcopy(model).double().eval()
    full = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    full = {k: t.detach() for k, t in full.items()}
    if state is not None:
        full.update({k: t.detach().double() for k, t in state.items()})
    wrt = wrt or [name for name, _ in model.named_parameters()]
    shapes = [full[name].shape for name in wrt]
    theta = torch.cat([full[name].reshape(-1) for name in wrt])

    def mean_loss(flat):
        params, offset = {}, 0
        for name, shape in zip(wrt, shapes):
            size = int(np.prod(shape))
            params[name] = flat[offset : offset + size].view(shape)
            offset += size
        out = torch.func.functional_call(model, {**full, **params}, (inputs.double(),))
        return reference_loss(out, targets, loss)

    hessian = torch.autograd.functional.hessian(mean_loss, theta)
    gradient = torch.autograd.functional.jacobian(mean_loss, theta)
    return hessian, gradient, float(mean_loss(theta))


def assert_relative(actual, expected, rtol):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert np.all(np.abs(actual - expected) <= rtol * np.abs(expected)), (actual, expected)


@pytest.fixture(scope="module", params=list(CASES))
def dense_case(request):
    model, inputs, targets = CASES[request.param]()
    hessian, _, _ = reference(model, inputs, targets)
    op = HessianOperator(model, inputs, targets, dtype=torch.float64)
    return op, hessian


# -- the operator -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", HVP_METHODS)
@pytest.mark.parametrize(("case", "loss"), LOSS_CASES)
def test_matvec_equals_dense_hessian(case, loss, method):
    model, inputs, targets = CASES[case]()
    hessian, gradient, value = reference(model, inputs, targets, loss)
    op = HessianOperator(model, inputs, targets, loss=loss, dtype=torch.float64, method=method)
    assert op.n == hessian.shape[0] == sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(op.n, generator=generator, dtype=torch.float64)
        expected = hessian @ v
        assert (op.matvec(v) - expected).abs().max() <= 1e-8 * max(1.0, expected.abs().max())
    assert op.num_hvp == 3
    assert abs(op.loss_value() - value) <= 1e-12 * abs(value)
    assert (op.gradient() - gradient).abs().max() <= 1e-12


@pytest.mark.parametrize("case", list(CASES))
def test_chunks_give_the_same_products_as_one_batch(case):
    model, inputs, targets = CASES[case]()
    whole = HessianOperator(model, inputs, targets, dtype=torch.float64)
    chunked = HessianOperator(model, inputs, targets, dtype=torch.float64, batch_size=7)
    assert len(chunked.data) == 3  # 7 + 7 + 6 examples, the last one smaller
    v = torch.randn(whole.n, dtype=torch.float64)
    assert (chunked.matvec(v) - whole.matvec(v)).abs().max() <= 1e-12
    assert abs(chunked.loss_value() - whole.loss_value()) <= 1e-13
    assert (chunked.gradient() - whole.gradient()).abs().max() <= 1e-13


def test_float32_default_is_close_to_float64():
    model, inputs, targets = conv_bn_case()
    hessian, _, _ = reference(model, inputs, targets)
    op = HessianOperator(model, inputs, targets)
    assert op.dtype == torch.float32
    v = torch.randn(op.n)
    product = op.matvec(v)
    assert product.dtype == torch.float32
    expected = hessian @ v.double()
    assert (product.double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    lambda_max = torch.linalg.eigvalsh(hessian)[-1].item()
    assert_relative(extreme_eigenvalues(op)["lambda_max"], lambda_max, 1e-3)


def test_wrt_subset_is_the_sub_block():
    model, inputs, targets = mlp_case()
    hessian, _, _ = reference(model, inputs, targets)
    # Names in the full order are 0.weight (24), 0.bias (6), 2.weight (18), 2.bias (3).
    wrt = ["2.weight", "0.bias"]
    index = torch.cat([torch.arange(30, 48), torch.arange(24, 30)])
    op = HessianOperator(model, inputs, targets, wrt=wrt, dtype=torch.float64)
    assert op.n == 24
    block = hessian[index][:, index]
    assert (op.to_dense() - block).abs().max() <= 1e-10
    sub_reference, _, _ = reference(model, inputs, targets, wrt=wrt)
    assert (sub_reference - block).abs().max() <= 1e-12
    lambda_max = torch.linalg.eigvalsh(block)[-1].item()
    assert_relative(extreme_eigenvalues(op)["lambda_max"], lambda_max, 1e-4)


def test_state_gives_the_hessian_at_that_point():
    model, inputs, targets = conv_bn_case()
    generator = torch.Generator().manual_seed(3)
    state = {
        name: t.detach() + 0.3 * torch.randn(t.shape, generator=generator)
        for name, t in list(model.named_parameters()) + [("1.running_mean", model[1].running_mean)]
    }
    at_model, _, _ = reference(model, inputs, targets)
    at_state, gradient, value = reference(model, inputs, targets, state=state)
    assert (at_state - at_model).abs().max() > 1e-2  # the point matters
    op = HessianOperator(model, inputs, targets, state=state, dtype=torch.float64)
    assert (op.to_dense() - at_state).abs().max() <= 1e-10
    assert abs(op.loss_value() - value) <= 1e-12 * value
    assert (op.gradient() - gradient).abs().max() <= 1e-12
    assert model[1].running_mean.tolist() == pytest.approx([0.1, -0.3])  # model untouched


def test_linear_operator_is_the_hessian(dense_case):
    op, hessian = dense_case
    linear = op.as_linear_operator()
    x = np.random.default_rng(0).standard_normal(op.n)
    assert linear.shape == (op.n, op.n) and linear.dtype == np.float64
    np.testing.assert_allclose(linear.matvec(x), hessian.numpy() @ x, rtol=0, atol=1e-10)
    np.testing.assert_allclose(linear.rmatvec(x), hessian.numpy() @ x, rtol=0, atol=1e-10)


def test_loss_callable_and_float_targets_match_the_named_loss():
    model, inputs, targets = mlp_case()
    named = HessianOperator(model, inputs, targets, loss="mse", dtype=torch.float64)
    one_hot = F.one_hot(targets, 3).double()
    as_floats = HessianOperator(model, inputs, one_hot, loss="mse", dtype=torch.float64)
    summed = HessianOperator(
        model,
        inputs,
        targets,
        loss=lambda out, batch: F.mse_loss(out, F.one_hot(batch[1], 3).to(out.dtype),
                                           reduction="none").mean(dim=1),
        dtype=torch.float64,
    )
    v = torch.randn(named.n, dtype=torch.float64)
    for other in (as_floats, summed):
        assert (other.matvec(v) - named.matvec(v)).abs().max() <= 1e-12
        assert other.loss_value() == pytest.approx(named.loss_value(), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu():
    model, inputs, targets = conv_bn_case()
    cpu = HessianOperator(model, inputs, targets, dtype=torch.float64)
    gpu = HessianOperator(copy.deepcopy(model).cuda(), inputs, targets, dtype=torch.float64)
    assert gpu.device.type == "cuda"
    v = torch.randn(cpu.n, dtype=torch.float64)
    assert (gpu.matvec(v.cuda()).cpu() - cpu.matvec(v)).abs().max() <= 1e-10
    for estimate in (extreme_eigenvalues, hutchinson_trace):
        on_gpu, on_cpu = estimate(gpu), estimate(cpu)
        for key in on_cpu:
            assert on_gpu[key] == pytest.approx(on_cpu[key], rel=1e-6)


def test_bad_arguments_are_refused():
    model, inputs, targets = mlp_case()
    with pytest.raises(LlvError, match="unknown loss"):
        HessianOperator(model, inputs, targets, loss="hinge")
    with pytest.raises(ValueError, match="does not have"):
        HessianOperator(model, inputs, targets, wrt=["3.weight"])
    with pytest.raises(ValueError, match="length 51"):
        HessianOperator(model, inputs, targets).unflatten(torch.zeros(50))


# -- eigenvalues ------------------------------------------------------------------------------


def test_extreme_eigenvalues_match_eigvalsh(dense_case):
    op, hessian = dense_case
    exact = torch.linalg.eigvalsh(hessian).numpy()
    assert exact[0] < 0 < exact[-1]  # an indefinite Hessian: both ends are tested
    before = op.num_hvp
    result = extreme_eigenvalues(op, tol=1e-3)
    assert result["num_hvp"] == op.num_hvp - before > 0
    assert result["num_hvp"] < op.n  # cheaper than forming the dense matrix
    assert_relative([result["lambda_max"], result["lambda_min"]], [exact[-1], exact[0]], 1e-4)


def test_top_and_bottom_eigenpairs(dense_case):
    op, hessian = dense_case
    exact = torch.linalg.eigvalsh(hessian).numpy()
    values, vectors, used = top_eigenpairs(op, k=3)
    assert vectors.shape == (3, op.n) and used > 0
    assert_relative(values, exact[::-1][:3], 1e-4)
    low_values, low_vectors, _ = bottom_eigenpairs(op, k=3)
    assert_relative(low_values, exact[:3], 1e-4)
    for lam, vec in [*zip(values, vectors), *zip(low_values, low_vectors)]:
        assert (hessian @ vec - lam * vec).norm() <= 1e-3 * abs(lam)
        assert vec[vec.abs().argmax()] > 0  # reproducible sign
    for rows in (vectors, low_vectors):  # Ritz vectors of one run: orthonormal to rounding
        assert (rows @ rows.T - torch.eye(3, dtype=rows.dtype)).abs().max() <= 1e-12
    assert (vectors @ low_vectors.T).abs().max() <= 1e-3  # two runs: up to residual / gap


def test_thick_restart_converges_with_a_small_basis(dense_case):
    op, hessian = dense_case
    exact = torch.linalg.eigvalsh(hessian).numpy()
    result = extreme_eigenvalues(op, tol=1e-6, max_basis=8)
    assert result["num_hvp"] > 8  # it did restart
    assert_relative([result["lambda_max"], result["lambda_min"]], [exact[-1], exact[0]], 1e-8)
    values, _, _ = top_eigenpairs(op, k=2, tol=1e-6, max_basis=7)
    assert_relative(values, exact[::-1][:2], 1e-8)


def test_refined_residual_is_the_smallest_residual_in_the_krylov_space():
    """The stopping test's bound at θ, the smallest singular value of [T − θI; ‖w‖ eⱼᵀ], equals
    min ‖(A − θI) y‖ over unit y in span(V), computed densely, for Lanczos on a known matrix,
    also after thick restarts; and an eigenvalue of A lies within it of θ."""
    from llv.curvature import _lanczos_ends, _refined_residual

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(60, 60)))
    spectrum = np.r_[-0.5, -0.49, np.linspace(0, 1, 57), 3.0]  # an end in a cluster
    a = (q * spectrum) @ q.T
    v = rng.normal(size=60)
    basis, t = [v / np.linalg.norm(v)], np.zeros((12, 12))
    for j in range(12):  # plain Lanczos with full reorthogonalization, in float64
        w = a @ basis[j]
        for _ in range(2):
            c = np.array(basis) @ w
            w = w - np.array(basis).T @ c
            t[: j + 1, j] += c
        t[j, : j + 1] = t[: j + 1, j]
        basis.append(w / np.linalg.norm(w))
    v_m, norm = np.array(basis[:12]).T, np.linalg.norm(w)
    theta = np.linalg.eigvalsh(t)
    for value in (theta[0], theta[1], theta[-1]):
        dense = np.linalg.svd((a - value * np.eye(60)) @ v_m, compute_uv=False)[-1]
        bound = _refined_residual(t, norm, value)
        assert bound == pytest.approx(dense, rel=1e-8, abs=1e-12)
        assert np.abs(spectrum - value).min() <= bound * (1 + 1e-9)

    class Dense:  # the matrix as an operator, to run the library's Lanczos with restarts
        n, dtype, device, num_hvp = 60, torch.float64, torch.device("cpu"), 0

        def matvec(self, x):
            return torch.from_numpy(a) @ x

    for seed in range(3):
        values, _, converged, residuals, bounds = _lanczos_ends(Dense(), 1, 1, 1e-4, None, seed, 8, False)
        assert converged and np.all(bounds <= residuals)
        for value, bound in zip(values, bounds):
            assert np.abs(spectrum - value).min() <= bound * (1 + 1e-9)
            assert bound <= 1e-4 * abs(value)


def test_the_refined_bound_stops_no_later_than_the_ritz_residual(dense_case, monkeypatch):
    """Same Krylov space, a bound never looser: at most the products of the Ritz-residual test,
    and the values still within tol of the dense Hessian's ends."""
    import llv.curvature as curvature

    op, hessian = dense_case
    exact = torch.linalg.eigvalsh(hessian).numpy()
    sharp = curvature.spectrum_ends(op, 1, 1, tol=1e-6, seed=0, max_basis=10)
    monkeypatch.setattr(curvature, "_refined_residual", lambda projected, norm, theta: np.inf)
    plain = curvature.spectrum_ends(op, 1, 1, tol=1e-6, seed=0, max_basis=10)
    assert sharp["num_hvp"] <= plain["num_hvp"]
    assert_relative([sharp["top"][0], sharp["bottom"][0]], [exact[-1], exact[0]], 1e-6)


def test_unconverged_lanczos_reports_nan():
    model, inputs, targets = mlp_case()
    op = HessianOperator(model, inputs, targets, dtype=torch.float64)
    result = extreme_eigenvalues(op, tol=1e-14, maxiter=5)
    assert np.isnan(result["lambda_max"]) and np.isnan(result["lambda_min"])
    assert result["num_hvp"] == 5


def test_num_hvp_counts_every_product(dense_case):
    op, _ = dense_case
    calls = []
    matvec = op.matvec

    def counted(v):
        calls.append(1)
        return matvec(v)

    op.matvec = counted
    try:
        for run in [
            lambda: extreme_eigenvalues(op)["num_hvp"],
            lambda: top_eigenpairs(op, k=2)[2],
            lambda: bottom_eigenpairs(op, k=1)[2],
            lambda: hutchinson_trace(op, probes=7)["num_hvp"],
            lambda: spectral_density(op, runs=2, steps=5)["num_hvp"],
        ]:
            calls.clear()
            before = op.num_hvp
            reported = run()
            assert reported == len(calls) == op.num_hvp - before
    finally:
        del op.matvec
    assert op.num_hvp > 0


# -- trace ------------------------------------------------------------------------------------


def test_hutchinson_trace_within_three_standard_errors(dense_case):
    op, hessian = dense_case
    trace = torch.trace(hessian).item()
    few = hutchinson_trace(op, probes=25, seed=0)
    many = hutchinson_trace(op, probes=225, seed=1)
    assert few["num_hvp"] == 25 and many["num_hvp"] == 225
    for estimate in (few, many):
        assert estimate["stderr"] > 0
        assert abs(estimate["trace"] - trace) <= 3 * estimate["stderr"]
    assert many["stderr"] < 0.6 * few["stderr"]  # ~ 1/sqrt(probes): a third here
    assert hutchinson_trace(op, probes=25, seed=0) == few  # seeded


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    # Rademacher probes: zᵀDz = tr D for every z, so the standard error is zero.
    op = quadratic_operator(torch.diag(torch.arange(1.0, 7.0)), classes=4)
    result = hutchinson_trace(op, probes=10)
    assert result["trace"] == pytest.approx(4 * 2 / 6 * sum(k**2 for k in range(1, 7)), rel=1e-12)
    assert result["stderr"] == pytest.approx(0.0, abs=1e-12)


# -- an exact quadratic: Linear(d → c, no bias) with "mse" ------------------------------------
#
# L(W) = 1/N Σₙ Σᵢ (Wᵢ·xₙ − tₙᵢ)², so ∂²L/∂Wᵢₖ∂Wⱼₗ = δᵢⱼ (2/N) Σₙ xₙₖ xₙₗ: with W flattened
# row by row, H = I_c ⊗ (2/N) XᵀX, whose eigenvalues are those of (2/N) XᵀX, c times each.


def quadratic_operator(inputs, classes, dtype=torch.float64):
    torch.manual_seed(5)
    model = nn.Linear(inputs.shape[1], classes, bias=False)
    targets = torch.arange(len(inputs)) % classes
    # mse is a mean over the C classes: inputs scaled by √C give H = 2/N · I_C ⊗ XᵀX
    return HessianOperator(model, inputs.double() * classes**0.5, targets, loss="mse", dtype=dtype)


def quadratic_hessian(inputs, classes):
    gram = 2.0 / len(inputs) * inputs.double().T @ inputs.double()
    return torch.kron(torch.eye(classes, dtype=torch.float64), gram), gram


def test_quadratic_hessian_is_known_in_closed_form():
    inputs = torch.randn(10, 8, generator=torch.Generator().manual_seed(0))
    op = quadratic_operator(inputs, classes=3)
    hessian, gram = quadratic_hessian(inputs, 3)
    assert (op.to_dense() - hessian).abs().max() <= 1e-12
    distinct = torch.linalg.eigvalsh(gram).numpy()
    result = extreme_eigenvalues(op, tol=1e-8)  # n = 24: Lanczos, not the dense path
    assert result["num_hvp"] <= 9  # the Krylov space has 8 dimensions: 8 distinct eigenvalues
    assert_relative([result["lambda_max"], result["lambda_min"]], distinct[[-1, 0]], 1e-8)


def test_dense_path_gets_multiplicities_right():
    inputs = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    op = quadratic_operator(inputs, classes=3)  # n = 12: small enough for the dense matrix
    _, gram = quadratic_hessian(inputs, 3)
    largest = torch.linalg.eigvalsh(gram)[-1].item()
    values, vectors, used = top_eigenpairs(op, k=3)
    assert used == op.n
    assert_relative(values, [largest] * 3, 1e-12)
    assert (vectors @ vectors.T - torch.eye(3, dtype=vectors.dtype)).abs().max() <= 1e-12


def test_slq_with_n_steps_recovers_the_spectrum_and_multiplicities():
    # Orthogonal columns make (2/N) XᵀX diagonal with distinct entries 2 sₖ² / N. With a
    # Rademacher start v, the weight of each eigenvalue, |P v|² = c/n exactly, in every run.
    d, classes = 6, 3
    scales = torch.arange(1.0, d + 1.0)
    op = quadratic_operator(torch.diag(scales), classes)
    n = d * classes
    eigenvalues = (2.0 / d * scales.double() ** 2).numpy()
    density = spectral_density(op, runs=3, steps=100, seed=0)  # steps capped at n
    assert density["nodes"].shape == density["weights"].shape == (3, n)
    assert density["num_hvp"] == 3 * n
    exact = np.sort(np.repeat(eigenvalues, classes))
    for nodes, weights in zip(density["nodes"], density["weights"]):
        np.testing.assert_allclose(nodes, exact, rtol=1e-10)
        assert weights.sum() == pytest.approx(1.0, abs=1e-12)
        per_eigenvalue = [weights[np.isclose(nodes, lam, rtol=1e-8)].sum() for lam in eigenvalues]
        np.testing.assert_allclose(per_eigenvalue, classes / n, atol=1e-10)


def test_slq_weights_average_to_multiplicity_over_n():
    # A general quadratic: per run the weights are random, their mean is multiplicity / n.
    inputs = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    classes, runs = 4, 60
    op = quadratic_operator(inputs, classes)
    _, gram = quadratic_hessian(inputs, classes)
    eigenvalues = torch.linalg.eigvalsh(gram).numpy()
    density = spectral_density(op, runs=runs, steps=op.n, seed=1)
    per_run = np.array(
        [
            [w[np.isclose(x, lam, rtol=1e-7)].sum() for lam in eigenvalues]
            for x, w in zip(density["nodes"], density["weights"])
        ]
    )
    np.testing.assert_allclose(per_run.sum(axis=1), 1.0, atol=1e-10)  # every node is matched
    # Var(zᵀPz) ≤ 2 rank(P) = 2c for Rademacher z, so each mean has std ≤ sqrt(2c) / n / sqrt(runs).
    bound = 4 * np.sqrt(2 * classes) / op.n / np.sqrt(runs)
    np.testing.assert_allclose(per_run.mean(axis=0), classes / op.n, atol=bound)


def test_slq_few_steps_on_a_network(dense_case):
    op, hessian = dense_case
    exact = torch.linalg.eigvalsh(hessian).numpy()
    density = spectral_density(op, runs=2, steps=10, seed=0)
    assert density["nodes"].shape == (2, 10)
    np.testing.assert_allclose(density["weights"].sum(axis=1), 1.0, atol=1e-12)
    assert np.all(density["weights"] >= 0)
    # Ritz values interlace: inside the spectrum, the outermost close to its ends.
    assert np.all(density["nodes"] >= exact[0] - 1e-10)
    assert np.all(density["nodes"] <= exact[-1] + 1e-10)
    assert density["nodes"][:, -1].min() >= 0.9 * exact[-1]
    again = spectral_density(op, runs=2, steps=10, seed=0)
    np.testing.assert_array_equal(again["nodes"], density["nodes"])  # seeded


def test_smooth_density_integrates_to_one_with_the_right_masses():
    d, classes = 6, 3
    scales = torch.arange(1.0, d + 1.0)
    op = quadratic_operator(torch.diag(scales), classes)
    eigenvalues = (2.0 / d * scales**2).numpy()  # 1/3, 4/3, 3, 16/3, 25/3, 12
    density = spectral_density(op, runs=2, steps=op.n)
    grid = np.linspace(-5.0, 20.0, 25001)
    step = grid[1] - grid[0]
    values = smooth_density(density["nodes"], density["weights"], grid, sigma=0.05)
    assert values.sum() * step == pytest.approx(1.0, abs=1e-6)
    for lam in eigenvalues:  # each eigenvalue carries mass multiplicity / n = 1/6
        window = np.abs(grid - lam) <= 0.25
        assert values[window].sum() * step == pytest.approx(1 / 6, abs=1e-4)
    single = smooth_density(density["nodes"][0], density["weights"][0], grid, sigma=0.05)
    np.testing.assert_allclose(single, values, atol=1e-10)  # one run as a 1-D array
    with pytest.raises(ValueError):
        smooth_density([0.0], [1.0], grid, sigma=0.0)


def trained_digits_mlp(examples: int, hidden: int, steps: int):
    """A tanh MLP trained by full-batch SGD on the first ``examples`` digits: a Hessian with a
    real spectrum (not a random init's), too big for a dense matrix."""
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    inputs = torch.tensor(features[:examples] / 16.0, dtype=torch.float32)
    targets = torch.tensor(labels[:examples])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model, inputs, targets


@pytest.mark.slow
def test_lanczos_agrees_with_arpack_on_a_trained_digits_net():
    """n = 1810 (too big for a dense Hessian here): scipy's eigsh at tol 1e-10 is the reference."""
    from scipy.sparse.linalg import eigsh

    model, inputs, targets = trained_digits_mlp(examples=256, hidden=24, steps=100)
    op = HessianOperator(model, inputs, targets, dtype=torch.float64, batch_size=100)
    start = np.random.default_rng(0).standard_normal(op.n)
    linear = op.as_linear_operator()
    top = np.sort(eigsh(linear, k=3, which="LA", tol=1e-10, v0=start, return_eigenvectors=False))
    bottom = np.sort(eigsh(linear, k=3, which="SA", tol=1e-10, v0=start, return_eigenvectors=False))
    result = extreme_eigenvalues(op, tol=1e-6, max_basis=20)  # restarts
    assert_relative([result["lambda_max"], result["lambda_min"]], [top[-1], bottom[0]], 1e-6)
    values, _, _ = top_eigenpairs(op, k=3, tol=1e-6)
    assert_relative(values, top[::-1], 1e-6)
    low, _, _ = bottom_eigenpairs(op, k=3, tol=1e-6)
    assert_relative(low, bottom, 1e-6)
    trace = hutchinson_trace(op, probes=100)
    density = spectral_density(op, runs=8, steps=40)
    slq_trace = op.n * (density["nodes"] * density["weights"]).sum(axis=1).mean()
    # The SLQ trace is Hutchinson with 8 normalized Rademacher probes: compare within errors.
    assert abs(slq_trace - trace["trace"]) <= 4 * trace["stderr"] * np.sqrt(100 / 8 + 1)


def test_both_ends_at_tol_1e_3_are_within_tol_of_eigsh_for_every_seed():
    """spectrum_ends's stop (each pair's residual within tol of its value) never passes a value
    off by more than tol, whatever the start vector."""
    from scipy.sparse.linalg import eigsh

    from llv.curvature import spectrum_ends

    model, inputs, targets = trained_digits_mlp(examples=128, hidden=16, steps=60)
    op = HessianOperator(model, inputs, targets, dtype=torch.float64)
    linear = op.as_linear_operator()
    top = eigsh(linear, k=1, which="LA", tol=1e-12, return_eigenvectors=False)[0]
    bottom = eigsh(linear, k=1, which="SA", tol=1e-12, return_eigenvectors=False)[0]
    for seed in range(4):
        ends = spectrum_ends(op, 1, 1, tol=1e-3, seed=seed)
        assert ends["converged"]
        assert abs(ends["top"][0] - top) <= 1e-3 * abs(top)
        assert abs(ends["bottom"][0] - bottom) <= 1e-3 * abs(bottom)
        assert np.all(ends["error_bounds"] <= 1e-3)  # the stopping test's bounds, relative
        assert np.all(ends["error_bounds"] <= ends["residuals"])  # never looser than the Ritz pair's


def test_curvature_along_is_d_h_d_forward_over_forward(dense_case):
    """vᵀHv from two nested forward-mode passes equals vᵀ(Hv) and the dense Hessian's form."""
    op, hessian = dense_case
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(op.n, generator=generator, dtype=torch.float64).to(op.dtype)
        dense = float(v.double() @ hessian.double() @ v.double())
        assert op.curvature_along(v) == pytest.approx(dense, rel=1e-9, abs=1e-12)
    before = op.num_hvp
    whole = op.curvature_along(v)
    assert op.num_hvp == before  # not a Hessian-vector product
    assert op.curvature_along(v, examples_per_pass=3) == pytest.approx(whole, rel=1e-12)
