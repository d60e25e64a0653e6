"""CIFAR-10 and CIFAR-100 in torchvision's python-pickle layout.

``<root>/cifar-10-batches-py/data_batch_1..5, test_batch`` and
``<root>/cifar-100-python/train, test``: each a pickled dict whose ``data`` is a uint8 N×3072
array (1024 red, then green, then blue values, rows top to bottom) and whose ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100) are the classes.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llv.data.source import DataSource, RawSplit, download_with_torchvision, root_dir, setting
from llv.errors import LlvError

_LAYOUT = {
    # name: (title, folder, {split: files}, label key, torchvision class)
    "cifar10": (
        "CIFAR-10",
        "cifar-10-batches-py",
        {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        "labels",
        "CIFAR10",
    ),
    "cifar100": (
        "CIFAR-100",
        "cifar-100-python",
        {"train": ["train"], "test": ["test"]},
        "fine_labels",
        "CIFAR100",
    ),
}


# What a pickled numpy array needs, under the names numpy 1 and 2 and old protocols use.
_ARRAY_GLOBALS = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}
_OTHER_GLOBALS = {("_codecs", "encode"), ("copyreg", "_reconstructor")}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    def find_class(self, module: str, name: str):
        numpy_array = (module == "numpy" or module.startswith("numpy.")) and name in _ARRAY_GLOBALS
        if numpy_array or (module, name) in _OTHER_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError) as exc:
        raise LlvError(f"{path} is not a CIFAR pickle file ({exc})") from None
    if not isinstance(entry, dict):
        raise LlvError(f"{path} is not a CIFAR pickle file (holds a {type(entry).__name__})")
    return entry


def _locate(name: str):
    title, folder, files, _, torchvision_class = _LAYOUT[name]

    def locate(cfg, split: str) -> list[Path]:
        base = root_dir(cfg) / folder
        paths = [base / f for f in files[split]]
        missing = [p for p in paths if not p.is_file()]
        if missing and setting(cfg, "download", False):
            download_with_torchvision(torchvision_class, title, root_dir(cfg), split)
            missing = [p for p in paths if not p.is_file()]
        if missing:
            raise LlvError(
                f"{title} not found in {base} (missing {missing[0].name}); download it with "
                f"dataset.download=true or place torchvision's {folder} folder there"
            )
        return paths

    return locate


def _read(name: str):
    title, _, _, label_key, _ = _LAYOUT[name]

    def read(cfg, split: str, files: Sequence[Path]) -> RawSplit:
        images, labels = [], []
        for path in files:
            entry = _load_pickle(path)
            if "data" not in entry or label_key not in entry:
                raise LlvError(f"{path} is not a {title} file (no 'data' or '{label_key}')")
            data = np.asarray(entry["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise LlvError(f"{path}: 'data' is {data.shape}, expected N×3072 (3×32×32)")
            if len(entry[label_key]) != data.shape[0]:
                raise LlvError(f"{path}: {data.shape[0]} images but {len(entry[label_key])} labels")
            # The flat rows are channel-major (R plane, G plane, B plane): already C×H×W.
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        pixels = torch.from_numpy(np.concatenate(images))
        return RawSplit(pixels, torch.from_numpy(np.concatenate(labels)), scale=255.0)

    return read


CIFAR10 = DataSource("cifar10", "CIFAR-10", (3, 32, 10), _locate("cifar10"), _read("cifar10"))
CIFAR100 = DataSource("cifar100", "CIFAR-100", (3, 32, 100), _locate("cifar100"), _read("cifar100"))
