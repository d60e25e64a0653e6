"""llv trajectory: PCA of a path against known planes and a dense SVD, and a real train run."""

import csv
import logging

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from llv import direction as dirs
from llv import path_pca as tr
from llv.checkpoint import load_state_dict
from llv.config import compose
from llv.console import LlvError
from llv.params import ParameterSpace, flatten, unflatten
from llv.tasks import trajectory as trajectory_task

# ------------------------------------------------------------------------------ synthetic paths


def tiny_space():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    space = ParameterSpace.of(model, "weights")
    return space, flatten(space, space.values(model)).double()


def matrix_mask(space, ignore="biasbn"):
    """True on the flat entries PCA uses (tensors of more than one dimension for biasbn)."""
    return torch.cat([torch.full((torch.Size(s).numel(),), ignore == "none" or len(s) > 1)
                      for s in space.shapes])


def write_path(tmp_path, space, points):
    """One checkpoint file per flat parameter vector, in path order."""
    paths = []
    for epoch, point in enumerate(points):
        state = {k: v.float().clone() for k, v in unflatten(space, point).items()}
        path = tmp_path / f"epoch_{epoch:03d}.pt"
        torch.save({"state_dict": state, "epoch": epoch}, path)
        paths.append(path)
    return paths


def plane_path(space, final, a, b, noise=1e-3, bias_drift=5.0, seed=1):
    """θ_i = θ_n + a_i u + b_i v + ε_i (ε_n = 0), u ⟂ v unit on the matrix entries; biases drift."""
    generator = torch.Generator().manual_seed(seed)
    mask = matrix_mask(space)
    basis = torch.randn(len(final), 2, generator=generator, dtype=torch.float64) * mask[:, None]
    u, v = torch.linalg.qr(basis)[0].T
    points = []
    for i, (ai, bi) in enumerate(zip(a, b, strict=True)):
        eps = noise * torch.randn(len(final), generator=generator, dtype=torch.float64)
        eps = eps if i < len(a) - 1 else torch.zeros_like(eps)
        drift = bias_drift * (len(a) - 1 - i) * (~mask).double()  # large, but on 1-D tensors only
        points.append(final + ai * u + bi * v + eps + drift)
    return points, u, v


def coefficients(n=10):
    t = np.arange(n + 1) / n
    return 3 * (1 - t) ** 2, 1.2 * np.sin(np.pi * t)  # a curved path ending at 0


def principal_axes(a, b, center):
    """The PCA axes of the 2-D coefficients (with θ_n's zero row), largest first."""
    x = np.stack([a, b], axis=1)
    if center:
        x = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x)
    return vectors[:, ::-1]


def flat_axes(result):
    return result.directions.flat(torch.float64)


@pytest.mark.parametrize("center", [False, True], ids=["uncentered", "centered"])
def test_a_path_in_a_plane_is_recovered_with_its_coordinates(tmp_path, center):
    space, final = tiny_space()
    a, b = coefficients()
    points, u, v = plane_path(space, final, a, b)
    result = tr.path_pca(space, write_path(tmp_path, space, points), center=center)
    x, y = flat_axes(result)

    assert result.explained_variance_ratio.sum() >= 0.99
    basis = torch.stack([x, y])
    for true in (u, v):  # the true plane lies in the recovered one
        assert torch.linalg.vector_norm(basis @ true) >= 0.99
    # Each axis is the convention's principal axis of (a, b): 28° apart between the conventions.
    axes = principal_axes(a, b, center)
    other = principal_axes(a, b, not center)
    for k, recovered in enumerate((x, y)):
        expected = axes[0, k] * u + axes[1, k] * v
        assert abs(float(recovered @ expected)) >= 0.99
        assert abs(float(recovered @ (other[0, k] * u + other[1, k] * v))) < 0.9
    # Coordinates: (a, b) turned onto those axes (up to each axis's sign); θ_n at exactly (0, 0).
    expected = np.stack([a, b], axis=1) @ axes
    signs = np.sign(np.sum(expected * result.coordinates, axis=0))
    np.testing.assert_allclose(result.coordinates, expected * signs, atol=0.02)
    assert result.coordinates[-1].tolist() == [0.0, 0.0]
    # Unit, orthogonal, zero on the biases that drifted most, and the stored coordinates are
    # the projections θ_i − θ_n on the stored (float32) directions.
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(2), atol=1e-6)
    assert float(basis[:, ~matrix_mask(space)].abs().max()) == 0.0
    rows = torch.stack([(p - final) * matrix_mask(space) for p in points])
    np.testing.assert_allclose((rows @ basis.T).numpy(), result.coordinates, atol=1e-5)
    # The farthest point along each axis is on its positive side.
    for k in range(2):
        assert result.coordinates[np.argmax(np.abs(result.coordinates[:, k])), k] > 0


def test_ignore_none_lets_the_drifting_biases_into_the_directions(tmp_path):
    space, final = tiny_space()
    a, b = coefficients()
    points, _, _ = plane_path(space, final, a, b, bias_drift=5.0)
    files = write_path(tmp_path, space, points)
    kept = tr.path_pca(space, files, ignore="none")
    x = flat_axes(kept)[0]
    one_d = ~matrix_mask(space)
    # The bias drift is a straight line of length 5 * 10 * sqrt(#biases): the 1st axis follows it.
    drift = one_d.double() / one_d.double().norm()
    assert abs(float(x @ drift)) > 0.95
    assert kept.directions.attrs["ignore"] == "none"


@pytest.mark.parametrize("center", [False, True], ids=["uncentered", "centered"])
def test_streamed_gram_matrix_equals_a_dense_svd(tmp_path, center):
    space, final = tiny_space()
    generator = torch.Generator().manual_seed(3)
    steps = torch.randn(8, len(final), generator=generator, dtype=torch.float64) * 0.1
    points = [final + steps[i:].sum(0) for i in range(8)] + [final]  # a random walk into θ_n
    files = write_path(tmp_path, space, points)
    numel = int(matrix_mask(space).sum())
    streamed = tr.path_pca(space, files, center=center, memory_bytes=2 * (2 * 4 * numel))

    # Dense float64 reference from the files: M with θ_n's zero row, as scikit-learn would see it.
    def kept_flat(path):
        state = load_state_dict(path)[0]
        return torch.cat([state[n].double().reshape(-1) for n in space.names if state[n].dim() > 1])

    m = torch.stack([kept_flat(p) - kept_flat(files[-1]) for p in files]).numpy()
    if center:
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, svd_solver="full").fit(m)
        components, ratio = pca.components_, pca.explained_variance_ratio_
    else:
        _, s, vt = np.linalg.svd(m, full_matrices=False)
        components, ratio = vt[:2], s[:2] ** 2 / np.sum(s**2)
    got = flat_axes(streamed)[:, matrix_mask(space)].numpy()
    signs = np.sign(np.sum(got * components, axis=1))
    np.testing.assert_allclose(got, components * signs[:, None], atol=1e-6)
    np.testing.assert_allclose(streamed.explained_variance_ratio, ratio, rtol=1e-6)
    np.testing.assert_allclose(streamed.coordinates, m @ components.T * signs, atol=1e-6)
    # 8 rows in blocks of 2: every file is read at most (blocks + 1) times, and with room for all
    # rows exactly once.
    assert streamed.checkpoint_loads <= 1 + 8 * 5
    assert tr.path_pca(space, files, center=center).checkpoint_loads == len(files)


def test_a_straight_path_gets_an_orthogonal_second_axis_with_zero_coordinates(tmp_path, caplog):
    space, final = tiny_space()
    a = np.linspace(2.0, 0.0, 5)
    points, u, _ = plane_path(space, final, a, np.zeros(5), noise=0.0)
    with caplog.at_level(logging.WARNING, logger="llv"):
        result = tr.path_pca(space, write_path(tmp_path, space, points))
    x, y = flat_axes(result)
    assert abs(float(x @ u)) > 1 - 1e-6
    np.testing.assert_allclose((torch.stack([x, y]) @ torch.stack([x, y]).T).numpy(), np.eye(2),
                               atol=1e-6)
    assert result.explained_variance_ratio[0] > 1 - 1e-9
    np.testing.assert_allclose(result.coordinates[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(result.coordinates[:, 0]), a, atol=1e-6)
    assert "straight line" in caplog.text


def test_identical_checkpoints_and_short_paths_are_one_line_errors(tmp_path):
    space, final = tiny_space()
    with pytest.raises(LlvError, match="same weights"):
        tr.path_pca(space, write_path(tmp_path, space, [final] * 3))
    with pytest.raises(LlvError, match="at least 3"):
        tr.path_pca(space, write_path(tmp_path, space, [final + 1, final]))


def test_final_pt_ends_the_path_when_its_epoch_has_no_epoch_file(tmp_path):
    space, final = tiny_space()
    (tmp_path / "checkpoints").mkdir()
    for epoch, path in enumerate(write_path(tmp_path / "checkpoints", space, [final] * 3)):
        assert path.name == f"epoch_{epoch:03d}.pt"
    torch.save({"state_dict": {}, "epoch": 5}, tmp_path / "final.pt")
    rows = [("epoch", "lr"), *((e, 0.1) for e in range(6))]
    (tmp_path / "metrics.csv").write_text("\n".join(f"{e},{lr}" for e, lr in rows) + "\n")
    saved = tr.saved_epochs(tmp_path)
    assert list(saved) == [0, 1, 2, 5] and saved[5].name == "final.pt"
    write_path(tmp_path / "checkpoints", space, [final] * 6)  # epoch_005.pt now exists
    saved = tr.saved_epochs(tmp_path)
    assert list(saved) == [0, 1, 2, 3, 4, 5] and saved[5].name == "epoch_005.pt"


# ------------------------------------------------------------------------------ a real train run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-epoch MLP run on digits with the learning rate divided by 10 after epoch 2."""
    from llv.tasks.train import run as train

    root = tmp_path_factory.mktemp("trajectory")
    cfg = compose("train", ["model=mlp", "model.hidden=[16]", "train.epochs=4",
                            "train.milestones=[2]", f"out={root / 'train'}",
                            f"outputs={root / 'outputs'}", "device=cpu"])
    return train(cfg), root


def trajectory_overrides(run_dir, root, *extra):
    return [f"run={run_dir}", f"outputs={root / 'outputs'}", "device=cpu", "dist=none",
            "grid=11x11", "eval.max_samples=256", "plot=false", *extra]


def read(path):
    """Datasets and attrs of a result file."""
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}, dict(f.attrs)


def test_a_train_run_gives_the_path_its_lr_drops_and_the_surface_around_it(trained):
    run_dir, root = trained
    cfg = compose("trajectory", trajectory_overrides(run_dir, root, "plot=true"))
    projection = trajectory_task.run(cfg)
    values, attrs = read(projection)

    assert values["epochs"].tolist() == [0, 1, 2, 3, 4]  # one point per saved epoch
    assert len(values["proj_xcoord"]) == len(values["proj_ycoord"]) == 5
    assert (values["proj_xcoord"][-1], values["proj_ycoord"][-1]) == (0.0, 0.0)
    assert values["lr_drop_epochs"].tolist() == [2]  # the milestone
    with open(run_dir / "metrics.csv") as handle:
        rates = {int(r["epoch"]): float(r["lr"]) for r in csv.DictReader(handle)}
    assert rates[3] < rates[2] == rates[1]
    ratio = attrs["explained_variance_ratio"]
    assert len(ratio) == 2 and ratio[0] >= ratio[1] > 0 and 0.5 < ratio.sum() <= 1 + 1e-12
    assert attrs["surface_file"] == "surface.h5" and attrs["run"] == str(run_dir)

    # The stored coordinates are the checkpoints' weights (biases out) on the stored directions.
    from llv.models import build_model

    model = build_model(compose("train", ["model=mlp", "model.hidden=[16]"]).model)
    space = ParameterSpace.of(model, "weights")
    direction_file = projection.parent / "directions.h5"
    directions = dirs.load(direction_file, space, 2)
    assert directions.attrs["kind"] == "pca"
    np.testing.assert_allclose(directions.attrs["explained_variance_ratio_"], ratio)
    final = load_state_dict(run_dir / "checkpoints" / "epoch_004.pt")[0]
    path = zip(values["epochs"], values["proj_xcoord"], values["proj_ycoord"], strict=True)
    for epoch, x, y in path:
        state = load_state_dict(run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt")[0]
        got = [sum(float(((state[n] - final[n]) * d).sum())
                   for n, d in zip(space.names, axis, strict=True)) for axis in directions.axes]
        np.testing.assert_allclose(got, [x, y], atol=1e-5)

    # The surface covers the path's box (+20 % each side) on the run's model, at grid resolution,
    # widened by less than one step so that θ_n (0, 0) is a grid point: the summary's centre
    surface, surface_attrs = read(projection.parent / "surface.h5")
    xs, ys = surface["xcoordinates"], surface["ycoordinates"]
    assert len(xs) == len(ys) == 11 and surface["done"].all()
    for coords, path in ((xs, values["proj_xcoord"]), (ys, values["proj_ycoord"])):
        width = path.max() - path.min()
        lo, hi = path.min() - 0.2 * width, path.max() + 0.2 * width
        step = coords[1] - coords[0]
        assert coords[0] <= lo + 1e-12 and coords[-1] >= hi - 1e-12
        assert coords[-1] - coords[0] < (hi - lo) + step
        assert np.abs(coords).min() <= 1e-12 * (hi - lo)
    centre = (int(np.abs(ys).argmin()), int(np.abs(xs).argmin()))
    assert surface_attrs["summary_train_centre_loss"] == surface["train_loss"][centre]
    assert surface_attrs["model"] == "mlp" and surface_attrs["kind"] == "pca"
    assert np.isfinite(surface["train_loss"]).all()
    assert (projection.parent / "projection_trajectory.png").stat().st_size > 1000


def test_chosen_epochs_bad_runs_and_1d_grids_are_one_line_errors(trained, tmp_path):
    run_dir, root = trained

    def run(*extra, run=run_dir):
        return trajectory_task.run(compose("trajectory", trajectory_overrides(run, root, *extra)))

    with pytest.raises(LlvError, match="does not exist"):
        run(run=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlvError, match="has no checkpoints"):
        run(run=tmp_path / "empty")
    with pytest.raises(LlvError, match="at least 3 epochs"):
        run("trajectory.epochs=[0,4]")
    with pytest.raises(LlvError, match=r"no checkpoint for epoch\(s\) 9"):
        run("trajectory.epochs=[0,1,9]")
    with pytest.raises(LlvError, match="needs a 2D grid"):
        run("grid=1d_51")


def test_chosen_epochs_without_a_surface_end_at_their_own_last_epoch(trained, tmp_path):
    run_dir, root = trained
    cfg = compose("trajectory", trajectory_overrides(run_dir, root, "trajectory.epochs=[0,1,2]",
                                                     "trajectory.surface=false", f"out={tmp_path}"))
    values, attrs = read(trajectory_task.run(cfg))
    assert values["epochs"].tolist() == [0, 1, 2]
    assert (values["proj_xcoord"][-1], values["proj_ycoord"][-1]) == (0.0, 0.0)
    assert attrs["surface_file"] == "" and not (tmp_path / "surface.h5").exists()
    final = load_state_dict(run_dir / "checkpoints" / "epoch_002.pt")[0]
    first = load_state_dict(run_dir / "checkpoints" / "epoch_000.pt")[0]
    # |θ_0 − θ_2| over the weight matrices is the length of θ_0's projection when the path is a
    # triangle: three points always lie in a plane, so the two directions explain all of it.
    length = sum(float(((first[n] - final[n]) ** 2).sum())
                 for n in final if final[n].dim() > 1) ** 0.5
    np.testing.assert_allclose(np.hypot(values["proj_xcoord"][0], values["proj_ycoord"][0]), length,
                               rtol=1e-5)
    np.testing.assert_allclose(attrs["explained_variance_ratio"].sum(), 1.0, rtol=1e-6)


def test_an_interrupted_surface_resumes_with_the_same_directions(trained, tmp_path):
    run_dir, root = trained
    base = trajectory_overrides(run_dir, root, "grid.x=-1:1:5", "grid.y=-1:1:5", f"out={tmp_path}")
    trajectory_task.run(compose("trajectory", [*base, "stop_after_points=10"]))
    partial, _ = read(tmp_path / "surface.h5")
    assert 0 < partial["done"].sum() < 25
    digest = read(tmp_path / "directions.h5")[1]["sha256"]
    trajectory_task.run(compose("trajectory", base))
    resumed, _ = read(tmp_path / "surface.h5")
    assert resumed["done"].all() and read(tmp_path / "directions.h5")[1]["sha256"] == digest
    whole = trajectory_task.run(compose("trajectory", [*base[:-1], f"out={tmp_path / 'whole'}"]))
    np.testing.assert_allclose(resumed["train_loss"],
                               read(whole.parent / "surface.h5")[0]["train_loss"], rtol=1e-6)
