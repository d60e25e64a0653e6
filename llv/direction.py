"""Plot directions: random (seeded, drawn on the CPU), target, from a file; normalizations; files.

A direction is a list of tensors aligned with a :class:`~llv.params.ParameterSpace`. A set of
directions has one or two axes (x, y) per ensemble member; member ``k`` of an ensemble uses
``direction.seed + k``, so it equals a single run with that seed.

Direction file (HDF5, the reference implementation's layout): groups ``xdirection`` and
``ydirection`` holding datasets ``"0"``, ``"1"``, … in the space's order; ensemble member
``k > 0`` adds groups ``xdirection_k`` / ``ydirection_k``. Root attrs: ``kind``, ``norm``,
``ignore``, ``type``, ``seed``, ``checkpoint_sha256``, ``ensemble``, ``names``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from llv.console import LlvError, log
from llv.params import ParameterSpace, flatten, unflatten
from llv.storage import directions as direction_file

NORMALIZATIONS = ("filter", "layer", "weight", "dfilter", "dlayer", "none")
IGNORE = ("biasbn", "none")
_EPS = 1e-10  # as the reference: keeps a zero filter from dividing by zero


@dataclass
class Directions:
    """``axes`` = [x0, y0, x1, y1, …] (member-major); ``ndim`` axes per member."""

    space: ParameterSpace
    axes: list[list[torch.Tensor]]
    ndim: int
    attrs: dict = field(default_factory=dict)

    @property
    def ensemble(self) -> int:
        return len(self.axes) // self.ndim

    def flat(self, dtype=torch.float32) -> torch.Tensor:
        """(len(axes), P) matrix of the flattened perturbed entries."""
        return torch.stack([flatten(self.space, [t.to(dtype) for t in axis]) for axis in self.axes])

    def save(self, path: str | Path, extra_attrs: dict | None = None) -> Path:
        """Write the reference implementation's direction-file layout (atomically)."""
        attrs = {**self.attrs, **(extra_attrs or {})}
        attrs.setdefault("ensemble", self.ensemble)
        attrs["names"] = list(self.space.names)
        attrs["sha256"] = self.digest()
        return direction_file.write(path, self.axes, self.ndim, attrs)

    @classmethod
    def load(cls, path: str | Path, model_or_space, ndim: int | None = None,
             type: str = "weights") -> Directions:
        """Read a direction file (llv's or the reference's) for a model (or a parameter space)."""
        space = model_or_space if isinstance(model_or_space, ParameterSpace) else ParameterSpace.of(
            model_or_space, type)
        return load(path, space, ndim)

    def digest(self) -> str:
        """SHA-256 of the direction values (float32 bytes), for provenance and resume checks."""
        h = hashlib.sha256()
        for axis in self.axes:
            for t in axis:
                h.update(np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy()).tobytes())
        return h.hexdigest()


# ------------------------------------------------------------------------------ normalizations


def normalize(direction: list[torch.Tensor], values: list[torch.Tensor], norm: str = "filter",
              ignore: str = "biasbn") -> list[torch.Tensor]:
    """Rescale a direction tensor by tensor (SPEC §3); returns new tensors.

    Tensors of one dimension or fewer (biases, BN weights/statistics) become zero
    (``ignore="biasbn"``) or equal to θ (``ignore="none"``, the reference's choice).

    >>> w = [torch.tensor([[3.0, 4.0], [0.0, 1.0]])]
    >>> normalize([torch.tensor([[1.0, 0.0], [0.0, 2.0]])], w, "filter")[0]
    tensor([[5., 0.],
            [0., 1.]])
    """
    if norm not in NORMALIZATIONS:
        raise LlvError(f"unknown norm '{norm}'; valid: {', '.join(NORMALIZATIONS)}")
    if ignore not in IGNORE:
        raise LlvError(f"unknown direction.ignore '{ignore}'; valid: {', '.join(IGNORE)}")
    out = []
    for d, w in zip(direction, values):
        d = d.to(torch.float32)
        if not w.is_floating_point():
            out.append(torch.zeros(w.shape))
        elif w.dim() <= 1:
            out.append(torch.zeros_like(d) if ignore == "biasbn" else w.detach().to(d).clone())
        else:
            out.append(_NORMALIZE[norm](d, w.detach().to(d)))
    return out


def _filter(d, w):
    dims = tuple(range(1, d.dim()))
    return d / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + _EPS) * torch.linalg.vector_norm(w, dim=dims, keepdim=True)


def _dfilter(d, w):
    dims = tuple(range(1, d.dim()))
    return d / (torch.linalg.vector_norm(d, dim=dims, keepdim=True) + _EPS)


_NORMALIZE: dict[str, Callable] = {
    "filter": _filter,
    "layer": lambda d, w: d / (d.norm() + _EPS) * w.norm(),
    "weight": lambda d, w: d * w,
    "dfilter": _dfilter,
    "dlayer": lambda d, w: d / (d.norm() + _EPS),
    "none": lambda d, w: d.clone(),
}


# ------------------------------------------------------------------------------ kinds of direction


def axis_seed(seed: int, axis: int) -> int:
    """Independent streams for x (axis 0) and y (axis 1) from one user seed."""
    return int(np.random.SeedSequence([int(seed), int(axis)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def random_direction(space: ParameterSpace, seed: int) -> list[torch.Tensor]:
    """Gaussian N(0, 1) tensors drawn on the CPU with a private generator (same on any device)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) if floating else torch.zeros(shape)
            for shape, floating in zip(space.shapes, space.floating)]


def target_direction(space: ParameterSpace, values_a, values_b) -> list[torch.Tensor]:
    """θ_B − θ_A (zero on integer entries)."""
    return [(b.to(torch.float32) - a.to(torch.float32)) if a.is_floating_point() else torch.zeros(a.shape)
            for a, b in zip(values_a, values_b)]


def orthogonalize(x: list[torch.Tensor], y: list[torch.Tensor], space: ParameterSpace) -> list[torch.Tensor]:
    """Gram-Schmidt: y − (y·x / x·x) x over the perturbed entries."""
    fx, fy = flatten(space, x).double(), flatten(space, y).double()
    coefficient = float(fy @ fx / (fx @ fx))
    return [b - coefficient * a for a, b in zip(x, y)]


def make_random(space: ParameterSpace, values, ndim: int, seed: int = 0, norm: str = "filter",
                ignore: str = "biasbn", ensemble: int = 1, orthogonal: bool = False) -> Directions:
    """Seeded, normalized random directions (member k uses seed + k)."""
    axes = []
    for member in range(ensemble):
        member_axes = [normalize(random_direction(space, axis_seed(seed + member, a)), values, norm, ignore)
                       for a in range(ndim)]
        if orthogonal and ndim == 2:
            member_axes[1] = orthogonalize(member_axes[0], member_axes[1], space)
        axes += member_axes
    attrs = {"kind": "random", "norm": norm, "ignore": ignore, "type": space.type, "seed": int(seed),
             "ensemble": int(ensemble), "orthogonalize": bool(orthogonal)}
    return Directions(space, axes, ndim, attrs)


# ------------------------------------------------------------------------------ files


def load(path: str | Path, space: ParameterSpace, ndim: int | None = None) -> Directions:
    """Read llv's or the reference implementation's direction file, checked against ``space``."""
    axes, ndim, attrs = direction_file.read(path, space.names, space.shapes, space.type, ndim)
    return Directions(space, axes, ndim, attrs)


def load_file(path: str | Path) -> Directions:
    """A direction file read without a model: its tensors' names and shapes come from the file
    (positions ``0, 1, …`` for the reference's files, which store no names)."""
    import h5py

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


def file_digest(path: str | Path) -> str | None:
    """The SHA-256 of the directions in a direction file (llv records it; computed for the
    reference's files); None for a file that is not one."""
    try:
        return direction_file.recorded_digest(path) or load_file(path).digest()
    except (LlvError, OSError, KeyError, ValueError):
        return None


def save(directions: Directions, path: str | Path, extra_attrs: dict | None = None) -> Path:
    """Write a direction file atomically (a killed run never leaves half a file)."""
    return directions.save(path, extra_attrs)


def log_summary(directions: Directions) -> None:
    a = directions.attrs
    log.info(f"directions: kind={a.get('kind')} type={directions.space.type} norm={a.get('norm')} "
             f"ignore={a.get('ignore')} axes={directions.ndim} ensemble={directions.ensemble}")


# ------------------------------------------------------------------------------ the plane through three models


def plane_directions(space: ParameterSpace, values_a, values_b, values_c,
                     orthogonalize: bool = False) -> Directions:
    """The plane through three models A, B, C (the reference's ``--model_file2 --model_file3``).

    Plain (default): x = θ_B − θ_A and y = θ_C − θ_A, so A, B and C sit at (0, 0), (1, 0) and
    (0, 1). ``orthogonalize=True``: an orthonormal basis of the same plane (Gram-Schmidt over
    the perturbed entries, x along θ_B − θ_A, both of unit norm), so distances in the figure are
    distances in parameter space; A, B and C then sit at (0, 0), (|θ_B − θ_A|, 0) and
    (x_C, y_C). Either way their coordinates are stored as the attribute
    ``plane_coordinates`` (rows A, B, C) for figures to mark them. Every floating entry moves
    (biases and BatchNorm parameters too), so each vertex is that model exactly.

    >>> space = ParameterSpace.of(torch.nn.Linear(2, 1, bias=False))
    >>> a, b, c = [torch.zeros(1, 2)], [torch.tensor([[2.0, 0.0]])], [torch.tensor([[1.0, 3.0]])]
    >>> plane_directions(space, a, b, c, orthogonalize=True).attrs["plane_coordinates"].tolist()
    [[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]]
    """
    x = target_direction(space, values_a, values_b)
    y = target_direction(space, values_a, values_c)
    coordinates = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    if orthogonalize:
        fx, fy = flatten(space, x).double(), flatten(space, y).double()
        length_x = float(fx.norm())
        if length_x == 0.0:
            raise LlvError("models A and B are the same point: the plane is not defined")
        unit_x = fx / length_x
        along = float(fy @ unit_x)
        rest = fy - along * unit_x
        length_y = float(rest.norm())
        if length_y <= 1e-5 * max(length_x, float(fy.norm())):  # float32 rounding of a line
            raise LlvError("the three models lie on one line: the plane is not defined")
        x = _as_tensors(space, unit_x.float())
        y = _as_tensors(space, (rest / length_y).float())
        coordinates = np.array([[0.0, 0.0], [length_x, 0.0], [along, length_y]])
    attrs = {"kind": "plane", "norm": "none", "ignore": "none", "type": space.type, "seed": 0,
             "orthogonalize": bool(orthogonalize), "plane_coordinates": coordinates,
             "plane_labels": ["A", "B", "C"]}
    return Directions(space, [x, y], 2, attrs)


def _as_tensors(space: ParameterSpace, vector: torch.Tensor) -> list[torch.Tensor]:
    """A flat vector as tensors aligned with ``space.names`` (zeros on integer entries)."""
    named = unflatten(space, vector)
    return [named[n].clone() if n in named else torch.zeros(shape)
            for n, shape in zip(space.names, space.shapes)]
