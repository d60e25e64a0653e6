"""MNIST and Fashion-MNIST in torchvision's raw idx layout.

``<root>/MNIST/raw/train-images-idx3-ubyte`` (and ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), the same names under
``<root>/FashionMNIST/raw``; each may also be gzipped (``.gz``).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llv.data.source import DataSource, RawSplit, download_with_torchvision, root_dir, setting
from llv.errors import LlvError

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an idx file (big-endian header: magic, then one int32 per dimension)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise LlvError(f"cannot read {path}: {exc}") from None
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else -1
    if found != magic:
        raise LlvError(
            f"{path} is not an idx file of this kind (magic number {found}, expected {magic})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + int(np.prod(shape)):
        raise LlvError(f"{path} is truncated or too long for its shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(base: Path, name: str) -> Path | None:
    for candidate in (base / name, base / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _locate(folder: str, title: str):
    def locate(cfg, split: str) -> list[Path]:
        base = root_dir(cfg) / folder / "raw"
        found = [_find(base, name) for name in _FILES[split]]
        if None in found and setting(cfg, "download", False):
            download_with_torchvision(folder, title, root_dir(cfg), split)
            found = [_find(base, name) for name in _FILES[split]]
        if None in found:
            missing = _FILES[split][found.index(None)]
            raise LlvError(
                f"{title} not found in {base} (missing {missing}); download it with "
                f"dataset.download=true or place torchvision's {folder}/raw files there"
            )
        return found

    return locate


def _read(cfg, split: str, files: Sequence[Path]) -> RawSplit:
    images = read_idx(files[0], IMAGES_MAGIC)
    labels = read_idx(files[1], LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise LlvError(
            f"{files[0]} has {images.shape[0]} images but {files[1]} has {labels.shape[0]} labels"
        )
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)  # N×1×H×W
    return RawSplit(pixels, torch.from_numpy(labels.astype(np.int64)), scale=255.0)


MNIST = DataSource("mnist", "MNIST", (1, 28, 10), _locate("MNIST", "MNIST"), _read)
FASHION_MNIST = DataSource(
    "fashion_mnist", "Fashion-MNIST", (1, 28, 10), _locate("FashionMNIST", "Fashion-MNIST"), _read
)
