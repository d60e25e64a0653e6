"""Low-loss curves between two minima (``llv.connect``, Garipov et al. 2018): a trained curve
has a lower barrier than the line, its ends are the two models, it is exact on a quadratic, and
a killed training resumes to the same bits."""

import numpy as np
import pytest
import torch
from nets import TinyConvBN
from torch import nn

import llv
from llv.api import point_metrics
from llv.curves import Connection, barrier, connect, path_coefficients


def _bits(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


@pytest.fixture(scope="module")
def digits():
    """Two small MLPs on 8x8 digits trained from different seeds: two different minima."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data[:300] / 16, dtype=torch.float32)
    y = torch.tensor(bunch.target[:300])
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
        opt = torch.optim.Adam(model.parameters(), 0.02)
        for _ in range(15):
            for i in range(0, 300, 100):
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
                opt.step()
        models.append(model)
    return models, (x, y)


def test_path_coefficients_are_the_curves():
    t = np.linspace(0, 1, 11)
    bezier = path_coefficients("bezier", t)
    np.testing.assert_allclose(bezier.sum(axis=1), 1.0)
    np.testing.assert_allclose(bezier[:, 1], 2 * t * (1 - t))
    # with θ_M at the midpoint (where training starts) both curves are the line
    for path in ("bezier", "polychain"):
        c = path_coefficients(path, t)
        np.testing.assert_allclose(c[:, [0, 2]] + 0.5 * c[:, [1]], path_coefficients("line", t)[:, [0, 2]],
                                   atol=1e-15)
    chain = path_coefficients("polychain", t)  # the bend is at M, reached at t = 1/2
    np.testing.assert_array_equal(chain[5], [0.0, 1.0, 0.0])
    np.testing.assert_allclose(chain[2], [0.6, 0.4, 0.0])
    assert barrier([2.0, 5.0, 4.0]) == 2.0


@pytest.mark.parametrize("path", ["bezier", "polychain"])
def test_trained_curve_has_a_lower_barrier_and_ends_at_the_models(digits, path, tmp_path):
    (a, b), data = digits
    before = _bits(a) + _bits(b)
    c = llv.connect(a, b, {"train": data}, path=path, epochs=8, lr=0.01, optimizer="adam", batch_size=100,
                points=21, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(before, _bits(a) + _bits(b)))  # untouched
    assert callable(llv.connect) and callable(llv.extent)  # no submodule hides the API
    assert c.line_barrier > 0.05  # two different minima: the line crosses a barrier
    assert c.curve_barrier < 0.5 * c.line_barrier
    for end, model in ((0, a), (-1, b)):  # t = 0 and t = 1 are the models themselves
        own = point_metrics(model, data, batch_size=100)
        assert c.curve_loss[end] == own["train_loss"] and c.line_loss[end] == own["train_loss"]
        assert c.curve_acc[end] == own["train_acc"]
    assert c.barriers["curve_train_loss"] == c.curve_barrier
    # the curve goes through the control point at t = 1/2 (polychain) and stays in its plane
    control = llv.surface(a, data, x=(0, 0, 1), y=(1, 1, 1), batch_size=100, progress=False,
                          directions=llv.directions(a, "plane", targets=(b, c.control)))
    if path == "polychain":
        assert c.curve_loss[10] == pytest.approx(float(control["train_loss"][0, 0]), abs=1e-5)
    through = c.plane(a, b)  # orthonormal: the paths' coordinates are the same points
    for k in (4, 10, 16):
        for points, losses in ((through.curve, c.curve_loss), (through.line, c.line_loss)):
            u, v = points[k]
            at = llv.surface(a, data, x=(u, u, 1), y=(v, v, 1), directions=through.directions,
                             batch_size=100, progress=False)
            assert float(at["train_loss"][0, 0]) == pytest.approx(losses[k], abs=1e-5)
    drawn = c.plot().lines  # the one split: the curve (solid) and the line (dashed)
    assert [line.get_linestyle() for line in drawn] == ["-", "--"]
    np.testing.assert_array_equal(drawn[1].get_ydata(), c.line_loss)
    # saved and read back, the control point as a checkpoint
    c.save(tmp_path / "curve.h5")
    back = Connection.load(tmp_path / "curve.h5")
    np.testing.assert_array_equal(back.curve_loss, c.curve_loss)
    assert back.curve_barrier == c.curve_barrier and back.path == path
    from llv.checkpoint import load_state_dict

    state, _ = load_state_dict(tmp_path / "curve_control.pt")
    assert all(torch.equal(state[k], v) for k, v in c.control.items())


def test_bn_recompute_ends_equal_the_same_recomputation():
    g = torch.Generator().manual_seed(3)
    data = (torch.randn(48, 1, 4, 4, generator=g), torch.randint(0, 3, (48,), generator=g))
    torch.manual_seed(0)
    a = TinyConvBN()
    torch.manual_seed(1)
    b = TinyConvBN()
    c = connect(a, b, data, epochs=1, lr=0.01, batch_size=16, points=5, bn="recompute", progress=False)
    for end, model in ((0, a), (-1, b)):
        along = llv.directions(model, "random", ndim=1)
        same = llv.surface(model, data, x=(0, 0, 1), y=None, directions=along, bn="recompute",
                           fold=False, batch_size=16, progress=False)
        assert c.curve_loss[end] == pytest.approx(float(same["train_loss"][0]), abs=1e-6)
        assert c.line_loss[end] == c.curve_loss[end]
    stored = point_metrics(a, data, batch_size=16)["train_loss"]
    assert abs(c.curve_loss[0] - stored) > 1e-4  # the recomputation did change the statistics


def test_curve_on_a_convex_quadratic_is_below_the_line_and_optimal():
    """mse of a linear model: loss(θ) is quadratic. With ends θ* ± u + v (u, v in different
    output rows, so L(A) = L(B)), E_t L(θ(t)) is least for θ_M = θ* + v − 2.5 v
    (δ = −E[w]/E[w²]·v with w = 2t(1 − t)), whose curve lies below the line for every t."""
    g = torch.Generator().manual_seed(0)
    n = 16
    x = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    augmented = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1)
    star = torch.linalg.lstsq(augmented, y).solution.T
    u, v = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)

    def linear(sign: float) -> nn.Linear:
        model = nn.Linear(4, 2).double()
        p = star.clone()
        p[0] += sign * u
        p[1] += v
        with torch.no_grad():
            model.weight.copy_(p[:, :4])
            model.bias.copy_(p[:, 4])
        return model

    c = connect(linear(1), linear(-1), (x, y), loss="mse", epochs=800, lr=0.01, batch_size=n,
                points=41, bn="stored", precision="fp64", progress=False)
    assert np.all(c.curve_loss <= c.line_loss + 1e-12)
    assert np.all(c.curve_loss[1:-1] < c.line_loss[1:-1])
    trained = torch.cat([c.control["weight"], c.control["bias"][:, None]], 1)
    optimal = star.clone()
    optimal[1] -= 1.5 * v
    assert float((trained - optimal).abs().max()) < TOLERANCE_QUADRATIC * float(v.abs().max())


TOLERANCE_QUADRATIC = 0.05  # SGD noise of the t drawn per step (0.032 seen)


class Killed(Exception):
    pass


def test_killed_curve_training_resumes_bit_for_bit(tmp_path):
    """SGD with momentum and dropout: every random stream and the optimizer state resume."""
    g = torch.Generator().manual_seed(4)
    data = (torch.randn(60, 6, generator=g), torch.randint(0, 3, (60,), generator=g))

    def net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))

    a, b = net(0), net(1)
    calls = {"n": 0}

    def ce(outputs, batch):
        calls["n"] += 1
        if calls["n"] > 2 * 4 + 2:  # killed in the third epoch (4 batches an epoch)
            raise Killed
        return nn.functional.cross_entropy(outputs, batch[1], reduction="none")

    options = dict(epochs=5, lr=0.05, batch_size=16, points=7, seed=3, progress=False)
    calls["n"] = -10**9
    whole = connect(a, b, data, loss=ce, **options)
    calls["n"] = 0
    with pytest.raises(Killed):
        connect(a, b, data, loss=ce, checkpoint_dir=tmp_path, **options)
    assert sorted(p.name for p in tmp_path.glob("curve_epoch_*.pt")) == ["curve_epoch_001.pt",
                                                                         "curve_epoch_002.pt"]
    calls["n"] = -10**9  # no more kills
    resumed = connect(a, b, data, loss=ce, checkpoint_dir=tmp_path, **options)
    assert all(torch.equal(resumed.control[k], whole.control[k]) for k in whole.control)
    np.testing.assert_array_equal(resumed.curve_loss, whole.curve_loss)
    np.testing.assert_array_equal(resumed.history, whole.history)


def test_cli_interpolate_trains_a_curve_and_resumes_it(tmp_path):
    """``llv interpolate path=bezier curve.*``: curve.h5 whose ends are the two checkpoints
    (curve.bn=stored: their own statistics), a control point, epoch checkpoints; the same
    command after a kill in the last epoch continues from them to the same bits."""
    from conftest import save_tiny_checkpoint, tiny_overrides

    from llv.checkpoint import load_into
    from llv.config import compose
    from llv.data import load_eval_data
    from llv.models import build_model
    from llv.tasks import interpolate

    a = save_tiny_checkpoint(tmp_path, seed=0, name="a.pt")
    b = save_tiny_checkpoint(tmp_path, seed=1, name="b.pt")
    out = tmp_path / "run"
    cfg = compose("interpolate", [*tiny_overrides(tmp_path), f"checkpoint={a}", f"checkpoint2={b}",
                                  "path=bezier", "curve.epochs=3", "curve.batch_size=16", "curve.points=5",
                                  "curve.bn=stored", f"out={out}"])
    first = Connection.load(interpolate.run(cfg.copy()))
    assert sorted(p.name for p in (out / "curve").iterdir()) == [f"curve_epoch_00{e}.pt" for e in (1, 2, 3)]
    assert (out / "curve_control.pt").is_file() and len(first.history) == 3
    for end, path in ((0, a), (-1, b)):
        model = build_model(cfg.model)
        load_into(model, path)
        for split in ("train", "test"):
            data = load_eval_data(cfg.dataset, split)
            own = point_metrics(model, (data.inputs, data.targets), batch_size=16)["train_loss"]
            assert first.curve[f"{split}_loss"][end] == pytest.approx(own, abs=1e-6)
    (out / "curve" / "curve_epoch_003.pt").unlink()  # killed during the last epoch
    (out / "curve.h5").unlink()
    kept = (out / "curve" / "curve_epoch_002.pt").stat().st_mtime_ns
    again = Connection.load(interpolate.run(cfg.copy()))
    assert (out / "curve" / "curve_epoch_002.pt").stat().st_mtime_ns == kept  # resumed, not redone
    assert all(torch.equal(again.control[k], first.control[k]) for k in first.control)
    np.testing.assert_array_equal(again.curve_loss, first.curve_loss)


def test_cli_curve_plane_computes_with_the_eval_keys(tmp_path):
    """``curve.plane=n`` evaluates its surface with ``eval.*`` as every other grid does: the
    precision, fold and streams given are those the plane's file records."""
    import h5py
    from conftest import save_tiny_checkpoint, tiny_overrides

    from llv.config import compose
    from llv.tasks import interpolate

    a = save_tiny_checkpoint(tmp_path, seed=0, name="a.pt")
    b = save_tiny_checkpoint(tmp_path, seed=1, name="b.pt")
    out = tmp_path / "run"
    cfg = compose("interpolate", [*tiny_overrides(tmp_path), f"checkpoint={a}", f"checkpoint2={b}",
                                  "path=bezier", "curve.epochs=1", "curve.batch_size=16", "curve.points=3",
                                  "curve.plane=3", "curve.bn=stored", "eval.precision=fp64", "eval.fold=false",
                                  "eval.streams=2", f"out={out}"])
    interpolate.run(cfg.copy())
    with h5py.File(out / "curve_plane.h5") as f:
        assert f.attrs["precision"] == "fp64"
        assert int(f.attrs["bn_folded"]) == 0
        assert int(f.attrs["streams"]) == 2
