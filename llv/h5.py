"""HDF5 helpers shared by every reader and writer: open with a one-line error, attrs in and out.

Attributes cannot hold ``None``; llv writes it as the string ``"null"`` and reads it back as
``None``. Bytes become ``str``, NumPy scalars Python numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llv.console import LlvError


def open_h5(path: str | Path, what: str):
    """Open an existing HDF5 file read-only; a missing or non-HDF5 file is one :class:`LlvError`.

    ``what`` names the expected file in the message ("a direction file").
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise LlvError(f"file not found: {path}")
    if path.is_dir():
        raise LlvError(f"{path} is a folder, expected {what}")
    try:
        return h5py.File(path, "r")
    except OSError:
        raise LlvError(f"not {what}: {path} (not an HDF5 file)") from None


def encode_attr(value):
    """A Python value as an HDF5 attribute (``None`` -> ``"null"``, paths -> str)."""
    if value is None:
        return "null"
    if isinstance(value, Path):
        return str(value)
    return value


def decode_attr(value):
    """An HDF5 attribute as a Python value: bytes -> str, 0-d arrays/NumPy scalars -> Python,
    ``"null"`` -> ``None``."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, str) and value == "null" else value


def read_attrs(h5) -> dict:
    """Every attribute of an open file or group, decoded."""
    return {key: decode_attr(value) for key, value in h5.attrs.items()}
