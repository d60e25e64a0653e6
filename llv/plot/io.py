"""Reading stored results for plotting: llv and reference surface files, Hessian points, paths.

Every plot reads surfaces through :func:`load_surface`, which hides the two on-disk layouts:

- llv (SPEC §4): values shaped (ny, nx) with value[iy, ix] at (x[ix], y[iy]), NaN where not
  computed (and a ``done`` mask), optional leading ensemble axis K.
- the reference implementation (``tomgoldstein/loss-landscape``): arrays allocated as
  (len(x), len(y)) but filled in ``meshgrid(x, y)``-raveled order, -1 where not computed,
  ``dir_file`` stored as a dataset, no ``llv_version`` attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llv.console import LlvError
from llv.h5 import open_h5, read_attrs

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


def load_surface(path: str | Path) -> Surface:
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
    return Surface(path=path, x=x, y=y, values=values, attrs=attrs, reference=reference)


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


def load_hessian_point(path: str | Path) -> HessianPoint:
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


@dataclass
class Projection:
    """An optimizer path projected on its top-2 principal directions."""

    path: Path
    x: np.ndarray
    y: np.ndarray
    epochs: np.ndarray
    lr_drop_epochs: np.ndarray
    explained_variance_ratio: np.ndarray | None
    surface_file: Path | None
    attrs: dict[str, object]


def load_projection(path: str | Path) -> Projection:
    """Read an ``llv trajectory`` projection file; ``surface_file`` is resolved to a path."""
    path = Path(path)
    what = "an llv projection file (datasets proj_xcoord, proj_ycoord, epochs)"
    with open_h5(path, what) as h5:
        if "proj_xcoord" not in h5 or "proj_ycoord" not in h5:
            raise LlvError(f"not {what}: {path}")
        attrs = read_attrs(h5)
        x = np.asarray(h5["proj_xcoord"][()], dtype=float).ravel()
        y = np.asarray(h5["proj_ycoord"][()], dtype=float).ravel()
        epochs = np.asarray(h5["epochs"][()]).ravel() if "epochs" in h5 else np.arange(len(x))
        drops = (
            np.asarray(h5["lr_drop_epochs"][()]).ravel() if "lr_drop_epochs" in h5 else np.zeros(0)
        )
    ratio = attrs.get("explained_variance_ratio")
    ratio = np.asarray(ratio, dtype=float).ravel() if ratio is not None else None
    surface = attrs.get("surface_file")
    surface_file = (path.parent / str(surface)) if surface else None
    return Projection(
        path=path,
        x=x,
        y=y,
        epochs=epochs,
        lr_drop_epochs=drops,
        explained_variance_ratio=ratio,
        surface_file=surface_file,
        attrs=attrs,
    )
