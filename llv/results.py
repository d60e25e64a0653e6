"""Result objects of the Python API: numpy arrays, a summary, ``.save`` and ``.plot``.

A :class:`Surface` is what ``llv surface``, ``llv interpolate`` and Hessian grid maps store
(:mod:`llv.storage.surface`), with its coordinates ``x``/``y`` and metrics by name
(``s["train_loss"]``); ``.save(path)`` writes the file the command line writes, and ``.plot()``
draws with the rules ``llv plot`` uses. :func:`load` opens any llv result file, or a surface
file of the reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llv.errors import LlvError
from llv.h5 import open_h5
from llv.storage import directions as direction_file
from llv.storage import hessian as hessian_file
from llv.storage import projection as projection_file
from llv.storage import surface as surface_file

__all__ = ["Density", "Eigenvalues", "HessianPoint", "Projection", "Surface", "Trace", "load"]

HessianPoint = hessian_file.HessianPoint
Projection = projection_file.Projection


@dataclass
class Surface(surface_file.Surface):
    """A 1-D or 2-D loss (and accuracy) surface, an interpolation, or a Hessian map.

    Attributes:
        x: first-axis coordinates (α), shape (nx,).
        y: second-axis coordinates (β), shape (ny,), or None in 1-D.
        values: metric name -> array shaped (ny, nx) (value[iy, ix] at (x[ix], y[iy])) or
            (nx,); NaN where not computed. ``s["train_loss"]`` reads one.
        attrs: provenance and the summary (``summary_*``), as in the file.
        done: which points were computed.
        directions: the :class:`llv.direction.Directions` the surface was computed along
            (None for a loaded file).
    """

    directions: object | None = None

    @classmethod
    def of(cls, data: surface_file.Surface, directions=None) -> Surface:
        fields = {k: getattr(data, k) for k in ("path", "x", "y", "values", "attrs", "reference", "done")}
        return cls(**fields, directions=directions)

    def save(self, path: str | Path) -> Path:
        """Write the file ``llv surface`` writes (``interpolation.h5``'s layout for an
        interpolation); its directions go to ``directions.h5`` beside it unless they were
        read from a file already."""
        path = Path(path)
        names = ("alphas",) if self.attrs.get("command") == "interpolate" else ("xcoordinates",)
        coordinates = {names[0]: self.x}
        if self.y is not None:
            coordinates["ycoordinates"] = self.y
        attrs = dict(self.attrs)
        if self.directions is not None and not attrs.get("dir_file"):
            dir_path = path.with_name(direction_file.FILE)
            self.directions.save(dir_path)
            attrs["dir_file"] = dir_path.name
        shape = next(iter(self.values.values())).shape
        done = self.done if self.done is not None else np.isfinite(next(iter(self.values.values())))
        attrs.setdefault(surface_file.LLV_MARK, _version())
        writer = surface_file.SurfaceFile(path, coordinates, shape, list(self.values), attrs,
                                          self.values, done)
        writer.flush(force=True)
        self.path = path
        return path

    def plot(self, kind: str | None = None, ax=None, **options):
        """Draw ``kind`` (``contour``, ``contourf``, ``heatmap``, ``surface3d``, ``1d``,
        ``hessian``; default ``contour`` in 2-D, ``1d`` in 1-D) on ``ax`` (a new figure if None)
        with the rules of ``llv plot``; returns the matplotlib Axes.

        Options are ``llv plot``'s: ``vmin``, ``vmax``, ``vlevel``, ``log`` (None: automatic).
        """
        from llv.plot import draw

        kind = kind or ("contour" if self.y is not None else "1d")
        return draw(kind, self, ax=ax, **options)


@dataclass
class Eigenvalues:
    """Hessian eigenvalues with the work they took.

    Attributes:
        values: the eigenvalues asked for (largest first for ``top``; ``[λmax, λmin]`` for
            ``extremes``).
        vectors: unit eigenvectors (flat, in the operator's parameter order), or None.
        residuals: ‖Hv − λv‖ / |λ| of each pair, the error estimate (an eigenvalue of H lies
            within it, relative); for ``extremes`` without vectors, v is the refined Ritz
            vector, the Krylov space's unit vector of smallest residual.
        num_hvp: Hessian-vector products used.
    """

    values: np.ndarray
    num_hvp: int
    residuals: np.ndarray | None = None
    vectors: object | None = None

    @property
    def lambda_max(self) -> float:
        return float(np.max(self.values))

    @property
    def lambda_min(self) -> float:
        return float(np.min(self.values))


@dataclass
class Trace:
    """The Hessian's trace by Hutchinson's estimator: value ± standard error."""

    value: float
    stderr: float
    num_hvp: int
    probes: int = 0


@dataclass
class Density:
    """The eigenvalue density by stochastic Lanczos quadrature, smoothed on ``grid``."""

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    num_hvp: int
    extra: dict = field(default_factory=dict)


def _version() -> str:
    from llv import __version__

    return __version__


def load(path: str | Path):
    """Open any llv result file, or a result file of the reference implementation.

    Returns a :class:`Surface` (surfaces, interpolations, Hessian maps, the reference's surface
    files), a :class:`HessianPoint` (``llv hessian`` at a point), a :class:`Projection`
    (``llv trajectory``'s path), a :class:`llv.direction.Directions` (direction files) or a
    :class:`llv.curves.Connection` (a low-loss curve between two models).
    """
    path = Path(path)
    with open_h5(path, "an llv or reference result file") as f:
        keys = set(f.keys())
    if "xdirection" in keys:
        return _load_directions(path)
    if "curve" in keys:  # llv.connect / llv interpolate path=bezier|polychain
        from llv.curves import Connection

        return Connection.load(path)
    if "proj_xcoord" in keys:
        return projection_file.read(path)
    if "eigenvalues" in keys or "density_nodes" in keys:
        return hessian_file.read(path)
    if keys & {"xcoordinates", "alphas"}:
        return Surface.of(surface_file.read(path))
    raise LlvError(f"{path} is not an llv or reference result file (no coordinates, directions, "
                   "eigenvalues or projection)")


def _load_directions(path: Path):
    import h5py
    import torch

    from llv.direction import Directions
    from llv.params import ParameterSpace

    with h5py.File(path, "r") as f:
        count = len(f["xdirection"].keys())
        shapes = [torch.Size(f["xdirection"][str(i)].shape) for i in range(count)]
        names = f.attrs.get("names")
        space_type = f.attrs.get("type", "weights")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names is not None else [
        str(i) for i in range(count)]
    space_type = space_type.decode() if isinstance(space_type, bytes) else str(space_type)
    space = ParameterSpace(space_type, names, shapes, [True] * count)
    axes, ndim, attrs = direction_file.read(path, names, shapes, space_type)
    return Directions(space, axes, ndim, attrs)
