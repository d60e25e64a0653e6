"""scikit-learn's bundled 8×8 handwritten digits, split into train and test by a seeded,
stratified draw: the embedded default data set, no download."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from llv.data.source import DataSource, RawSplit, setting


def _locate(cfg, split: str) -> list[Path]:
    return []  # shipped inside scikit-learn


def split_indices(labels, test_fraction: float, split_seed: int) -> dict[str, torch.Tensor]:
    """Sorted example indices of ``train`` and ``test``, stratified by label, seeded."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from llv.errors import LlvError

    if not 0.0 < float(test_fraction) < 1.0:
        raise LlvError(f"dataset.test_fraction must be between 0 and 1, got {test_fraction}")
    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=float(test_fraction), stratify=labels, random_state=int(split_seed)
    )
    return {"train": torch.from_numpy(np.sort(train)), "test": torch.from_numpy(np.sort(test))}


def _read(cfg, split: str, files: Sequence[Path]) -> RawSplit:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    pixels = torch.from_numpy(bunch.images).to(torch.uint8).unsqueeze(1)  # values 0..16
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    index = split_indices(
        bunch.target, setting(cfg, "test_fraction", 0.2), setting(cfg, "split_seed", 0)
    )[split]
    return RawSplit(pixels[index].contiguous(), labels[index].contiguous(), scale=16.0)


SOURCE = DataSource("digits", "digits", (1, 8, 10), _locate, _read)
