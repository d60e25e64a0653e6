"""From a dataset config to a checked :class:`~llv.data.source.RawSplit`, read once per process.

The dispatch table :data:`SOURCES` names every data set; :func:`read_split` checks the config
against what the files hold, reads the split and keeps it in memory, keyed by the config and
the files' sizes and modification times (so rewriting a file is noticed).
"""

from __future__ import annotations

import json
from collections import OrderedDict

from llv.console import LlvError, log
from llv.data import cifar, digits, folder, mnist, synthetic
from llv.data.source import DataSource, RawSplit, check_split, root_dir, setting

SOURCES: dict[str, DataSource] = {
    "digits": digits.SOURCE,
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "mnist": mnist.MNIST,
    "fashion_mnist": mnist.FASHION_MNIST,
    "synthetic": synthetic.SOURCE,
    "folder": folder.SOURCE,
}
DATASET_NAMES = tuple(SOURCES)

# Settings that change the stored pixels (normalization and augmentation do not).
_PIXEL_KEYS = (
    "name",
    "in_channels",
    "image_size",
    "num_classes",
    "test_fraction",
    "split_seed",
    "num_train",
    "num_test",
    "data_seed",
)
_MAX_CACHED = 8
_raw_cache: OrderedDict[tuple, RawSplit] = OrderedDict()


def source_of(cfg) -> DataSource:
    """The :class:`DataSource` named by ``cfg.name``."""
    name = str(setting(cfg, "name", ""))
    if name not in SOURCES:
        raise LlvError(f"unknown dataset {name!r}; valid options: {', '.join(DATASET_NAMES)}")
    return SOURCES[name]


def image_shape(cfg) -> tuple[int, int, int]:
    """``(in_channels, image_size, num_classes)`` of the config, checked against the data set."""
    source = source_of(cfg)
    wanted = tuple(
        int(setting(cfg, key, -1)) for key in ("in_channels", "image_size", "num_classes")
    )
    if source.shape is not None and wanted != source.shape:
        keys = ("in_channels", "image_size", "num_classes")
        wrong = ", ".join(
            f"dataset.{k}={w}" for k, w, h in zip(keys, wanted, source.shape, strict=True) if w != h
        )
        has = ", ".join(f"{k}={h}" for k, h in zip(keys, source.shape, strict=True))
        raise LlvError(
            f"{source.title} has {has}, but the config says {wrong}; remove the override"
        )
    return wanted


def read_split(cfg, split: str) -> RawSplit:
    """The checked, cached split ``split`` of the data set ``cfg`` describes."""
    check_split(split)
    source = source_of(cfg)
    channels, size, num_classes = image_shape(cfg)
    files = list(source.locate(cfg, split))
    key = _cache_key(cfg, split, files)
    if key in _raw_cache:
        _raw_cache.move_to_end(key)
        return _raw_cache[key]
    raw = source.read(cfg, split, files)
    where = files[0].parent if files else source.title
    if tuple(raw.pixels.shape[1:]) != (channels, size, size):
        raise LlvError(
            f"{source.title} images in {where} are {tuple(raw.pixels.shape[1:])} (C, H, W), "
            f"expected {(channels, size, size)}"
        )
    if len(raw) and not 0 <= int(raw.labels.min()) <= int(raw.labels.max()) < num_classes:
        raise LlvError(
            f"{source.title} labels in {where} range over {int(raw.labels.min())}.."
            f"{int(raw.labels.max())}, outside 0..{num_classes - 1}"
        )
    log.debug(f"{source.title} {split}: {len(raw)} images of {channels}x{size}x{size}")
    _raw_cache[key] = raw
    while len(_raw_cache) > _MAX_CACHED:
        _raw_cache.popitem(last=False)
    return raw


def clear_cache() -> None:
    """Forget every split read so far (the next load reads the files again)."""
    from llv.data import evaluation

    _raw_cache.clear()
    evaluation.clear_cache()


def _cache_key(cfg, split: str, files) -> tuple:
    settings = {k: setting(cfg, k) for k in _PIXEL_KEYS}
    stamps = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return (
        json.dumps(settings, sort_keys=True, default=str),
        str(root_dir(cfg).resolve()),
        split,
        stamps,
    )
