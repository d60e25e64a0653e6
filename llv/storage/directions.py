"""Direction files: the reference implementation's HDF5 layout, read and written here only.

Groups ``xdirection`` and ``ydirection`` hold datasets ``"0"``, ``"1"``, … in parameter order;
ensemble member ``k > 0`` adds groups ``xdirection_k`` / ``ydirection_k``. Root attrs: ``kind``,
``norm``, ``ignore``, ``type``, ``seed``, ``checkpoint_sha256``, ``ensemble``, ``names``; PCA
directions add ``explained_variance_ratio_`` (also as a dataset, where the reference has it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llv.errors import LlvError
from llv.h5 import atomic_h5, decode_attr, encode_attr, open_h5, read_attrs

if TYPE_CHECKING:  # torch is imported where tensors are made: figures read digests without it
    import torch

FILE = "directions.h5"

#: Attributes the reference implementation writes as datasets; llv writes both.
REFERENCE_DATASETS = ("explained_variance_ratio_", "singular_values_", "explained_variance_")


def group_name(axis: int, member: int) -> str:
    base = "xdirection" if axis == 0 else "ydirection"
    return base if member == 0 else f"{base}_{member}"


def write(path: str | Path, axes: Sequence[Sequence[torch.Tensor]], ndim: int, attrs: dict) -> Path:
    """Write ``axes`` ([x0, y0, x1, y1, …], member-major) with root ``attrs``, atomically."""
    path = Path(path)
    with atomic_h5(path, "direction file") as f:
        for index, axis in enumerate(axes):
            member, a = divmod(index, ndim)
            group = f.create_group(group_name(a, member))
            for i, t in enumerate(axis):
                group.create_dataset(str(i), data=t.detach().cpu().numpy())
        for key, value in attrs.items():
            f.attrs[key] = encode_attr(value)
            if key in REFERENCE_DATASETS:
                f.create_dataset(key, data=np.asarray(value, dtype=np.float64))
    return path


def read(path: str | Path, names: Sequence[str], shapes: Sequence, space_type: str,
         ndim: int | None = None) -> tuple[list[list[torch.Tensor]], int, dict]:
    """``(axes, ndim, attrs)`` of llv's or the reference's direction file, checked against the
    parameter ``names`` and ``shapes`` it is for."""
    path = Path(path)
    with open_h5(path, "a direction file") as f:
        if "xdirection" not in f:
            raise LlvError(f"{path} is not a direction file (no 'xdirection' group)")
        attrs = read_attrs(f)
        for key in REFERENCE_DATASETS:
            if key in f and key not in attrs:
                attrs[key] = np.asarray(f[key][()])
        file_ndim = 2 if "ydirection" in f else 1
        ndim = file_ndim if ndim is None else ndim
        if ndim > file_ndim:
            raise LlvError(f"direction file {path} has only an x direction but the grid is 2D")
        ensemble = int(attrs.get("ensemble", 1) or 1)
        axes = [_read_axis(f[group_name(a, member)], names, shapes, space_type, path)
                for member in range(ensemble) for a in range(ndim)]
    attrs.setdefault("kind", "file")
    attrs.setdefault("type", space_type)
    return axes, ndim, attrs


def _read_axis(group, names, shapes, space_type: str, path: Path) -> list[torch.Tensor]:
    import torch

    count = len(group.keys())
    if count != len(names):
        other = "states" if space_type == "weights" else "weights"
        raise LlvError(f"direction file {path} has {count} tensors, the model's {space_type} have "
                       f"{len(names)} (is it direction.type={other}, or for another model?)")
    tensors = []
    for i, (name, shape) in enumerate(zip(names, shapes)):
        data = torch.from_numpy(np.asarray(group[str(i)][()], dtype=np.float32))
        if data.shape != torch.Size(shape):
            raise LlvError(f"direction file {path}: tensor {i} ({name}) has shape {list(data.shape)}, "
                           f"the model's is {list(shape)}")
        tensors.append(data)
    return tensors


def recorded_digest(path: str | Path) -> str | None:
    """The SHA-256 llv records in a direction file's ``sha256`` attribute (None for a reference
    file, which records none); reads no tensors and needs no torch.

    Raises:
        LlvError: the file cannot be opened as HDF5.
    """
    with open_h5(path, "a direction file") as f:
        value = decode_attr(f.attrs.get("sha256"))
    return None if value is None else str(value)


def dir_file_candidates(path: str | Path | None, attrs: dict) -> list[Path]:
    """Where a result's ``dir_file`` may be, in order: beside the result (a name, as
    ``Surface.save`` records it), as recorded (the command line records the path it used), or
    its name beside the result; only those that are files.

    >>> dir_file_candidates(None, {})
    []
    """
    name = attrs.get("dir_file")
    if not name:
        return []
    recorded = Path(str(name))
    folder = Path(path).parent if path is not None else Path()
    return [c for c in dict.fromkeys((folder / recorded, recorded, folder / recorded.name)) if c.is_file()]
