"""Projection files of ``llv trajectory``: the path on its two principal directions.

Datasets ``proj_xcoord``, ``proj_ycoord``, ``epochs``, ``lr_drop_epochs``, and, as the reference
implementation writes them, ``explained_variance_ratio_``, ``singular_values_`` (also attrs
without the trailing underscore, as earlier llv files have them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llv.errors import LlvError
from llv.h5 import atomic_h5, encode_attr, open_h5, read_attrs

FILE = "projection.h5"
_WHAT = "an llv projection file (datasets proj_xcoord, proj_ycoord, epochs)"


@dataclass
class Projection:
    """An optimizer path projected on its top-2 principal directions."""

    path: Path | None
    x: np.ndarray
    y: np.ndarray
    epochs: np.ndarray
    lr_drop_epochs: np.ndarray
    explained_variance_ratio: np.ndarray | None
    surface_file: Path | None
    attrs: dict

    @property
    def coordinates(self) -> np.ndarray:
        """(n+1, 2): the path's coordinates, θ_n last (at the origin)."""
        return np.stack([self.x, self.y], axis=1)


def write(path: str | Path, coordinates: np.ndarray, epochs: Sequence[int], lr_drops,
          explained_variance_ratio, singular_values, center: bool, attrs: Mapping) -> Path:
    """Write a projection file atomically."""
    path = Path(path)
    with atomic_h5(path, "projection file") as f:
        f["proj_xcoord"] = np.asarray(coordinates)[:, 0]
        f["proj_ycoord"] = np.asarray(coordinates)[:, 1]
        f["epochs"] = np.asarray(list(epochs), dtype=np.int64)
        f["lr_drop_epochs"] = np.asarray(lr_drops, dtype=np.int64)
        f["explained_variance_ratio_"] = np.asarray(explained_variance_ratio, dtype=np.float64)
        f["singular_values_"] = np.asarray(singular_values, dtype=np.float64)
        f.attrs["explained_variance_ratio"] = np.asarray(explained_variance_ratio)
        f.attrs["singular_values"] = np.asarray(singular_values)
        f.attrs["center"] = bool(center)
        for key, value in attrs.items():
            f.attrs[key] = encode_attr(value)
    return path


def read(path: str | Path) -> Projection:
    """Read a projection file; ``surface_file`` is resolved next to it."""
    path = Path(path)
    with open_h5(path, _WHAT) as h5:
        if "proj_xcoord" not in h5 or "proj_ycoord" not in h5:
            raise LlvError(f"not {_WHAT}: {path}")
        attrs = read_attrs(h5)
        x = np.asarray(h5["proj_xcoord"][()], dtype=float).ravel()
        y = np.asarray(h5["proj_ycoord"][()], dtype=float).ravel()
        epochs = np.asarray(h5["epochs"][()]).ravel() if "epochs" in h5 else np.arange(len(x))
        drops = np.asarray(h5["lr_drop_epochs"][()]).ravel() if "lr_drop_epochs" in h5 else np.zeros(0)
        ratio = (h5["explained_variance_ratio_"][()] if "explained_variance_ratio_" in h5
                 else attrs.get("explained_variance_ratio"))
    ratio = np.asarray(ratio, dtype=float).ravel() if ratio is not None else None
    surface = attrs.get("surface_file")
    surface_file = (path.parent / str(surface)) if surface else None
    return Projection(path, x, y, epochs, drops, ratio, surface_file, attrs)
