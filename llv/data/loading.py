"""From a dataset config to a checked split as stored, shared through the data layer's cache.

The dispatch table :data:`SOURCES` names every data set. :func:`locate` checks the config
against the data set (before any file is read) and finds the split's files; :func:`read_split`
reads and checks the split, or returns the copy something else still uses (see
:mod:`llv.data.cache`). Keys hold the files' sizes and modification times, so rewriting a file
is noticed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from llv.console import log
from llv.data import cache, cifar, digits, folder, mnist, synthetic, text
from llv.data.source import DataSource, RawSplit, TokenSplit, check_split, root_dir, setting
from llv.errors import LlvError

SOURCES: dict[str, DataSource] = {
    "digits": digits.SOURCE,
    "cifar10": cifar.CIFAR10,
    "cifar100": cifar.CIFAR100,
    "mnist": mnist.MNIST,
    "fashion_mnist": mnist.FASHION_MNIST,
    "synthetic": synthetic.SOURCE,
    "folder": folder.SOURCE,
    "text": text.SOURCE,
}
DATASET_NAMES = tuple(SOURCES)

# Settings that change what is read (normalization and augmentation do not).
_READ_KEYS = (
    "name",
    "in_channels",
    "image_size",
    "num_classes",
    "test_fraction",
    "split_seed",
    "num_train",
    "num_test",
    "data_seed",
    "path",
    "unit",
    "vocab",
    "seq_len",
    "max_sequences",
)


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


def _check_images(source: DataSource, cfg, raw: RawSplit, where) -> None:
    channels, size, num_classes = image_shape(cfg)
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


def _check_tokens(source: DataSource, cfg, raw: TokenSplit, where) -> None:
    pass  # the text reader checks ids against dataset.vocab while encoding


# Per kind of data: the config check before reading, the check of what was read.
_CONFIG_CHECKS: dict[str, Callable[[object], object]] = {
    "images": image_shape,
    "tokens": text.check_config,
}
_SPLIT_CHECKS: dict[str, Callable] = {"images": _check_images, "tokens": _check_tokens}


def check_config(cfg) -> None:
    """The data set config's checks that need no data read (shapes, a split's bounds): run by a
    command before it writes anything, so that a bad setting leaves no run folder behind."""
    source = source_of(cfg)
    _CONFIG_CHECKS[source.kind](cfg)
    if str(cfg.get("name")) == "digits":
        from llv.data import digits

        digits.check_config(cfg)


def locate(cfg, split: str) -> tuple[DataSource, list[Path], tuple]:
    """The source, the files and the cache key of a split; checks the config first."""
    check_split(split)
    source = source_of(cfg)
    _CONFIG_CHECKS[source.kind](cfg)
    files = list(source.locate(cfg, split))
    return source, files, _cache_key(cfg, split, files)


def read_split(cfg, split: str) -> RawSplit | TokenSplit:
    """The checked split ``split`` of the data set ``cfg`` describes, as stored.

    Read once and shared while anything uses it; read again once nothing does.
    """
    source, files, key = locate(cfg, split)

    def read():
        raw = source.read(cfg, split, files)
        where = files[0].parent if files else source.title
        _SPLIT_CHECKS[source.kind](source, cfg, raw, where)
        log.debug(f"{source.title} {split}: read {len(raw)} examples")
        return raw

    return cache.stored(key, read)


def clear_cache() -> None:
    """Forget every split read and every tensor built so far (the next load reads the files)."""
    cache.clear()


def _cache_key(cfg, split: str, files) -> tuple:
    settings = {k: setting(cfg, k) for k in _READ_KEYS}
    stamps = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return (
        json.dumps(settings, sort_keys=True, default=str),
        str(root_dir(cfg).resolve()),
        split,
        stamps,
    )
