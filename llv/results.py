"""Result objects of the Python API: numpy arrays, a summary, ``.save`` and ``.plot``.

A :class:`Surface` is what ``llv surface``, ``llv interpolate`` and Hessian grid maps store
(:mod:`llv.storage.surface`), with its coordinates ``x``/``y`` and metrics by name
(``s["train_loss"]``); ``.save(path)`` writes the file the command line writes, and ``.plot()``
draws with the rules ``llv plot`` uses; its directions go beside it (``dir_file``), and a
loaded surface reads them back. A :class:`Projection` is ``llv trajectory``'s path on its
principal directions, with the same ``.save``/``.plot``. :func:`load` opens any llv result
file, or a surface file of the reference implementation.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from llv.direction import file_digest, load_file
from llv.errors import LlvError
from llv.h5 import open_h5
from llv.storage import directions as direction_file
from llv.storage import hessian as hessian_file
from llv.storage import projection as projection_file
from llv.storage import surface as surface_file

__all__ = ["Density", "Eigenvalues", "HessianPoint", "Projection", "Surface", "Trace", "load"]

HessianPoint = hessian_file.HessianPoint

SIDE_DIRECTIONS = "{stem}.directions.h5"
"""Where a result's directions go when ``directions.h5`` beside it holds other directions."""


class _Directions:
    """``Surface.directions``: given, or for a loaded file read on first use from its
    ``dir_file`` (a dataclass field whose default is this descriptor's class access)."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            return None  # the field's default
        value = obj.__dict__.get(self.slot)
        if value is None and obj.__dict__.pop("_directions_pending", False):
            value = obj.__dict__[self.slot] = directions_of(obj)
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = value


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
        directions: the :class:`llv.direction.Directions` the surface was computed along; for a
            loaded file, its ``dir_file`` read on first use (None when that file is missing or
            holds other directions than the ones the surface records).
    """

    directions: object | None = _Directions()

    @classmethod
    def of(cls, data: surface_file.Surface, directions=None) -> Surface:
        fields = {k: getattr(data, k) for k in ("path", "x", "y", "values", "attrs", "reference", "done")}
        return cls(**fields, directions=directions)

    @property
    def direction_file(self) -> Path | None:
        """The file of this result's directions (its ``dir_file`` found beside the result, or
        as recorded), or None when there is none."""
        return find_dir_file(self.path, self.attrs)

    def save(self, path: str | Path) -> Path:
        """Write the file ``llv surface`` writes (``interpolation.h5``'s layout for an
        interpolation). Its directions go beside it: to ``directions.h5`` when that file is
        absent or holds the same directions, else to ``<stem>.directions.h5``, so a result
        never loses its directions to another one saved in the same folder; ``dir_file``
        records the name."""
        path = Path(path)
        names = ("alphas",) if self.attrs.get("command") == "interpolate" else ("xcoordinates",)
        coordinates = {names[0]: self.x}
        if self.y is not None:
            coordinates["ycoordinates"] = self.y
        attrs = dict(self.attrs)
        if self.directions is not None:
            attrs["dir_file"] = save_directions_beside(self.directions, path).name
            attrs["direction_sha256"] = self.directions.digest()
        shape = next(iter(self.values.values())).shape
        done = self.done if self.done is not None else np.isfinite(next(iter(self.values.values())))
        attrs.setdefault(surface_file.LLV_MARK, _version())
        writer = surface_file.SurfaceFile(path, coordinates, shape, list(self.values), attrs,
                                          self.values, done)
        writer.flush(force=True)
        self.path, self.attrs = path, attrs
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
class Projection(projection_file.Projection):
    """An optimizer path projected on its top-2 principal directions (``llv.trajectory``,
    ``llv trajectory``'s ``projection.h5``).

    Attributes:
        x, y: the path's coordinates on the two directions, θ_n last (at the origin).
        epochs: the epoch of each point; lr_drop_epochs: where the learning rate dropped.
        explained_variance_ratio: the share of the path each direction explains.
        surface_file: the surface drawn under the path (``llv trajectory``'s), or None.
        attrs: provenance (``singular_values``, ``center``, ``ignore``, ``type``, ...).
    """

    @classmethod
    def of(cls, data: projection_file.Projection) -> Projection:
        return cls(**{f.name: getattr(data, f.name) for f in fields(projection_file.Projection)})

    def save(self, path: str | Path, directions=None) -> Path:
        """Write the ``projection.h5`` that ``llv trajectory`` writes (its own writer); with
        ``directions`` (the PCA directions :func:`llv.trajectory` returns), write them beside it
        as :meth:`Surface.save` does and record their name in ``dir_file``."""
        path = Path(path)
        attrs = {k: v for k, v in self.attrs.items() if k not in _PROJECTION_ARGUMENTS}
        attrs.setdefault("surface_file", "")
        if self.surface_file is not None:
            attrs["surface_file"] = os.path.relpath(Path(self.surface_file).resolve(), path.resolve().parent)
        if directions is not None:
            attrs["dir_file"] = save_directions_beside(directions, path).name
        singular = self.attrs.get("singular_values")
        ratio = self.explained_variance_ratio
        projection_file.write(path, self.coordinates, self.epochs, self.lr_drop_epochs,
                              np.zeros(0) if ratio is None else ratio,
                              np.zeros(0) if singular is None else singular,
                              bool(self.attrs.get("center", False)), attrs)
        self.path = path
        self.attrs = {**self.attrs, **attrs}
        return path

    def plot(self, surface=None, **options):
        """The path over the loss contours of ``surface`` (a :class:`Surface` or a surface file;
        default the projection's own ``surface_file`` when it exists, else the path alone), with
        ``llv plot trajectory``'s figure: red dots at learning-rate drops, explained variance on
        the axes. Options are ``llv plot``'s: ``metric``, ``vmin``, ``vmax``, ``vlevel``,
        ``log``, ``smooth``. Returns the matplotlib Axes of the path (a new figure)."""
        from llv.plot._figure import PlotOptions
        from llv.plot.trajectory import figure_trajectory

        if surface is None and self.surface_file is not None and Path(self.surface_file).exists():
            surface = self.surface_file
        if isinstance(surface, (str, Path)):
            surface = surface_file.read(surface)
        drawn = self
        if surface is None and self.path is None and not (self.attrs.get("model") or self.attrs.get("dataset")):
            # the figure titles a bare path by its file's folder; an unsaved one by its epochs
            span = f"epochs {self.epochs[0]}-{self.epochs[-1]}" if len(self.epochs) else "path"
            drawn = dataclasses.replace(self, attrs={**self.attrs, "model": span})
        return figure_trajectory(drawn, surface, PlotOptions(**options)).axes[0]


_PROJECTION_ARGUMENTS = ("explained_variance_ratio", "singular_values", "center")
"""Projection attrs that :func:`llv.storage.projection.write` takes as arguments."""


def save_directions_beside(directions, path: Path) -> Path:
    """Write ``directions`` beside the result ``path`` and return their file: ``directions.h5``
    unless it holds other directions, then ``<stem>.directions.h5`` (a file holding the same
    directions is kept as it is)."""
    digest = directions.digest()
    beside = path.with_name(direction_file.FILE)
    if beside == path or (beside.exists() and file_digest(beside) != digest):
        beside = path.with_name(SIDE_DIRECTIONS.format(stem=path.stem))
    if not (beside.exists() and file_digest(beside) == digest):
        directions.save(beside)
    return beside


def find_dir_file(path: Path | None, attrs: dict) -> Path | None:
    """A result's ``dir_file`` (:func:`llv.storage.directions.dir_file_candidates`): the first
    place that holds the directions the result records (``direction_sha256``)."""
    from llv.storage.directions import dir_file_candidates

    expected = attrs.get("direction_sha256")
    for candidate in dir_file_candidates(path, attrs):
        if not expected or file_digest(candidate) == expected:
            return candidate
    return None


def directions_of(result) -> object | None:
    """The directions of a loaded result, read from its ``dir_file`` (:func:`find_dir_file`);
    None, with a warning, when no such file holds the directions the result records."""
    from llv.console import log

    found = find_dir_file(result.path, result.attrs)
    if found is None:
        if result.attrs.get("dir_file"):
            log.warning(f"the directions of {result.path} are not in {result.attrs['dir_file']} "
                        "(missing, or it holds other directions): .directions is None")
        return None
    try:
        directions = load_file(found)
    except LlvError as exc:
        log.warning(f"the directions of {result.path} are not readable: {exc}")
        return None
    expected = result.attrs.get("direction_sha256")
    if expected and directions.digest() != expected:
        log.warning(f"{found} holds other directions than {result.path} was computed along "
                    "(their SHA-256 differs from its direction_sha256): .directions is None")
        return None
    return directions


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
        return load_file(path)
    if "curve" in keys:  # llv.connect / llv interpolate path=bezier|polychain
        from llv.curves import Connection

        return Connection.load(path)
    if "proj_xcoord" in keys:
        return Projection.of(projection_file.read(path))
    if "eigenvalues" in keys or "density_nodes" in keys:
        return hessian_file.read(path)
    if keys & {"xcoordinates", "alphas"}:
        surface = Surface.of(surface_file.read(path))
        surface._directions_pending = bool(surface.attrs.get("dir_file"))  # read on first use
        return surface
    raise LlvError(f"{path} is not an llv or reference result file (no coordinates, directions, "
                   "eigenvalues or projection)")
