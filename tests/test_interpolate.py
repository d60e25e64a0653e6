"""llv interpolate: the ends are the two models, BN statistics move with type=states, recompute_bn."""

import copy

import h5py
import pytest
import torch
from conftest import save_tiny_checkpoint, tiny_overrides

from llv.checkpoint import load_into
from llv.config import compose
from llv.data import load_eval_data
from llv.losses import per_example_loss as per_sample_loss
from llv.models import build_model
from llv.tasks import interpolate


def two_checkpoints(tmp_path):
    a = save_tiny_checkpoint(tmp_path, seed=0, name="a.pt")
    b = save_tiny_checkpoint(tmp_path, seed=1, name="b.pt")
    payload = torch.load(b, weights_only=False)  # give B its own BN statistics
    payload["state_dict"]["bn.running_mean"] += 0.5
    payload["state_dict"]["bn.running_var"] *= 2.0
    torch.save(payload, b)
    return a, b


def run(tmp_path, a, b, *extra):
    cfg = compose("interpolate", [*tiny_overrides(tmp_path), f"checkpoint={a}", f"checkpoint2={b}",
                                  "grid.x=-0.5:1.5:5", *extra])
    path = interpolate.run(cfg)
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}, dict(f.attrs), cfg


def own_metrics(cfg, checkpoint, split, bn_from=None):
    model = build_model(cfg.model)
    load_into(model, checkpoint)
    if bn_from is not None:
        other = build_model(cfg.model)
        load_into(other, bn_from)
        model.bn.load_state_dict(other.bn.state_dict())
        model.bn.weight.data, model.bn.bias.data = other.bn.weight.data.clone(), other.bn.bias.data.clone()
    data = load_eval_data(cfg.dataset, split)
    with torch.no_grad():
        out = model.eval()(data.inputs)
    loss = float(per_sample_loss(out, data.targets).double().mean())
    return loss, 100.0 * float((out.argmax(1) == data.targets).double().mean())


def test_ends_equal_each_model_with_bn_statistics_interpolated(tmp_path):
    a, b = two_checkpoints(tmp_path)
    values, attrs, cfg = run(tmp_path, a, b)
    assert values["alphas"].tolist() == pytest.approx([-0.5, 0, 0.5, 1, 1.5])
    assert attrs["type"] == "states" and attrs["command"] == "interpolate"
    for split in ("train", "test"):
        for index, checkpoint in ((1, a), (3, b)):
            loss, acc = own_metrics(cfg, checkpoint, split)
            assert values[f"{split}_loss"][index] == pytest.approx(loss, rel=1e-6)
            assert values[f"{split}_acc"][index] == pytest.approx(acc, rel=1e-6)


def test_weights_only_keeps_model_a_statistics(tmp_path):
    a, b = two_checkpoints(tmp_path)
    values, attrs, cfg = run(tmp_path, a, b, "direction.type=weights")
    b_loss, _ = own_metrics(cfg, b, "train")
    assert abs(values["train_loss"][3] - b_loss) > 1e-4  # B's own statistics differ
    # at a=1 it is B's weights with A's running statistics
    model = build_model(cfg.model)
    load_into(model, b)
    a_model = build_model(cfg.model)
    load_into(a_model, a)
    model.bn.running_mean.copy_(a_model.bn.running_mean)
    model.bn.running_var.copy_(a_model.bn.running_var)
    data = load_eval_data(cfg.dataset, "train")
    with torch.no_grad():
        expected = float(per_sample_loss(model.eval()(data.inputs), data.targets).double().mean())
    assert values["train_loss"][3] == pytest.approx(expected, rel=1e-6)


def test_recompute_bn_equals_update_bn_by_hand(tmp_path):
    a, b = two_checkpoints(tmp_path)
    values, attrs, cfg = run(tmp_path, a, b, "interpolate.recompute_bn=true", "eval.bn_samples=32",
                             "eval.batch_size=10")
    assert attrs["bn"] == "recompute"
    model_a, model_b = build_model(cfg.model), build_model(cfg.model)
    load_into(model_a, a)
    load_into(model_b, b)
    train = load_eval_data(cfg.dataset, "train")
    bn_images = load_eval_data(cfg.dataset, "train", 32, seed=cfg.seed).inputs
    for index, alpha in enumerate(values["alphas"]):
        model = copy.deepcopy(model_a)
        with torch.no_grad():
            for p, pb in zip(model.state_dict().values(), model_b.state_dict().values()):
                if p.is_floating_point():
                    p.copy_(p + alpha * (pb - p))
        loader = [bn_images[i:i + 10] for i in range(0, 32, 10)]
        torch.optim.swa_utils.update_bn(loader, model)  # cumulative average over batches
        with torch.no_grad():
            out = model.eval()(train.inputs)
        expected = float(per_sample_loss(out, train.targets).double().mean())
        assert values["train_loss"][index] == pytest.approx(expected, rel=1e-5)


def test_interpolate_needs_both_checkpoints(tmp_path):
    from llv.console import LlvError

    with pytest.raises(LlvError, match="checkpoint2"):
        interpolate.run(compose("interpolate", [*tiny_overrides(tmp_path), "checkpoint=x.pt"]))
