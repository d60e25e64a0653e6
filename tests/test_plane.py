"""The plane through three models (``llv.directions(kind="plane")``): its vertices are the
models themselves, and the orthogonalized plane is the same plane in other coordinates."""

import numpy as np
import pytest
import torch
from nets import TinyConvBN

import llv
from llv.api import point_metrics
from llv.errors import LlvError


def _model(seed: int) -> TinyConvBN:
    torch.manual_seed(seed)
    model = TinyConvBN()
    with torch.no_grad():  # each model its own BatchNorm statistics
        model.bn.running_mean.add_(0.2 * torch.randn(3))
        model.bn.running_var.mul_(1 + 0.5 * torch.rand(3))
    return model


@pytest.fixture(scope="module")
def three():
    g = torch.Generator().manual_seed(5)
    data = (torch.randn(40, 1, 4, 4, generator=g), torch.randint(0, 3, (40,), generator=g))
    return [_model(s) for s in (0, 1, 2)], data


def _loss_at(model, data, plane, u: float, v: float) -> float:
    s = llv.surface(model, data, x=(u, u, 1), y=(v, v, 1), directions=plane, type="states",
                    progress=False, batch_size=16)
    return float(s["train_loss"][0, 0])


def test_plain_plane_vertices_are_the_three_models(three):
    (a, b, c), data = three
    plane = llv.directions(a, "plane", targets=(b, c.state_dict()), type="states")
    assert plane.attrs["kind"] == "plane"
    np.testing.assert_array_equal(plane.attrs["plane_coordinates"], [[0, 0], [1, 0], [0, 1]])
    s = llv.surface(a, data, x=(0, 1, 2), y=(0, 1, 2), directions=plane, type="states",
                    progress=False, batch_size=16)
    own = [point_metrics(m, data, batch_size=16)["train_loss"] for m in (a, b, c)]
    assert len(set(np.round(own, 4))) == 3  # three different models
    # value[iy, ix] at (x[ix], y[iy]): A (0, 0), B (1, 0), C (0, 1)
    got = [s["train_loss"][0, 0], s["train_loss"][0, 1], s["train_loss"][1, 0]]
    np.testing.assert_allclose(got, own, rtol=0, atol=1e-6)


def test_orthogonalized_plane_is_the_same_plane(three):
    (a, b, c), data = three
    plain = llv.directions(a, "plane", targets=(b, c), type="states")
    ortho = llv.directions(a, "plane", targets=(b, c), type="states", orthogonalize=True)
    fx, fy = ortho.flat().double()
    assert float(fx.norm()) == pytest.approx(1.0, abs=1e-6)
    assert float(fy.norm()) == pytest.approx(1.0, abs=1e-6)
    assert abs(float(fx @ fy)) < 1e-6
    corners = np.asarray(ortho.attrs["plane_coordinates"])
    own = [point_metrics(m, data, batch_size=16)["train_loss"] for m in (a, b, c)]
    for (u, v), loss in zip(corners, own):  # the stored coordinates are the three models
        assert _loss_at(a, data, ortho, u, v) == pytest.approx(loss, abs=1e-6)
    # the same physical points A + α(B − A) + β(C − A), in both coordinates
    for alpha, beta in [(0.5, 0.5), (-0.3, 0.8), (1.2, -0.4)]:
        u, v = alpha * corners[1] + beta * corners[2]
        assert _loss_at(a, data, ortho, u, v) == pytest.approx(
            _loss_at(a, data, plain, alpha, beta), abs=1e-5)


def test_plane_through_three_models_on_one_line_is_refused(three):
    (a, b, _), _ = three
    twice = {k: 2 * v - a.state_dict()[k] if v.is_floating_point() else v
             for k, v in b.state_dict().items()}  # A + 2(B − A): on the line through A and B
    with pytest.raises(LlvError, match="one line"):
        llv.directions(a, "plane", targets=(b, twice), type="states", orthogonalize=True)
    with pytest.raises(LlvError, match="targets"):
        llv.directions(a, "plane", targets=(b,))


def test_figures_mark_the_three_models(three):
    (a, b, c), data = three
    from llv.curves import mark_points

    plane = llv.directions(a, "plane", targets=(b, c), orthogonalize=True)
    s = llv.surface(a, data, x=(-1, 4, 5), y=(-1, 4, 5), directions=plane, progress=False, batch_size=16)
    ax = mark_points(s.plot("contour"), s)
    marks = {t.get_text(): t.xy for t in ax.texts if t.get_text() in ("A", "B", "C")}
    np.testing.assert_allclose([marks[k] for k in "ABC"], plane.attrs["plane_coordinates"])


def test_cli_surface_over_the_plane_through_three_checkpoints(tmp_path):
    """``llv surface direction.kind=plane checkpoint2= checkpoint3=`` (states): the vertices are
    the three checkpoints' own losses, and their coordinates are stored with the result."""
    import h5py
    from conftest import save_tiny_checkpoint, tiny_overrides

    from llv.checkpoint import load_into
    from llv.config import compose
    from llv.data import load_eval_data
    from llv.models import build_model
    from llv.tasks import surface as surface_task

    paths = [save_tiny_checkpoint(tmp_path, seed=s, name=f"{s}.pt") for s in (0, 1, 2)]
    cfg = compose("surface", [*tiny_overrides(tmp_path), f"checkpoint={paths[0]}", f"checkpoint2={paths[1]}",
                              f"checkpoint3={paths[2]}", "direction.kind=plane", "direction.type=states",
                              "grid.x=0:1:2", "grid.y=0:1:2", "probe=false"])
    with h5py.File(surface_task.run(cfg), "r") as f:
        loss = f["train_loss"][()]
        np.testing.assert_array_equal(f.attrs["plane_coordinates"], [[0, 0], [1, 0], [0, 1]])
    data = load_eval_data(cfg.dataset, "train")
    own = []
    for path in paths:
        model = build_model(cfg.model)
        load_into(model, path)
        own.append(point_metrics(model, (data.inputs, data.targets), batch_size=16)["train_loss"])
    np.testing.assert_allclose([loss[0, 0], loss[0, 1], loss[1, 0]], own, rtol=0, atol=1e-6)


def test_figures_of_a_plane_surface_mark_the_three_models():
    import matplotlib

    matplotlib.use("Agg")
    import torch

    import llv

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
              for _ in range(3)]
    data = (torch.randn(20, 3), torch.randint(0, 2, (20,)))
    plane = llv.directions(models[0], "plane", targets=models[1:])
    s = llv.surface(models[0], data, x=(-0.5, 1.5, 5), y=(-0.5, 1.5, 5), directions=plane, progress=False)
    ax = s.plot("contour")
    labels = {t.get_text() for t in ax.texts}
    assert {"A", "B", "C"} <= labels
