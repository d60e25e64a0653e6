"""Checkpoints: llv's, bare and reference formats load; misfits and missing files are one line."""

import hashlib
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from llv.checkpoint import (
    check_finite,
    latest_trained,
    load_into,
    load_state_dict,
    model_config_of,
    save_checkpoint,
    sha256,
)
from llv.console import LlvError
from llv.tasks._checkpoints import default_checkpoint


def small_net(in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, 4, 3), bn1=nn.BatchNorm2d(4), flat=nn.Flatten(),
        fc=nn.Linear(4 * 4 * 4, 10)))


def make_cfg(tmp_path, model="resnet8", dataset="digits", checkpoint=None):
    return OmegaConf.create({"model": {"name": model}, "dataset": {"name": dataset},
                             "outputs": str(tmp_path / "outputs"), "checkpoint": checkpoint,
                             "seed": 0})


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_llv_format_round_trip_keeps_weights_and_provenance(tmp_path):
    net = small_net()
    net.bn1.running_mean.add_(0.5)
    config = {"model": {"name": "resnet8", "depth": 8, "widths": [16, 32]},
              "dataset": {"name": "digits"}, "seed": 0}
    path = save_checkpoint(tmp_path / "c" / "x.pt", net, 7, config, {"test_acc": 91.5})
    raw = torch.load(path, weights_only=True)  # safe loading suffices for llv's own files
    assert set(raw) == {"state_dict", "epoch", "model", "dataset", "config", "metrics"}
    assert (raw["epoch"], raw["model"], raw["dataset"]) == (7, "resnet8", "digits")
    assert raw["config"] == config and raw["metrics"] == {"test_acc": 91.5}
    other = small_net()
    nn.init.zeros_(other.fc.weight)
    meta = load_into(other, path)
    assert_same_state(other.state_dict(), net.state_dict())
    assert meta["epoch"] == 7 and "state_dict" not in meta
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temporary file left behind


def test_save_replaces_an_existing_file_atomically(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    save_checkpoint(path, small_net(), 1)
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, small_net(), 2)
    assert path.read_bytes() == before  # the old file is intact, and no temporary file remains
    assert os.listdir(tmp_path) == ["x.pt"]


def test_bare_state_dict_loads(tmp_path):
    net = small_net()
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    state, meta = load_state_dict(tmp_path / "bare.pt")
    assert meta == {}
    assert_same_state(state, net.state_dict())


def test_reference_t7_with_module_prefix_and_numpy_acc_loads(tmp_path, caplog):
    net = small_net()
    state = {"module." + k: v for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # 2018 files predate this buffer
    # The reference stores acc as a NumPy scalar: safe loading refuses it, the fallback reads it.
    reference_file = {"state_dict": state, "acc": np.float64(93.1), "epoch": 300}
    torch.save(reference_file, tmp_path / "model_300.t7")
    other = small_net()
    nn.init.zeros_(other.conv1.weight)
    with caplog.at_level("DEBUG", logger="llv"):
        meta = load_into(other, tmp_path / "model_300.t7")
    assert float(meta["acc"]) == pytest.approx(93.1) and meta["epoch"] == 300
    assert torch.equal(other.conv1.weight, net.conv1.weight)
    assert torch.equal(other.bn1.running_var, net.bn1.running_var)
    assert "legacy pickle" in caplog.text


def test_misfitting_checkpoint_names_missing_unexpected_and_misshaped_keys(tmp_path):
    path = save_checkpoint(tmp_path / "x.pt", small_net(in_channels=3), 0)
    model = small_net(in_channels=1)
    model.add_module("extra", nn.Linear(2, 2))
    with pytest.raises(LlvError) as error:
        load_into(model, path, model_name="resnet56")
    message = str(error.value)
    assert "\n" not in message
    assert f"checkpoint {path} does not fit model resnet56" in message
    assert "missing extra.weight, extra.bias" in message
    assert "shape conv1.weight [4,3,3,3] (checkpoint) vs [4,1,3,3] (model)" in message
    reduced = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3)))
    unexpected = r"unexpected bn1\.weight, bn1\.bias, bn1\.running_mean \(\+4 more\)"
    with pytest.raises(LlvError, match=unexpected):
        load_into(reduced, path)


def test_missing_file_and_foreign_content_are_one_line_errors(tmp_path):
    with pytest.raises(LlvError, match=f"checkpoint {tmp_path / 'nope.pt'} does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(LlvError, match="is not a PyTorch checkpoint"):
        load_state_dict(tmp_path / "text.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(LlvError, match=r"has no state_dict \(its keys: weights\)"):
        load_state_dict(tmp_path / "other.pt")


def test_sha256_equals_hashlib(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # more than one read block
    (tmp_path / "blob").write_bytes(data)
    assert sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_a_config_object_is_stored_as_plain_resolved_dicts(tmp_path):
    cfg = OmegaConf.create({"dataset": {"name": "digits", "num_classes": 10},
                            "model": {"name": "mlp", "num_classes": "${dataset.num_classes}",
                                      "hidden": [64, 32]},
                            "checkpoint": "???"})
    path = save_checkpoint(tmp_path / "x.pt", small_net(), 0, cfg)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["model"] == {"name": "mlp", "num_classes": 10, "hidden": [64, 32]}
    assert type(raw["config"]["model"]["hidden"]) is list and raw["config"]["checkpoint"] is None
    assert (raw["model"], raw["dataset"]) == ("mlp", "digits")


def test_model_config_of_rebuilds_from_the_file_alone(tmp_path):
    model_node = {"name": "resnet8", "num_classes": 10, "in_channels": 1}
    path = save_checkpoint(tmp_path / "x.pt", small_net(), 3, {"model": model_node})
    assert model_config_of(path) == model_node
    # files of older versions keep the config as YAML text
    old = {"state_dict": small_net().state_dict(), "config": "model:\n  name: vgg9\n  bn: true\n"}
    torch.save(old, tmp_path / "old.pt")
    assert model_config_of(tmp_path / "old.pt") == {"name": "vgg9", "bn": True}
    torch.save(small_net().state_dict(), tmp_path / "bare.pt")
    assert model_config_of(tmp_path / "bare.pt") is None
    assert model_config_of(save_checkpoint(tmp_path / "none.pt", small_net(), 0)) is None
    torch.save({"state_dict": small_net().state_dict(), "config": "[unclosed"}, tmp_path / "bad.pt")
    assert model_config_of(tmp_path / "bad.pt") is None


def test_check_finite_names_the_first_non_finite_tensor(tmp_path):
    state = small_net().state_dict()
    check_finite(state, "ok.pt")  # finite weights pass
    state["bn1.running_var"][2] = float("nan")
    state["fc.weight"][0, :3] = float("inf")
    with pytest.raises(LlvError) as caught:
        check_finite(state, tmp_path / "bad.pt")
    message = str(caught.value)
    assert message.startswith(f"checkpoint {tmp_path / 'bad.pt'} has non-finite weights: "
                              "bn1.running_var holds 1 NaN and 0 inf of 4 values "
                              "(and 1 more tensors); pass strict=false")
    assert "\n" not in message


def test_full_disk_keeps_the_previous_checkpoint(tmp_path):
    from test_fsio import mount_tmpfs, unmount

    disk = mount_tmpfs(tmp_path / "disk")
    try:
        path = save_checkpoint(disk / "x.pt", small_net(), 1)
        before = path.read_bytes()
        big = nn.Linear(800, 800)  # 2.4 MiB of weights on a 1 MiB disk
        with pytest.raises(LlvError, match=r"^cannot write checkpoint .*x\.pt: No space left on "
                                           r"device; .* free of 1\.0 MiB"):
            save_checkpoint(path, big, 2)
        assert path.read_bytes() == before and os.listdir(disk) == ["x.pt"]
    finally:
        unmount(disk)


def test_latest_trained_checks_only_the_names_it_is_given(tmp_path):
    run = tmp_path / "outputs" / "train" / "run"
    save_checkpoint(run / "final.pt", small_net(), 3, {"model": {"name": "mlp"},
                                                      "dataset": {"name": "digits"}})
    (tmp_path / "outputs" / "train" / "latest").symlink_to("run")
    assert latest_trained(tmp_path / "outputs").resolve() == (run / "final.pt").resolve()
    assert latest_trained(tmp_path / "outputs", "mlp", None).name == "final.pt"
    with pytest.raises(LlvError, match="trained for model mlp on digits, not vgg9 on None"):
        latest_trained(tmp_path / "outputs", "vgg9")


def test_default_checkpoint_takes_latest_final_only_when_names_match(tmp_path):
    cfg = make_cfg(tmp_path)
    advice = "final.pt is missing: run `llv train model=resnet8 dataset=digits`"
    with pytest.raises(LlvError, match=advice):
        default_checkpoint(cfg)
    run = tmp_path / "outputs" / "train" / "2024-01-01_00-00-00"
    final = save_checkpoint(run / "final.pt", small_net(), 3, OmegaConf.to_container(cfg))
    (tmp_path / "outputs" / "train" / "latest").symlink_to(run.name)
    assert default_checkpoint(cfg).resolve() == final.resolve()
    with pytest.raises(LlvError, match="trained for model resnet8 on digits, not mlp on digits"):
        default_checkpoint(make_cfg(tmp_path, model="mlp"))
    with pytest.raises(LlvError, match="not resnet8 on cifar10"):
        default_checkpoint(make_cfg(tmp_path, dataset="cifar10"))
    given = tmp_path / "mine.pt"
    assert default_checkpoint(make_cfg(tmp_path, model="mlp", checkpoint=str(given))) == given
    from llv.checkpoint import default_checkpoint as deprecated  # what llv/session.py imports

    assert deprecated(cfg).resolve() == final.resolve()
    assert deprecated(make_cfg(tmp_path, model="mlp", checkpoint=str(given))) == given
