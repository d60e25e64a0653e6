"""The pre-flight probe: it passes on honest runs and flags random forwards and broken directions."""

import h5py
import pytest
import torch
from conftest import save_tiny_checkpoint, tiny_overrides
from nets import TinyConvBN

from llv import direction as dirs
from llv.config import compose
from llv.console import LlvError
from llv.params import ParameterSpace
from llv.tasks import surface as surface_task


def attrs_of(path):
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def test_probe_passes_on_an_honest_run(tiny):
    overrides, _ = tiny
    attrs = attrs_of(surface_task.run(compose("surface", [*overrides, "grid=11x11", "probe=strict"])))
    assert attrs["probe_repeatable"] and attrs["probe_direction_norms_ok"] and attrs["probe_failures"] == 0
    assert -1 <= attrs["probe_cosine_xy"] <= 1


def test_probe_flags_a_random_forward_pass(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="NoisyNet")
    overrides = [*tiny_overrides(tmp_path, "NoisyNet"), f"checkpoint={checkpoint}", "grid=11x11"]
    attrs = attrs_of(surface_task.run(compose("surface", overrides)))
    assert not attrs["probe_repeatable"] and "random" in attrs["probe_messages"]
    with pytest.raises(LlvError, match="forward pass is random"):
        surface_task.run(compose("surface", [*overrides, "probe=strict"]))


def test_probe_flags_directions_without_their_declared_norms(tiny, tmp_path):
    overrides, checkpoint = tiny
    torch.manual_seed(0)
    model = TinyConvBN()
    space = ParameterSpace.of(model)
    raw = dirs.make_random(space, space.values(model), 2, norm="none")
    raw.attrs["norm"] = "filter"  # a lie: these are unnormalized draws
    path = dirs.save(raw, tmp_path / "liar.h5")
    attrs = attrs_of(surface_task.run(compose("surface", [*overrides, "grid=11x11", f"dir_file={path}"])))
    assert not attrs["probe_direction_norms_ok"] and "norm=filter" in attrs["probe_messages"]
    with pytest.raises(LlvError, match="norms"):
        surface_task.run(compose("surface", [*overrides, "grid=11x11", f"dir_file={path}", "probe=strict"]))


def test_in_fast_mode_the_centre_is_judged_within_its_standard_errors(tmp_path):
    # the centre is an estimate on a subset in fast mode: the checkpoint's recorded loss must lie
    # within 3 s.e. of it (not within 1e-3), and a recorded loss far outside still fails
    from llv.checkpoint import save_checkpoint
    from llv.models import build_model

    data = [*tiny_overrides(tmp_path), "dataset.num_train=400", "eval.batch_size=8", "grid.x=-1:1:3", "grid.y=-1:1:3"]
    cfg = compose("surface", data)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    honest = save_checkpoint(tmp_path / "honest.pt", model, 0, cfg, {})
    exact = surface_task.run(compose("surface", [*data, f"checkpoint={honest}"]))
    with h5py.File(exact, "r") as f:
        loss = float(f["train_loss"][1, 1])  # the centre of the 3×3 grid
    fast = ["eval.approx=true", "eval.approx_start=16", "eval.target_se=0.05", "probe=strict"]
    recorded = save_checkpoint(tmp_path / "recorded.pt", model, 0, cfg, {"train_loss": loss})
    attrs = attrs_of(surface_task.run(compose("surface", [*data, f"checkpoint={recorded}", *fast])))
    assert attrs["probe_failures"] == 0
    wrong = save_checkpoint(tmp_path / "wrong.pt", model, 0, cfg, {"train_loss": loss + 10})
    with pytest.raises(LlvError, match=r"fast mode\) differs from the checkpoint's recorded"):
        surface_task.run(compose("surface", [*data, f"checkpoint={wrong}", *fast]))


def test_a_fast_mode_cross_check_disagreement_is_information_not_an_alarm(tmp_path, capfd):
    # a second difference of estimates carries their s.e. ÷ step²: expected to differ from dᵀHd
    data = [*tiny_overrides(tmp_path), "dataset.num_train=400", "eval.batch_size=8", "grid.x=-1:1:3",
            "grid.y=-1:1:3", f"checkpoint={save_tiny_checkpoint(tmp_path)}", "eval.approx=true",
            "eval.approx_start=16", "eval.target_se=0.05"]
    surface_task.run(compose("surface", data))
    captured = capfd.readouterr()
    printed = " ".join((captured.err + captured.out).split())
    assert "INFO cross-check along x" in printed and "WARNING cross-check" not in printed
    assert "the surface is approximate (eval.approx)" in printed
    assert "too few points around 0" in printed  # 3 points a side: no ± discretization error
