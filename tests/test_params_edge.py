"""Edge cases of the parameter space: 0-dim tensors and weight-tied models.

Every number is checked against a brute-force loss: the tensors set by hand and the loss
computed with ``F.cross_entropy``.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llv
from llv.direction import normalize
from llv.params import ParameterSpace, flatten, unflatten, values_of

TOL = 1e-6


class Temperature(nn.Module):
    """A linear classifier with a learnable 0-dim temperature (and, optionally, a 0-dim buffer)."""

    def __init__(self, buffer: bool = False):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.t = nn.Parameter(torch.tensor(1.3))
        if buffer:
            self.register_buffer("scale", torch.tensor(0.7))
        else:
            self.scale = None

    def forward(self, x):
        out = self.fc(x) * self.t
        return out if self.scale is None else out * self.scale


def temperature_loss(tensors: dict, x, y) -> torch.Tensor:
    out = F.linear(x, tensors["fc.weight"], tensors["fc.bias"]) * tensors["t"]
    if "scale" in tensors:
        out = out * tensors["scale"]
    return F.cross_entropy(out, y)


class LM(nn.Module):
    """Embedding and output layer share one weight."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(16, 8)
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, input_ids):
        return self.head(torch.tanh(self.emb(input_ids)))


def lm_loss(weight: torch.Tensor, ids: torch.Tensor) -> float:
    logits = F.linear(torch.tanh(F.embedding(ids, weight)), weight)
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1)))


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=generator)
    return x, y


def _model(seed: int, buffer: bool = False) -> Temperature:
    torch.manual_seed(seed)
    return Temperature(buffer).double()


def _state(model: nn.Module) -> dict:
    return {n: t.detach().clone() for n, t in model.state_dict().items()}


# ------------------------------------------------------------------------------ 0-dim tensors


def test_flatten_unflatten_round_trip_with_zero_dim():
    space = ParameterSpace.of(Temperature(buffer=True), "states")
    assert space.names == ["t", "scale", "fc.weight", "fc.bias"]
    assert space.shapes[0] == torch.Size([]) and space.numel == 1 + 1 + 12 + 3
    values = space.values(Temperature(buffer=True))
    flat = flatten(space, values)
    assert flat.shape == (17,)
    back = unflatten(space, flat)
    assert back["t"].shape == torch.Size([]) and back["scale"].shape == torch.Size([])
    for name, value in zip(space.names, values):
        assert torch.equal(back[name], value)
    rows = unflatten(space, torch.stack([flat, 2 * flat, 3 * flat]))
    assert rows["t"].shape == (3,) and rows["fc.weight"].shape == (3, 3, 4)
    assert torch.equal(rows["t"], torch.stack([values[0], 2 * values[0], 3 * values[0]]))


def test_only_zero_dim_tensors():
    model = nn.Module()
    model.a = nn.Parameter(torch.tensor(2.0))
    model.b = nn.Parameter(torch.tensor(-1.0))
    space = ParameterSpace.of(model)
    assert unflatten(space, torch.tensor([5.0, 6.0])) == {"a": torch.tensor(5.0), "b": torch.tensor(6.0)}
    assert unflatten(space, torch.tensor([[5.0, 6.0]]))["b"].shape == (1,)


@pytest.mark.parametrize("norm", ["filter", "layer", "weight", "dfilter", "dlayer", "none"])
def test_normalize_treats_zero_dim_like_a_bias(norm):
    w, d = torch.tensor(1.5), torch.tensor(0.3)
    assert torch.equal(normalize([d], [w], norm, "biasbn")[0], torch.tensor(0.0))
    assert torch.equal(normalize([d], [w], norm, "none")[0], torch.tensor(1.5))


@pytest.mark.parametrize("ignore", ["biasbn", "none"])
def test_surface_with_temperature_matches_brute_force(data, ignore):
    model = _model(0)
    s = llv.surface(model, data, x=(-1, 1, 3), y=(-0.5, 0.5, 3), ignore=ignore, precision="fp64",
                    progress=False, compile="off")
    theta = _state(model)
    dx, dy = (dict(zip(s.directions.space.names, axis)) for axis in s.directions.axes)
    assert dx["t"].shape == torch.Size([])
    expected_t = 0.0 if ignore == "biasbn" else 1.3  # like a bias: zero, or θ itself
    assert float(dx["t"]) == pytest.approx(expected_t) and float(dy["t"]) == pytest.approx(expected_t)
    loss = s["train_loss"]
    for iy, b in enumerate(s.y):
        for ix, a in enumerate(s.x):
            point = {n: theta[n] + float(a) * dx[n].double() + float(b) * dy[n].double() for n in theta}
            assert abs(loss[iy, ix] - float(temperature_loss(point, *data))) < TOL
    assert torch.equal(_state(model)["t"], theta["t"])  # the model is not modified


@pytest.mark.parametrize("type", ["weights", "states"])
def test_interpolate_with_zero_dim_tensors_matches_brute_force(data, type):
    model_a, model_b = _model(1, buffer=True), _model(2, buffer=True)
    with torch.no_grad():
        model_b.t.fill_(0.4)
        model_b.scale.fill_(1.9)
    s = llv.interpolate(model_a, model_b, data, alphas=(-0.5, 1.5, 5), type=type, precision="fp64",
                        progress=False, compile="off")
    a, b = _state(model_a), _state(model_b)
    moved = set(ParameterSpace.of(model_a, type).names)
    assert ("scale" in moved) == (type == "states")
    for alpha, value in zip(s.x, s["train_loss"]):
        point = {n: (1 - alpha) * a[n] + alpha * b[n] if n in moved else a[n] for n in a}
        assert abs(value - float(temperature_loss(point, *data))) < TOL


def test_hessian_with_temperature_matches_brute_force(data):
    model = _model(3)
    names = [n for n, _ in model.named_parameters()]
    theta = _state(model)
    shapes = [theta[n].shape for n in names]
    sizes = [theta[n].numel() for n in names]

    def flat_loss(vector):
        parts = dict(zip(names, (p.reshape(s) for p, s in zip(vector.split(sizes), shapes))))
        return temperature_loss(parts, *data)

    point = torch.cat([theta[n].reshape(-1) for n in names])
    dense = torch.autograd.functional.hessian(flat_loss, point)
    h = llv.hessian(model, data, dtype=torch.float64)
    assert h.dimension == 16
    assert abs(h.loss() - float(flat_loss(point))) < TOL
    assert torch.allclose(h.operator.to_dense(), dense, atol=TOL, rtol=0)
    v = torch.linspace(-1, 1, 16, dtype=torch.float64)
    assert torch.allclose(h.matvec(v), dense @ v, atol=TOL, rtol=0)
    top = h.eigenvalues(which="extremes", tol=1e-10).values
    exact = torch.linalg.eigvalsh(dense)
    assert abs(float(top[0]) - float(exact[-1])) < TOL and abs(float(top[1]) - float(exact[0])) < TOL


def test_hessian_map_with_temperature_matches_brute_force(data):
    model = _model(4)
    s = llv.hessian_map(model, data, x=(-1, 1, 3), y=None, ignore="none", dtype=torch.float64,
                        tol=1e-10, progress=False)
    theta = _state(model)
    d = dict(zip(s.directions.space.names, s.directions.axes[0]))
    for alpha, value in zip(s.x, s["train_loss"]):
        point = {n: theta[n] + float(alpha) * d[n].double() for n in theta}
        assert abs(value - float(temperature_loss(point, *data))) < TOL


# ------------------------------------------------------------------------------ tied weights


def test_states_space_drops_tied_aliases():
    model = LM()
    states = ParameterSpace.of(model, "states")
    assert states.names == ParameterSpace.of(model, "weights").names == ["emb.weight"]
    assert states.numel == 16 * 8
    # a state dict of a tied model (both keys) or of an untied one still loads by name
    assert torch.equal(values_of(model.state_dict(), states)[0], model.emb.weight)
    # untied models keep every entry, in state_dict order
    untied = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert ParameterSpace.of(untied, "states").names == list(untied.state_dict())


@pytest.mark.parametrize("as_state_dict", [False, True])
def test_interpolate_tied_language_models(as_state_dict):
    torch.manual_seed(5)
    model_a, model_b = LM().double(), LM().double()
    ids = torch.randint(0, 16, (8, 5), generator=torch.Generator().manual_seed(1))
    batches = [{"input_ids": ids, "labels": ids}]
    other = model_b.state_dict() if as_state_dict else model_b
    s = llv.interpolate(model_a, other, batches, alphas=(0, 1, 3), precision="fp64", progress=False,
                        compile="off")
    assert s.x.tolist() == [0.0, 0.5, 1.0]
    wa, wb = model_a.emb.weight.detach(), model_b.emb.weight.detach()
    expected = [lm_loss(wa, ids), lm_loss(0.5 * (wa + wb), ids), lm_loss(wb, ids)]
    np.testing.assert_allclose(s["train_loss"], expected, atol=TOL, rtol=0)
    with torch.no_grad():  # the models' own losses, through their forward
        own = [float(F.cross_entropy(m(ids).reshape(-1, 16), ids.reshape(-1))) for m in (model_a, model_b)]
    np.testing.assert_allclose(s["train_loss"][[0, 2]], own, atol=TOL, rtol=0)
