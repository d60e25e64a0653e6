"""PCA of a training path (paper §7): principal directions, explained variance, the projected path.

The path is the sequence of checkpoints θ_0, …, θ_n of a train run; its rows are
``r_i = θ_i − θ_n`` over the perturbed entries of a :class:`~llv.params.ParameterSpace`
(``ignore="biasbn"`` leaves out tensors of one dimension, as plot directions do).

Convention: **no centering** (``center=False``, the default). The figure is the plane through
θ_n spanned by the two directions, and the surface is evaluated on that plane. The uncentered
SVD of M = [r_0; …; r_{n−1}] gives the plane through θ_n that is closest to the path (least
squares), and its explained-variance ratio σ_k² / ‖M‖_F² is the share of the path's squared
distance from θ_n that the drawn plane shows. ``center=True`` is the reference implementation's
convention (scikit-learn's PCA, which subtracts the mean of the rows; as the reference, the
rows include θ_n's own zero row): it fits a plane through the path's mean, which is then moved
to θ_n for the figure. Either way the path is projected uncentered, ``c_ik = r_i · v_k``, so θ_n
lies at (0, 0).

Sign: each direction points so that the path point farthest from θ_n along it has a positive
coordinate.

Memory: nothing of size n × P is ever held unless it fits ``memory_bytes``. The n × n Gram
matrix G = M Mᵀ is accumulated in float64 from blocks of rows (two blocks in memory at a time;
a checkpoint is loaded once per block that precedes its own, plus once for the directions),
its eigenvectors u_k give σ_k² and the coordinates (M v_k = G u_k / σ_k), and the directions
v_k = Mᵀ u_k / σ_k are accumulated in one more streamed pass. When all rows fit one block,
every checkpoint is loaded exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llv.console import LlvError, log
from llv.direction import IGNORE, Directions, axis_seed
from llv.grid import Axis, GridSpec
from llv.params import ParameterSpace, unflatten
from llv.storage import trainrun

DEFAULT_MEMORY_BYTES = 2 * 1024**3
_COLUMN_CHUNK_BYTES = 64 * 1024**2  # float64 scratch per matmul step
_DEGENERATE = 1e-10  # σ_2² below this fraction of σ_1²: the path spans a line, not a plane

StateLoader = Callable[[object], Mapping[str, torch.Tensor]]


@dataclass
class PathPCA:
    """The two principal directions of a path and the path projected on them.

    ``coordinates[i]`` is ``(r_i · v_1, r_i · v_2)`` for every point of the path, θ_n (last) at
    ``(0, 0)``; ``explained_variance_ratio`` is per axis (a fraction); ``checkpoint_loads``
    counts the files read (the memory/time trade-off of ``memory_bytes``).
    """

    directions: Directions
    coordinates: np.ndarray
    explained_variance_ratio: np.ndarray
    singular_values: np.ndarray
    center: bool
    checkpoint_loads: int


def path_pca(space: ParameterSpace, checkpoints: Sequence, *, ignore: str = "biasbn",
             center: bool = False, memory_bytes: int = DEFAULT_MEMORY_BYTES, seed: int = 0,
             load: StateLoader | None = None) -> PathPCA:
    """Top-2 principal directions of the path ``checkpoints`` (θ_0 first, θ_n last).

    Args:
        space: The tensors that make a direction (``weights`` or ``states`` of the model).
        checkpoints: Checkpoint files (or anything ``load`` accepts), in path order.
        ignore: ``biasbn`` leaves tensors of one dimension out of M (their directions are zero);
            ``none`` keeps them.
        center: Subtract the rows' mean before the SVD (the reference's scikit-learn PCA).
        memory_bytes: Budget for the rows held at once (two blocks of float32 rows).
        seed: Seed of the fallback y direction when the path is a straight line.
        load: ``item -> state_dict``; default reads llv's, bare and reference checkpoints.

    Returns:
        The directions (kind ``pca``, unit norm, float32), the projected path and the ratios.
    """
    if ignore not in IGNORE:
        raise LlvError(f"unknown direction.ignore '{ignore}'; valid: {', '.join(IGNORE)}")
    if len(checkpoints) < 3:
        raise LlvError(f"a trajectory needs at least 3 checkpoints, got {len(checkpoints)}")
    rows = _PathRows(space, checkpoints, ignore, load)
    n = len(checkpoints) - 1  # θ_n's own row is zero and never stored
    per_block = max(1, int(memory_bytes) // (2 * 4 * max(rows.numel, 1)))
    blocks = [list(range(s, min(s + per_block, n))) for s in range(0, n, per_block)]
    gram, last = _gram(rows, blocks)
    weights, coordinates, ratio, sigma, line = _pca_from_gram(gram, center)
    if line:
        log.warning("the path is (numerically) a straight line: the 2nd direction is a random "
                    "one orthogonal to the 1st, with every path point at 0 on it")
    flat, seen = _directions_pass(rows, blocks, last, weights, line, seed)
    if line:
        flat[1], coordinates[:, 1] = _orthogonal_fallback(flat[0], seen, coordinates[:, 0])
    axes = [rows.unflatten(flat[k]) for k in range(2)]
    attrs = {
        "kind": "pca", "norm": "none", "ignore": ignore, "type": space.type, "seed": int(seed),
        "center": bool(center), "explained_variance_ratio_": ratio.astype(np.float64),
        "singular_values_": sigma.astype(np.float64),
        "explained_variance_": (sigma**2 / n).astype(np.float64),  # scikit-learn: over rows − 1
        "path_points": n + 1,
    }
    return PathPCA(Directions(space, axes, 2, attrs), coordinates, ratio, sigma, bool(center),
                   rows.loads)


# ------------------------------------------------------------------------------ streamed rows


class _PathRows:
    """Rows ``θ_i − θ_n`` (float32) over the kept entries, read from checkpoints on demand."""

    def __init__(self, space: ParameterSpace, checkpoints: Sequence, ignore: str,
                 load: StateLoader | None):
        self.space = space
        self.checkpoints = list(checkpoints)
        self.load = load or _load_state
        self.kept = [(name, torch.Size(shape)) for name, shape, floating
                     in zip(space.names, space.shapes, space.floating, strict=True)
                     if floating and (ignore == "none" or len(shape) > 1)]
        if not self.kept:
            raise LlvError(f"no {space.type} tensors are left to project (direction.ignore={ignore}"
                           " leaves out every tensor of one dimension): use direction.ignore=none")
        self.numel = sum(shape.numel() for _, shape in self.kept)
        self.loads = 0
        self.final = self._read(len(self.checkpoints) - 1)

    def _read(self, index: int) -> torch.Tensor:
        item = self.checkpoints[index]
        state = self.load(item)
        self.loads += 1
        parts = []
        for name, shape in self.kept:
            tensor = state.get(name)
            if tensor is None:
                raise LlvError(f"checkpoint {item} does not fit the model: it has no '{name}'")
            if tuple(tensor.shape) != tuple(shape):
                raise LlvError(f"checkpoint {item} does not fit the model: '{name}' has shape "
                               f"{list(tensor.shape)}, the model's is {list(shape)}")
            parts.append(tensor.detach().reshape(-1).to(torch.float64))
        return torch.cat(parts)

    def block(self, indices: list[int]) -> torch.Tensor:
        """(len(indices), numel) float32 rows; the difference is taken in float64."""
        out = torch.empty(len(indices), self.numel, dtype=torch.float32)
        for row, index in enumerate(indices):
            out[row] = self._read(index) - self.final
        return out

    def unflatten(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """Tensors aligned with the space's names; zero where the entries were left out."""
        kept = ParameterSpace(self.space.type, [n for n, _ in self.kept], [s for _, s in self.kept],
                              [True] * len(self.kept))
        by_name = {n: t.to(torch.float32) for n, t in unflatten(kept, vector).items()}
        return [by_name.get(name, torch.zeros(shape))
                for name, shape in zip(self.space.names, self.space.shapes, strict=True)]


def _load_state(path) -> Mapping[str, torch.Tensor]:
    from llv.checkpoint import load_state_dict

    return load_state_dict(path)[0]


def _column_chunk(rows: int) -> int:
    return max(4096, _COLUMN_CHUNK_BYTES // (8 * max(rows, 1)))


def _cross(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``a @ b.T`` accumulated in float64 over column chunks (bounded scratch memory)."""
    out = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    step = _column_chunk(a.shape[0] + b.shape[0])
    for s in range(0, a.shape[1], step):
        out += a[:, s:s + step].double() @ b[:, s:s + step].double().T
    return out.numpy()


def _gram(rows: _PathRows, blocks: list[list[int]]) -> tuple[np.ndarray, tuple]:
    """G = M Mᵀ block by block; also the last block loaded (reused by the directions pass)."""
    n = sum(len(b) for b in blocks)
    gram = np.zeros((n, n))
    held = None
    for bi, rows_i in enumerate(blocks):
        a = rows.block(rows_i)
        gram[np.ix_(rows_i, rows_i)] = _cross(a, a)
        for rows_j in blocks[bi + 1:]:
            b = rows.block(rows_j)
            g = _cross(a, b)
            gram[np.ix_(rows_i, rows_j)] = g
            gram[np.ix_(rows_j, rows_i)] = g.T
        held = (bi, a)
    return (gram + gram.T) / 2, held


def _pca_from_gram(gram: np.ndarray, center: bool):
    """Row weights W (v_k = Mᵀ W[:, k]), coordinates, ratios and σ from the n × n Gram matrix.

    The matrix gets θ_n's zero row back (it matters only for the mean when centering).
    """
    n = gram.shape[0]
    m = n + 1
    full = np.zeros((m, m))
    full[:n, :n] = gram
    c = np.eye(m) - (1.0 / m if center else 0.0)
    second_moment = c @ full @ c
    eigenvalues, vectors = np.linalg.eigh(second_moment)
    order = np.argsort(eigenvalues)[::-1][:2]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    total = float(np.trace(second_moment))
    if not eigenvalues[0] > 0 or not total > 0:
        raise LlvError("every checkpoint of the path has the same weights: no path to project")
    line = eigenvalues[1] <= _DEGENERATE * eigenvalues[0]
    sigma = np.sqrt(eigenvalues)
    weights = c @ vectors
    weights[:, 0] /= sigma[0]
    weights[:, 1] = weights[:, 1] / sigma[1] if not line else 0.0
    coordinates = full @ weights
    for k in range(2):
        far = int(np.argmax(np.abs(coordinates[:, k])))
        if coordinates[far, k] < 0:
            weights[:, k] *= -1
            coordinates[:, k] *= -1
    coordinates[-1] = 0.0  # θ_n − θ_n, exactly
    return weights[:n], coordinates, eigenvalues / total, sigma, bool(line)


def _directions_pass(rows: _PathRows, blocks: list[list[int]], held: tuple, weights: np.ndarray,
                     line: bool, seed: int) -> tuple[torch.Tensor, tuple | None]:
    """v_k = Σ_i W[i, k] r_i over all rows (float64, 2 × numel); the held block is not reloaded.

    For a straight-line path it also returns (g, M g) for a seeded Gaussian g (the fallback y).
    """
    flat = torch.zeros(2, rows.numel, dtype=torch.float64)
    w = torch.from_numpy(weights)
    gaussian = None
    if line:
        generator = torch.Generator().manual_seed(axis_seed(seed, 1))
        gaussian = torch.randn(rows.numel, generator=generator, dtype=torch.float64)
        seen = np.zeros(len(weights))
    for bi, indices in enumerate(blocks):
        a = held[1] if bi == held[0] else rows.block(indices)
        step = _column_chunk(len(indices))
        for s in range(0, rows.numel, step):
            part = a[:, s:s + step].double()
            flat[:, s:s + step] += w[indices].T @ part
            if line:
                seen[indices] += (part @ gaussian[s:s + step]).numpy()
    return flat, ((gaussian, np.append(seen, 0.0)) if line else None)


def _orthogonal_fallback(x: torch.Tensor, seen: tuple, x_coordinates: np.ndarray):
    """A unit y ⟂ x from the Gaussian g, and the path's coordinates on it (from M g)."""
    gaussian, projected = seen
    along = float(gaussian @ x)
    y = gaussian - along * x
    norm = float(y.norm())
    y_coordinates = (projected - along * x_coordinates) / norm
    y_coordinates[-1] = 0.0
    sign = -1.0 if y_coordinates[int(np.argmax(np.abs(y_coordinates)))] < 0 else 1.0
    return sign * y / norm, sign * y_coordinates


# ------------------------------------------------------------------------------ train runs


def saved_epochs(run_dir: Path) -> dict[int, Path]:
    """``epoch -> checkpoint`` of a train run (``checkpoints/epoch_NNN.pt``, and ``final.pt`` when
    its epoch has no epoch file), in epoch order."""
    found = dict(trainrun.epoch_checkpoints(run_dir))
    final = Path(run_dir) / trainrun.FINAL
    if final.is_file():
        epoch = _final_epoch(run_dir, final)
        if epoch is not None and epoch not in found and (not found or epoch > max(found)):
            found[epoch] = final
    return dict(sorted(found.items()))


def _final_epoch(run_dir: Path, final: Path) -> int | None:
    rows = trainrun.read_metrics(run_dir)
    if rows:
        return int(rows[-1]["epoch"])
    from llv.checkpoint import load_state_dict

    epoch = load_state_dict(final)[1].get("epoch")
    return int(epoch) if epoch is not None else None


def choose_epochs(run_dir: Path, epochs: Sequence[int] | None) -> list[tuple[int, Path]]:
    """The checkpoints of ``epochs`` (default every saved one), sorted; θ_n is the last."""
    saved = saved_epochs(run_dir)
    if not saved:
        raise LlvError(f"train run {run_dir} has no checkpoints (checkpoints/epoch_NNN.pt)")
    wanted = sorted({int(e) for e in epochs}) if epochs else list(saved)
    missing = [e for e in wanted if e not in saved]
    if missing:
        raise LlvError(f"train run {run_dir} has no checkpoint for epoch(s) {_short(missing)}; "
                       f"saved epochs: {_short(list(saved))}")
    if len(wanted) < 3:
        raise LlvError(f"a trajectory needs at least 3 epochs, {run_dir} gives {len(wanted)} "
                       f"({_short(wanted)}): train longer or save more often (train.save_every)")
    return [(e, saved[e]) for e in wanted]


def lr_drop_epochs(rows: Sequence[Mapping]) -> np.ndarray:
    """Epochs after which the learning rate was lowered: the checkpoint where the path turns.

    A row's ``lr`` is the rate used during that epoch, so a drop at milestone m shows as
    ``lr[m + 1] < lr[m]`` and is reported as epoch m (the scheduler's milestone).

    >>> rates = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001]
    >>> lr_drop_epochs([{"epoch": e, "lr": lr} for e, lr in enumerate(rates)]).tolist()
    [2, 4]
    """
    epochs = [int(r["epoch"]) for r in rows]
    rates = [float(r["lr"]) for r in rows]
    return np.array([epochs[i - 1] for i in range(1, len(rows)) if rates[i] < rates[i - 1]],
                    dtype=np.int64)


def _short(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs)) if len(epochs) <= 8 else (
        f"{', '.join(map(str, epochs[:4]))}, …, {', '.join(map(str, epochs[-2:]))}")


# ------------------------------------------------------------------------------ the box, the file


Interval = tuple[float, float]


def path_box(coordinates: np.ndarray, margin: float) -> tuple[Interval, Interval]:
    """((xmin, xmax), (ymin, ymax)) holding every point, widened by ``margin`` × width per side.

    An axis of zero width borrows the other axis's width (or 1).

    >>> path_box(np.array([[2.0, -1.0], [0.0, 0.0], [1.0, 1.0]]), 0.25)
    ((-0.5, 2.5), (-1.5, 1.5))
    """
    if margin < 0:
        raise LlvError(f"trajectory.margin must be >= 0, got {margin}")
    lo, hi = coordinates.min(axis=0), coordinates.max(axis=0)
    width = hi - lo
    fallback = float(width.max()) if width.max() > 0 else 1.0
    box = []
    for k in range(2):
        if width[k] > 0:
            pad = margin * width[k]
            box.append((float(lo[k] - pad), float(hi[k] + pad)))
        else:
            box.append((float(lo[k] - fallback / 2), float(hi[k] + fallback / 2)))
    return box[0], box[1]


def box_grid(box, resolution):
    """A :class:`~llv.grid.GridSpec` over ``box`` with the numbers of points of ``resolution``,
    each axis widened just enough that 0 — θ_n, the trained model — is one of its points: the
    summary's centre and its curvature cross-check are then at θ_n itself, not at the grid
    point nearest it.

    >>> grid = box_grid(((-0.85, 2.4), (-1.0, 1.0)), GridSpec(Axis(-1, 1, 5), Axis(-1, 1, 5)))
    >>> [round(float(c), 4) for c in grid.x.coordinates()]
    [-0.85, 0.0, 0.85, 1.7, 2.55]
    """
    if resolution.ndim != 2:
        raise LlvError("llv trajectory needs a 2D grid for its surface (grid=21x21, or "
                       "grid.x=...:...:NX grid.y=...:...:NY; only NX and NY are used)")
    return GridSpec(*(_through_zero(lo, hi, axis.num) for (lo, hi), axis in zip(box, (resolution.x, resolution.y))))


def _through_zero(lo: float, hi: float, num: int):
    """The narrowest axis of ``num`` evenly spaced points that holds [lo, hi] (lo ≤ 0 ≤ hi) and
    has 0 as its k-th point, over every k."""
    if num < 2 or not lo <= 0 <= hi:
        return Axis(lo, hi, num)
    best = None
    for below in range(num):
        above = num - 1 - below
        step = max(-lo / below if below else (0.0 if lo == 0 else math.inf),
                   hi / above if above else (0.0 if hi == 0 else math.inf))
        if best is None or step < best[0]:
            best = (step, below, above)
    step, below, above = best
    return Axis(-below * step, above * step, num)
