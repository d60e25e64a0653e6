"""A ``llv train`` run directory: ``checkpoints/epoch_NNN.pt``, ``final.pt``, ``metrics.csv``.

Writers (``llv train``) and readers (trajectories, weight statistics, resume) share these names.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
FINAL = "final.pt"
METRICS = "metrics.csv"
METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"]
EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def epoch_checkpoint(run_dir: str | Path, epoch: int) -> Path:
    """Where epoch ``epoch``'s checkpoint lives.

    >>> epoch_checkpoint("run", 7).as_posix()
    'run/checkpoints/epoch_007.pt'
    """
    return Path(run_dir) / CHECKPOINTS / f"epoch_{int(epoch):03d}.pt"


def epoch_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of a run's ``checkpoints/epoch_NNN.pt``, in epoch order."""
    folder = Path(run_dir) / CHECKPOINTS
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = EPOCH_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def last_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    """The highest ``(epoch, path)`` among the epoch checkpoints, or None."""
    found = epoch_checkpoints(run_dir)
    return found[-1] if found else None


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a run's ``metrics.csv`` as floats ([] when there is none); ``path`` may be the
    run directory."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
