"""The reference's own numbers: its checkpoint format, its direction file and CIFAR-10 as it reads
it give, through ``llv surface``, the values of its per-point algorithm (re-implemented in
benchmarks/reference_algorithm.py)."""

import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llv.config import compose  # noqa: E402
from llv.models import build_model  # noqa: E402
from llv.tasks import surface as surface_task  # noqa: E402

MEAN = [125.3 / 255, 123.0 / 255, 113.9 / 255]
STD = [63.0 / 255, 62.1 / 255, 66.7 / 255]


def write_cifar10(root: Path, per_batch: int = 8):
    """torchvision's cifar-10-batches-py layout with random uint8 images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    images = np.concatenate([d for d, _ in train]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, sum((labels for _, labels in train), [])


def reference_filter_direction(net, seed):
    """net_plotter.create_random_direction(dir_type='weights', ignore='biasbn', norm='filter')."""
    torch.manual_seed(seed)
    direction = []
    for w in [p.data for p in net.parameters()]:
        d = torch.randn(w.size())
        if d.dim() <= 1:
            d.fill_(0)
        else:
            for di, we in zip(d, w):
                di.mul_(we.norm() / (di.norm() + 1e-10))
        direction.append(d)
    return direction


def test_reference_checkpoint_directions_and_cifar_give_the_reference_surface(tmp_path):
    from benchmarks.reference_algorithm import eval_loss, load_dataset, set_weights

    images, labels = write_cifar10(tmp_path / "data")
    torch.manual_seed(0)
    net = build_model({"name": "resnet20", "in_channels": 3, "num_classes": 10, "image_size": 32})
    with torch.no_grad():  # a "trained" network: non-trivial BN statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    # the reference's checkpoint: DataParallel keys, acc and epoch beside the state_dict
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "acc": 91.3,
                "epoch": 300}, tmp_path / "model_300.t7")
    directions = [reference_filter_direction(net, 1), reference_filter_direction(net, 2)]
    with h5py.File(tmp_path / "ref_dirs.h5", "w") as f:  # net_plotter.write_list layout, no attrs
        for name, direction in zip(("xdirection", "ydirection"), directions):
            group = f.create_group(name)
            for i, d in enumerate(direction):
                group.create_dataset(str(i), data=d.numpy())

    cfg = compose("surface", ["model=resnet20", "dataset=cifar10", f"dataset.root={tmp_path / 'data'}",
                              f"checkpoint={tmp_path / 'model_300.t7'}", f"dir_file={tmp_path / 'ref_dirs.h5'}",
                              "grid.x=-1:1:3", "grid.y=-1:1:3", f"outputs={tmp_path / 'out'}", "device=cpu",
                              "dist=none", "plot=false"])
    with h5py.File(surface_task.run(cfg), "r") as f:
        llv_loss, llv_acc = f["train_loss"][()], f["train_acc"][()]
        xs, ys = f["xcoordinates"][()], f["ycoordinates"][()]

    loader = load_dataset(images, labels, MEAN, STD, batch_size=16)
    weights = [p.data.clone() for p in net.parameters()]
    criterion = torch.nn.CrossEntropyLoss()
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            set_weights(net, weights, directions, [x, y])
            loss, acc = eval_loss(net, criterion, loader, torch.device("cpu"))
            assert llv_loss[iy, ix] == pytest.approx(loss, rel=1e-5)
            assert llv_acc[iy, ix] == pytest.approx(acc, abs=100 / len(labels) + 1e-9)
