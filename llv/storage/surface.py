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

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llv.errors import LlvError
from llv.h5 import atomic_h5, encode_attr, open_h5, read_attrs

LLV_MARK = "llv_version"
FILE = "surface.h5"
INTERPOLATION_FILE = "interpolation.h5"


# ------------------------------------------------------------------ reading (llv and reference)

_EXPECTED = "expected datasets xcoordinates/alphas and <split>_loss"
_NOT_VALUES = {"xcoordinates", "ycoordinates", "alphas", "done", "dir_file"}


@dataclass
class Surface:
    """A 1-D or 2-D grid of stored values, in llv's layout whatever the file's.

    Attributes:
        path: the file it was read from.
        x: first-axis coordinates (α), shape (nx,).
        y: second-axis coordinates (β), shape (ny,), or None for 1-D data.
        values: name -> array shaped (ny, nx) or (nx,), or (K, ny, nx) / (K, nx) for an
            ensemble of K members; NaN where not computed. Names are the file's datasets:
            ``train_loss``, ``test_acc``, ``train_loss_se``, ``max_eig``, ...
        attrs: the file's attributes (strings decoded).
        reference: True for a file written by the reference implementation.
    """

    path: Path
    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    attrs: dict[str, object] = field(default_factory=dict)
    reference: bool = False
    done: np.ndarray | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        """A stored metric by name, e.g. ``s["train_loss"]`` (NaN where not computed)."""
        if name not in self.values:
            raise KeyError(f"no metric {name!r}; this result has: {', '.join(self.values)}")
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    @property
    def ndim(self) -> int:
        return 2 if self.y is not None else 1

    @property
    def complete(self) -> bool:
        """Whether every point was computed."""
        return bool(self.done.all()) if self.done is not None else True

    @property
    def summary(self) -> dict[str, object]:
        """The figures computed at the end of a complete run (``summary_*`` attrs)."""
        return {k[len("summary_"):]: v for k, v in self.attrs.items() if k.startswith("summary_")}

    @property
    def is_2d(self) -> bool:
        return self.y is not None

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return (len(self.y), len(self.x)) if self.y is not None else (len(self.x),)

    @property
    def is_interpolation(self) -> bool:
        return self.attrs.get("command") == "interpolate"

    def members(self, name: str) -> np.ndarray | None:
        """The K ensemble members of ``name`` stacked on axis 0, or None if not an ensemble."""
        array = self.values[name]
        return array if array.ndim > len(self.grid_shape) else None

    def grid(self, name: str) -> np.ndarray:
        """``name`` on the grid: the value itself, or the median over an ensemble's members."""
        if name not in self.values:
            raise LlvError(
                f"{self.path} has no dataset '{name}' (it has: {', '.join(self.values)})"
            )
        members = self.members(name)
        if members is None:
            return self.values[name]
        with np.errstate(all="ignore"):
            return _nanmedian(members)

    def metrics(self, quantity: str) -> list[str]:
        """Stored names of one quantity (``loss`` or ``acc``), train before test."""
        names = [n for n in self.values if n.endswith(f"_{quantity}")]
        return sorted(names, key=lambda n: (not n.startswith("train"), n))

    def default_metric(self) -> str:
        """The quantity 2-D plots show: the training loss, else the first loss stored."""
        losses = self.metrics("loss")
        if not losses:
            raise LlvError(f"{self.path} has no loss to plot (it has: {', '.join(self.values)})")
        return losses[0]

    def describe(self) -> str:
        """A one-line description for titles: model, data set, normalization."""
        parts = [str(self.attrs[k]) for k in ("model", "dataset") if self.attrs.get(k)]
        if self.is_interpolation:
            parts.append("interpolation")
        elif self.attrs.get("norm"):
            parts.append(f"{self.attrs['norm']} norm")
        return " · ".join(parts) if parts else self.path.name


def _nanmedian(members: np.ndarray) -> np.ndarray:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        return np.nanmedian(members, axis=0)


def read(path: str | Path) -> Surface:
    """Read an llv or reference surface/interpolation/Hessian-grid file.

    Raises:
        LlvError: the file is missing or is not a loss-landscape file.
    """
    path = Path(path)
    with open_h5(path, "an llv or reference loss-landscape file") as h5:
        attrs = read_attrs(h5)
        x_name = "xcoordinates" if "xcoordinates" in h5 else "alphas" if "alphas" in h5 else None
        names = [n for n in h5 if n not in _NOT_VALUES and _is_numeric(h5[n])]
        has_values = any(n.endswith("_loss") or n in ("max_eig", "min_eig") for n in names)
        if x_name is None or not has_values:
            raise LlvError(
                f"not an llv or reference loss-landscape file: {path}, {_EXPECTED}" + _hint(h5)
            )
        x = np.asarray(h5[x_name][()], dtype=float).ravel()
        y = (
            np.asarray(h5["ycoordinates"][()], dtype=float).ravel()
            if "ycoordinates" in h5
            else None
        )
        reference = "llv_version" not in attrs
        shape = (len(y), len(x)) if y is not None else (len(x),)
        raw = {name: np.asarray(h5[name][()], dtype=float) for name in names}
        done = np.asarray(h5["done"][()], dtype=bool) if "done" in h5 and not reference else None
    if reference:
        values = {n: _reference_layout(a, shape, n, path) for n, a in raw.items()}
    else:
        values = {n: _llv_layout(a, shape, done, n, path) for n, a in raw.items()}
    values = {n: a for n, a in values.items() if a is not None}
    return Surface(path=path, x=x, y=y, values=values, attrs=attrs, reference=reference,
                   done=done if done is not None else np.isfinite(
                       values[next(iter(values))]) if values else None)


def _is_numeric(node) -> bool:
    import h5py

    return isinstance(node, h5py.Dataset) and node.dtype.kind in "fiub" and node.ndim >= 1


def _hint(h5) -> str:
    if "eigenvalues" in h5 or "density_nodes" in h5:
        return " (this is a Hessian point file: use 'llv plot spectrum')"
    if "proj_xcoord" in h5:
        return " (this is a projection file: use 'llv plot trajectory')"
    if "xdirection" in h5:
        return " (this is a direction file)"
    if "hist_counts" in h5:
        return " (this is a weight-statistics file: use 'llv plot weights')"
    return ""


def _reference_layout(array: np.ndarray, shape: tuple[int, ...], name: str, path: Path):
    if array.size != int(np.prod(shape)):
        return None  # not a grid quantity (e.g. a stray vector)
    # The reference allocates (nx, ny) but fills the buffer in meshgrid(x, y) order: row = iy.
    values = array.reshape(shape).copy()
    values[values == -1] = np.nan
    return values


def _llv_layout(array: np.ndarray, shape, done, name: str, path: Path):
    if array.shape[-len(shape) :] != shape or array.ndim > len(shape) + 1:
        if name.endswith("_loss") or name.endswith("_acc"):
            raise LlvError(
                f"{path}: dataset '{name}' has shape {array.shape}, expected "
                f"{shape} (or an ensemble axis in front)"
            )
        return None
    values = array.copy()
    if done is not None and done.shape[-len(shape) :] == shape and done.ndim <= values.ndim:
        values[~np.broadcast_to(done, values.shape)] = np.nan
    return values


# ------------------------------------------------------------------ writing and resuming


class SurfaceFile:
    """A grid of results on disk (see the module docstring for the layout)."""

    def __init__(self, path: str | Path | None, coordinates: Mapping[str, np.ndarray], shape: tuple[int, ...],
                 metrics: list[str], attrs: Mapping | None = None, values: Mapping | None = None,
                 done: np.ndarray | None = None, flush_seconds: float = 2.0):
        self.path = Path(path) if path is not None else None
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
            if "alphas" in coordinates:
                coordinates.pop("xcoordinates", None)  # the reference's alias of alphas
            done = f["done"][()]
            metrics = [k for k in f.keys() if k not in coordinates and k not in ("done", "xcoordinates")
                       and f[k].shape == done.shape]
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
        if self.path is None:
            return False
        if not self._dirty or (not force and time.monotonic() - self._last_flush < self.flush_seconds):
            return False
        with atomic_h5(self.path, "result file") as f:
            self._write(f)
        self._last_flush = time.monotonic()
        self._dirty = False
        return True

    def _write(self, f) -> None:
        """Datasets, HDF5 dimension scales (xarray and HDFView label the axes) and attrs."""
        for name, array in self.coordinates.items():
            f.create_dataset(name, data=array)
        if "alphas" in self.coordinates and "xcoordinates" not in self.coordinates:
            f["xcoordinates"] = f["alphas"]  # the reference's name, a hard link to the same data
        axes = [n for n in ("alphas", "xcoordinates", "ycoordinates") if n in self.coordinates]
        x_name = axes[0] if axes else None
        y_name = "ycoordinates" if "ycoordinates" in self.coordinates else None
        if x_name:
            f[x_name].make_scale("alpha" if x_name == "alphas" else "x")
        if y_name:
            f[y_name].make_scale("y")
        for name in [*self.metrics, "done"]:
            data = self.done if name == "done" else self.values[name]
            dataset = f.create_dataset(name, data=data)
            ndim = len(self.shape)
            if x_name and ndim >= 1 and len(self.coordinates[x_name]) == self.shape[-1]:
                dataset.dims[ndim - 1].attach_scale(f[x_name])
            if y_name and ndim >= 2 and len(self.coordinates[y_name]) == self.shape[-2]:
                dataset.dims[ndim - 2].attach_scale(f[y_name])
        for key, value in self.attrs.items():
            f.attrs[key] = encode_attr(value)

    def to_surface(self) -> Surface:
        """The in-memory result (values NaN where not done) as readers see it."""
        names = list(self.coordinates)
        x = self.coordinates[names[0]]
        y = self.coordinates.get("ycoordinates")
        return Surface(path=self.path, x=x, y=y,
                       values={m: v.copy() for m, v in self.values.items()},
                       attrs=dict(self.attrs), done=self.done.copy())

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
