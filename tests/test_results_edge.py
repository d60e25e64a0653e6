"""Result objects at their edges: two surfaces saved in one folder keep their own directions,
a trajectory's projection saves and plots like the command line's, the documented submodules are
attributes of a fresh ``import llv``, and a trained curve of a weight-tied model is a checkpoint
that loads strictly."""

import subprocess
import sys
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import llv

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]


def small_problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    inputs = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(2))
    return model, (inputs, targets)


def attrs_of(path):
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


# ------------------------------------------------------------------------------ 1: directions beside results


def test_two_surfaces_saved_in_one_folder_keep_their_own_directions(tmp_path):
    model, data = small_problem()
    grid = dict(x=(-1, 1, 3), y=(-1, 1, 3), progress=False)
    sa = llv.surface(model, data, seed=0, **grid)
    sb = llv.surface(model, data, seed=1, **grid)
    assert sa.directions.digest() != sb.directions.digest()
    out = tmp_path / "out"
    out.mkdir()
    sa.save(out / "a.h5")
    sb.save(out / "b.h5")

    a, b = attrs_of(out / "a.h5"), attrs_of(out / "b.h5")
    assert a["dir_file"] == "directions.h5" and b["dir_file"] == "b.directions.h5"
    for attrs, s in ((a, sa), (b, sb)):  # each file names the file of its own directions
        assert attrs["direction_sha256"] == s.directions.digest()
        assert attrs_of(out / attrs["dir_file"])["sha256"] == s.directions.digest()
    for name, s in (("a.h5", sa), ("b.h5", sb)):
        back = llv.load(out / name)
        assert back.directions.digest() == s.directions.digest()
        assert back.direction_file == out / attrs_of(out / name)["dir_file"]

    # the same directions again: directions.h5 is kept, no second file is written
    again = llv.surface(model, data, seed=0, x=(-0.5, 0.5, 3), y=(-0.5, 0.5, 3), progress=False)
    again.save(out / "c.h5")
    assert attrs_of(out / "c.h5")["dir_file"] == "directions.h5"
    assert sorted(p.name for p in out.iterdir()) == ["a.h5", "b.directions.h5", "b.h5",
                                                    "c.h5", "directions.h5"]
    # a loaded result saved elsewhere takes its directions along
    moved = tmp_path / "moved"
    moved.mkdir()
    llv.load(out / "b.h5").save(moved / "b.h5")
    assert llv.load(moved / "b.h5").directions.digest() == sb.directions.digest()


def test_a_loaded_result_whose_directions_file_was_replaced_has_no_directions(tmp_path):
    model, data = small_problem()
    s = llv.surface(model, data, x=(-1, 1, 3), y=None, seed=0, progress=False)
    s.save(tmp_path / "s.h5")
    assert llv.load(tmp_path / "s.h5").directions.digest() == s.directions.digest()
    llv.directions(model, ndim=1, seed=5).save(tmp_path / "directions.h5")  # someone else's
    assert llv.load(tmp_path / "s.h5").directions is None
    (tmp_path / "directions.h5").unlink()
    back = llv.load(tmp_path / "s.h5")
    assert back.directions is None and back["train_loss"].shape == (3,)


def test_the_command_lines_surface_finds_its_directions(tmp_path):
    from conftest import save_tiny_checkpoint, tiny_overrides

    from llv.config import compose
    from llv.tasks import surface as surface_task

    checkpoint = save_tiny_checkpoint(tmp_path)
    cfg = compose("surface", [*tiny_overrides(tmp_path), f"checkpoint={checkpoint}", "grid.x=-1:1:3",
                              "grid.y=-1:1:3", "probe=false", "summary.cross_check=false",
                              f"out={tmp_path / 'cli'}"])
    path = surface_task.run(cfg)
    back = llv.load(path)
    assert back.direction_file.resolve() == (tmp_path / "cli" / "directions.h5").resolve()
    assert back.directions.digest() == attrs_of(path)["direction_sha256"]


# ------------------------------------------------------------------------------ 2: a projection saves and plots


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-epoch MLP run on digits with the learning rate divided by 10 after epoch 2."""
    from llv.config import compose
    from llv.tasks.train import run as train

    root = tmp_path_factory.mktemp("trajectory")
    cfg = compose("train", ["model=mlp", "model.hidden=[8]", "train.epochs=3", "train.milestones=[2]",
                            f"out={root / 'train'}", f"outputs={root / 'outputs'}", "device=cpu"])
    return train(cfg), root


def test_a_trajectory_projection_saves_the_command_lines_file_and_plots(trained, tmp_path):
    from llv.config import compose
    from llv.models import build_model
    from llv.tasks import trajectory as trajectory_task

    run_dir, root = trained
    cfg = compose("trajectory", [f"run={run_dir}", f"outputs={root / 'outputs'}", "device=cpu",
                                 "dist=none", "trajectory.surface=false", "plot=false",
                                 f"out={tmp_path / 'cli'}"])
    cli = trajectory_task.run(cfg)

    model = build_model(compose("train", ["model=mlp", "model.hidden=[8]"]).model)
    projection, directions = llv.trajectory(run_dir, model)
    assert isinstance(projection, llv.Projection)
    (tmp_path / "api").mkdir()
    path = projection.save(tmp_path / "api" / "projection.h5", directions=directions)

    with h5py.File(cli, "r") as f, h5py.File(path, "r") as g:
        assert set(g.keys()) == set(f.keys())
        for key in f:
            np.testing.assert_allclose(g[key][()], f[key][()], rtol=1e-6, atol=1e-7)
        layout = {"explained_variance_ratio", "singular_values", "center", "surface_file", "dir_file",
                  "ignore", "type"}
        assert layout <= set(g.attrs) and layout <= set(f.attrs)
        for key in ("center", "surface_file", "dir_file", "ignore", "type"):
            assert g.attrs[key] == f.attrs[key], key
    assert attrs_of(path)["dir_file"] == "directions.h5"
    assert llv.load(path.parent / "directions.h5").digest() == directions.digest()

    back = llv.load(path)
    assert isinstance(back, llv.Projection)
    np.testing.assert_array_equal(back.x, projection.x)
    np.testing.assert_array_equal(back.epochs, projection.epochs)
    assert back.lr_drop_epochs.tolist() == [2]

    ax = projection.plot()  # the path alone
    assert ax.get_xlabel().startswith("1st PC") and len(ax.lines) >= 3
    s = llv.surface(model, (torch.randn(32, 64), torch.randint(0, 10, (32,))), x=(-1, 1, 3),
                    y=(-1, 1, 3), directions=directions, progress=False)
    ax = back.plot(s, vmax=10.0)  # over a surface, as llv plot trajectory draws it
    assert len(ax.collections) > 0 and ax.get_ylabel().startswith("2nd PC")


# ------------------------------------------------------------------------------ 3: submodules after import llv


def test_documented_submodules_are_attributes_of_a_fresh_import():
    code = """
import sys
import llv
assert "torch" not in sys.modules, "import llv imported torch"
assert llv.curves.Connection.load and llv.curves.mark_points and llv.curves.plot_curve_plane
assert llv.api.point_metrics and llv.plot.make_plot and llv.plot.draw and llv.distributed.init
assert llv.data.load_eval_data and llv.losses.logits_of and llv.models.resnet.ResNet
assert callable(llv.hessian) and callable(llv.connect)  # the functions, not modules
try:
    llv.no_such_module
except AttributeError as exc:
    assert "no_such_module" in str(exc)
else:
    raise AssertionError("llv.no_such_module")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------------------ 4: tied weights in a curve


class TiedNet(nn.Module):
    """An embedding whose weight is also the output layer's (a language model's tied head)."""

    def __init__(self, vocab=7, width=4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.norm = nn.BatchNorm1d(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.norm(self.embed(ids))))


@pytest.mark.parametrize("bn", ["recompute", "stored"])
def test_a_tied_models_curve_checkpoint_loads_strictly_with_its_alias(tmp_path, bn):
    ends = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        ends.append(TiedNet())
    ids = torch.randint(0, 7, (24,), generator=torch.Generator().manual_seed(3))
    c = llv.connect(*ends, (ids, (ids + 1) % 7), epochs=1, points=3, batch_size=12, bn=bn,
                    progress=False)
    assert list(c.control) == list(ends[0].state_dict())
    assert torch.equal(c.control["head.weight"], c.control["embed.weight"])
    c.save(tmp_path / "curve.h5")

    fresh = TiedNet()
    state = torch.load(tmp_path / "curve_control.pt", weights_only=True)["state_dict"]
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(state["head.weight"], state["embed.weight"])
    assert torch.equal(fresh.head.weight, c.control["embed.weight"])
    loaded = llv.curves.Connection.load(tmp_path / "curve.h5")
    assert torch.equal(loaded.control["head.weight"], loaded.control["embed.weight"])
