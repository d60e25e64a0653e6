"""Weight statistics of a training run (paper §5, Fig. 2): final-weight histogram, norm per epoch.

The paper shows that small-batch training with weight decay ends at smaller weights than
large-batch training, which makes an unnormalized plot look sharper or flatter for the wrong
reason; these statistics show that scale. Stored as ``weights.h5`` in the run folder.

By default the statistics cover the weights of convolutional and fully connected layers, i.e.
the state-dict tensors with more than one dimension; biases, BatchNorm parameters and buffers
are left out. ``include="all"`` takes every floating-point parameter (BatchNorm running
statistics and counters are buffers and stay out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llv.checkpoint import load_state_dict
from llv.console import LlvError
from llv.storage import trainrun

__all__ = [
    "WeightStats",
    "compute_weight_stats",
    "load_weight_stats",
    "save_weight_stats",
    "select_weights",
    "weight_norm",
]

INCLUDE = ("weights", "all")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class WeightStats:
    """Histogram of the final weights and the L2 norm of the same weights at each saved epoch."""

    hist_counts: np.ndarray
    hist_edges: np.ndarray
    epochs: np.ndarray
    weight_norm: np.ndarray
    num_weights: int
    include: str = "weights"


def checkpoint_files(run_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of a run's ``checkpoints/epoch_NNN.pt``, in epoch order."""
    return trainrun.epoch_checkpoints(run_dir)


def select_weights(state_dict: dict, include: str = "weights") -> dict:
    """The tensors the statistics cover, by name, in state-dict order.

    ``weights``: floating tensors with more than one dimension (conv and FC weights).
    ``all``: every floating tensor except BatchNorm buffers (running mean/var).
    """
    import torch

    if include not in INCLUDE:
        raise LlvError(f"unknown include '{include}'; valid: {', '.join(INCLUDE)}")
    chosen = {}
    for name, tensor in state_dict.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            continue
        if include == "weights" and tensor.dim() > 1:
            chosen[name] = tensor
        elif include == "all" and not name.endswith(_BUFFER_SUFFIXES):
            chosen[name] = tensor
    if not chosen:
        raise LlvError(f"no tensors selected with include='{include}'")
    return chosen


def weight_norm(tensors: dict) -> float:
    """L2 norm of all ``tensors`` concatenated, accumulated in float64."""
    return float(sum(float((t.detach().double() ** 2).sum()) for t in tensors.values()) ** 0.5)


def compute_weight_stats(
    run_dir: str | Path,
    include: str = "weights",
    bins: int = 100,
    range: tuple[float, float] | None = None,
) -> WeightStats:
    """Histogram of a run's final weights and the norm of those weights per saved epoch.

    The final model is ``final.pt``, else the last epoch checkpoint. ``range`` defaults to the
    weights' own (min, max), so the counts sum to the number of weights.
    """
    if include not in INCLUDE:
        raise LlvError(f"unknown include '{include}'; valid: {', '.join(INCLUDE)}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LlvError(f"not a train run folder: {run_dir}")
    epochs = checkpoint_files(run_dir)
    final = run_dir / "final.pt"
    if not final.is_file():
        if not epochs:
            raise LlvError(
                f"no checkpoints in {run_dir}: expected checkpoints/epoch_NNN.pt and final.pt"
            )
        final = epochs[-1][1]
    norms = [weight_norm(select_weights(load_state_dict(p)[0], include)) for _, p in epochs]
    selected = select_weights(load_state_dict(final)[0], include)
    values = np.concatenate([t.detach().reshape(-1).double().numpy() for t in selected.values()])
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise LlvError(f"{final}: no finite weights")
    if range is None:
        range = (float(finite.min()), float(finite.max()))
    counts, edges = np.histogram(finite, bins=bins, range=range)
    return WeightStats(
        hist_counts=counts.astype(np.int64),
        hist_edges=edges.astype(np.float64),
        epochs=np.array([e for e, _ in epochs], dtype=np.int64),
        weight_norm=np.array(norms, dtype=np.float64),
        num_weights=int(values.size),
        include=include,
    )


def save_weight_stats(stats: WeightStats, path: str | Path) -> Path:
    """Write ``weights.h5`` (``path`` may be the run folder) and return the file's path."""
    import h5py

    path = Path(path)
    if path.is_dir():
        path = path / "weights.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("hist_counts", data=stats.hist_counts)
        h5.create_dataset("hist_edges", data=stats.hist_edges)
        h5.create_dataset("epochs", data=stats.epochs)
        h5.create_dataset("weight_norm", data=stats.weight_norm)
        h5.attrs["num_weights"] = stats.num_weights
        h5.attrs["include"] = stats.include
    return path


def load_weight_stats(path: str | Path) -> WeightStats:
    """Read a ``weights.h5`` written by :func:`save_weight_stats` (or the run folder holding it)."""
    from llv.h5 import open_h5

    path = Path(path)
    if path.is_dir():
        path = path / "weights.h5"
    with open_h5(path, "an llv weight-statistics file") as h5:
        if "hist_counts" not in h5 or "weight_norm" not in h5:
            raise LlvError(
                f"not an llv weight-statistics file: {path}, expected datasets "
                "hist_counts, hist_edges, epochs, weight_norm"
            )
        include = h5.attrs.get("include", "weights")
        return WeightStats(
            hist_counts=np.asarray(h5["hist_counts"][()], dtype=np.int64),
            hist_edges=np.asarray(h5["hist_edges"][()], dtype=np.float64),
            epochs=np.asarray(h5["epochs"][()], dtype=np.int64),
            weight_norm=np.asarray(h5["weight_norm"][()], dtype=np.float64),
            num_weights=int(h5.attrs.get("num_weights", int(h5["hist_counts"][()].sum()))),
            include=include.decode() if isinstance(include, bytes) else str(include),
        )
