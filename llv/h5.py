"""HDF5 helpers shared by every reader and writer: open with a one-line error, attrs in and out.

Attributes cannot hold ``None``; llv writes it as the string ``"null"`` and reads it back as
``None``. Bytes become ``str``, NumPy scalars Python numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_h5(path: str | Path, what: str, **file_options) -> Iterator:
    """An ``h5py.File`` open for writing whose content replaces ``path`` when the block ends.

    The file is built in memory and, once complete, written next to ``path`` and moved into
    place (:func:`llv.fsio.atomic_write`). HDF5 never touches the disk itself: on a full disk
    its own writes fail inside object destructors, print a traceback per object and can end in a
    segmentation fault; a plain write fails once, with an ``OSError``, which becomes one
    :class:`LlvError` line (what, where, free space). If the block fails, nothing is written and
    ``path`` keeps its previous content.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.h5"
    >>> with atomic_h5(path, "test file") as f:
    ...     f["x"] = [1.0, 2.0]
    >>> with open_h5(path, "test file") as f:
    ...     f["x"][()].tolist()
    [1.0, 2.0]

    Args:
        path: The HDF5 file to write.
        what: What the file is, for messages ("direction file").
        **file_options: More ``h5py.File`` options (``libver``, ``track_order`` ...).
    """
    import io

    import h5py

    from llv.fsio import atomic_write

    buffer = io.BytesIO()
    handle = h5py.File(buffer, "w", **file_options)
    try:
        yield handle
    except BaseException:
        _close_quietly(handle)
        raise
    handle.close()
    atomic_write(path, lambda out: out.write(buffer.getbuffer()), what)


def _close_quietly(handle) -> None:
    """Close an h5py file after a failure without a second error on top of the first."""
    with contextlib.suppress(Exception):
        handle.close()


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
