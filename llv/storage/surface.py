"""Result files (SPEC §4): a grid of values per metric, a ``done`` mask, provenance attrs.

Values are kept in memory on the writing rank and the file is rewritten atomically (a temporary
file, then ``os.replace``) at most every ``flush_seconds`` and at the end. A run killed at any
moment, even with ``kill -9``, therefore leaves either the previous or the new complete file,
never a broken one; resuming recomputes only points whose ``done`` flag is not set. The files are
small (a 251×251 grid with six metrics is a few MB), so a rewrite costs milliseconds.

Layout: coordinate datasets (``xcoordinates`` [+ ``ycoordinates``], or ``alphas`` for
interpolations), one float64 dataset per metric shaped like the grid (``(ny, nx)``, value[iy, ix]
at (x[ix], y[iy]); ``(nx,)`` in 1D; a leading ensemble axis ``(K, …)`` when ``ensemble > 1``),
NaN where not computed, and the boolean ``done`` mask of the same shape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from llv.console import LlvError
from llv.h5 import encode_attr, open_h5, read_attrs

LLV_MARK = "llv_version"


class SurfaceFile:
    """A grid of results on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | Path, coordinates: Mapping[str, np.ndarray], shape: tuple[int, ...],
                 metrics: list[str], attrs: Mapping | None = None, values: Mapping | None = None,
                 done: np.ndarray | None = None, flush_seconds: float = 2.0):
        self.path = Path(path)
        self.coordinates = {k: np.asarray(v, dtype=np.float64) for k, v in coordinates.items()}
        self.shape = tuple(shape)
        self.metrics = list(metrics)
        self.attrs = dict(attrs or {})
        self.values = {m: np.full(self.shape, np.nan) for m in self.metrics}
        for name, array in (values or {}).items():
            self.values[name] = np.asarray(array, dtype=np.float64).reshape(self.shape)
        self.done = np.zeros(self.shape, dtype=bool) if done is None else np.asarray(done, bool).reshape(self.shape)
        self.flush_seconds = flush_seconds
        self._last_flush = 0.0
        self._dirty = True

    # -- reading ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> SurfaceFile:
        """Read an llv result file; anything else is a one-line error."""
        path = Path(path)
        with open_h5(path, "an llv result file") as f:
            if LLV_MARK not in f.attrs or "done" not in f:
                raise LlvError(f"{path} is not an llv result file (no {LLV_MARK} attr / done mask)")
            coordinates = {k: f[k][()] for k in ("xcoordinates", "ycoordinates", "alphas") if k in f}
            done = f["done"][()]
            metrics = [k for k in f.keys() if k not in coordinates and k != "done" and f[k].shape == done.shape]
            values = {m: f[m][()] for m in metrics}
            attrs = read_attrs(f)
        for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a kill during a rewrite
            stale.unlink(missing_ok=True)
        surface = cls(path, coordinates, done.shape, metrics, attrs, values, done)
        surface._dirty = False
        return surface

    # -- progress --------------------------------------------------------------------------------

    @property
    def num_points(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def pending(self) -> np.ndarray:
        """Flat indices (row-major over ``shape``) of points not yet done."""
        return np.flatnonzero(~self.done.reshape(-1))

    def record(self, indices: np.ndarray, results: Mapping[str, np.ndarray]) -> None:
        """Store results of flat point ``indices`` (in memory; see :meth:`flush`)."""
        indices = np.asarray(indices, dtype=np.int64)
        for name, array in results.items():
            if name not in self.values:
                raise KeyError(f"{self.path} has no metric {name}")
            self.values[name].reshape(-1)[indices] = array
        self.done.reshape(-1)[indices] = True
        self._dirty = True

    # -- writing ---------------------------------------------------------------------------------

    def flush(self, force: bool = False) -> bool:
        """Rewrite the file atomically if there is news and ``flush_seconds`` have passed."""
        if not self._dirty or (not force and time.monotonic() - self._last_flush < self.flush_seconds):
            return False
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with h5py.File(tmp, "w") as f:
            for name, array in self.coordinates.items():
                f.create_dataset(name, data=array)
            for name in self.metrics:
                f.create_dataset(name, data=self.values[name])
            f.create_dataset("done", data=self.done)
            for key, value in self.attrs.items():
                f.attrs[key] = encode_attr(value)
        os.replace(tmp, self.path)
        self._last_flush = time.monotonic()
        self._dirty = False
        return True

    def set_attrs(self, **attrs) -> None:
        self.attrs.update(attrs)
        self._dirty = True

    # -- resume checks ---------------------------------------------------------------------------

    def check_matches(self, coordinates: Mapping[str, np.ndarray], shape: tuple[int, ...],
                      metrics: list[str], provenance: Mapping[str, object]) -> None:
        """Refuse to resume a file made for another grid, metrics, directions or checkpoint."""
        where = f"cannot resume {self.path}"
        mine = {k: v for k, v in self.coordinates.items()}
        if set(mine) != set(coordinates) or tuple(shape) != self.shape or any(
                not np.allclose(mine[k], np.asarray(coordinates[k]), rtol=0, atol=1e-12) for k in mine):
            raise LlvError(f"{where}: its grid is {_describe(mine, self.shape)}, this run's is "
                           f"{_describe(coordinates, shape)}")
        missing = [m for m in metrics if m not in self.values]
        if missing:
            raise LlvError(f"{where}: it has no {', '.join(missing)} (other eval.splits or metrics)")
        for key, wanted in provenance.items():
            stored = self.attrs.get(key)
            if stored is not None and wanted is not None and str(stored) != str(wanted):
                raise LlvError(f"{where}: its {key.replace('_', ' ')} differs "
                               f"({str(stored)[:16]}… vs this run's {str(wanted)[:16]}…)")


def _describe(coordinates: Mapping[str, np.ndarray], shape) -> str:
    parts = [f"{k}={float(v[0]):g}:{float(v[-1]):g}:{len(v)}" for k, v in coordinates.items()]
    return f"{' '.join(parts)} shape {tuple(shape)}"
