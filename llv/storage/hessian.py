"""Hessian point files (``llv hessian`` at one point): eigenvalues and the spectral density as
datasets, every scalar (λmax, λmin, trace, Hessian-vector-product counts, sharpness measures,
provenance) as an attribute. Hessian grid maps are surface files (:mod:`llv.storage.surface`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llv.errors import LlvError
from llv.h5 import atomic_h5, encode_attr, open_h5, read_attrs

FILE = "hessian.h5"
ARRAYS = ("eigenvalues", "density_nodes", "density_weights", "density_grid", "density")


@dataclass
class HessianPoint:
    """Spectrum of the Hessian at one point: top eigenvalues and the SLQ density."""

    path: Path
    eigenvalues: np.ndarray
    density_nodes: np.ndarray | None
    density_weights: np.ndarray | None
    density_grid: np.ndarray | None
    density: np.ndarray | None
    attrs: dict[str, object]


def read(path: str | Path) -> HessianPoint:
    """Read an ``llv hessian`` point file (eigenvalues, density nodes/weights)."""
    path = Path(path)
    what = "an llv Hessian point file (datasets eigenvalues, density_nodes, density_weights)"
    with open_h5(path, what) as h5:
        if "eigenvalues" not in h5 and "density_nodes" not in h5:
            hint = " (a Hessian grid: use 'llv plot hessian')" if "max_eig" in h5 else ""
            raise LlvError(f"not {what}: {path}{hint}")

        def read(name):
            return np.asarray(h5[name][()], dtype=float) if name in h5 else None

        point = HessianPoint(
            path=path,
            eigenvalues=read("eigenvalues") if "eigenvalues" in h5 else np.zeros(0),
            density_nodes=read("density_nodes"),
            density_weights=read("density_weights"),
            density_grid=read("density_grid"),
            density=read("density"),
            attrs=read_attrs(h5),
        )
    return point


def write(path: str | Path, result: dict, attrs: dict) -> Path:
    """Write a point file atomically: ``result``'s arrays (:data:`ARRAYS`) as datasets, its other
    entries and ``attrs`` as attributes; ``result["seconds"]`` (a dict) as ``seconds_<part>``."""
    path = Path(path)
    with atomic_h5(path, "Hessian file") as f:
        for name in ARRAYS:
            if name in result:
                f.create_dataset(name, data=np.asarray(result[name], dtype=np.float64))
        for key, value in result.items():
            if key not in ARRAYS and key != "seconds":
                f.attrs[key] = encode_attr(value)
        for key, value in (result.get("seconds") or {}).items():
            f.attrs[f"seconds_{key}"] = value
        for key, value in attrs.items():
            f.attrs[key] = encode_attr(value)
    return path
