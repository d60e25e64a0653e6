"""scikit-learn's bundled 8×8 handwritten digits, split into train and test by a seeded,
stratified draw: the embedded default data set, no download."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from llv.data.source import DataSource, RawSplit, setting


def _locate(cfg, split: str) -> list[Path]:
    return []  # shipped inside scikit-learn


def split_indices(labels, test_fraction: float, split_seed: int) -> dict[str, torch.Tensor]:
    """Sorted example indices of ``train`` and ``test``, stratified by label, seeded.

    A stratified split needs every class in both splits: a ``test_fraction`` that leaves either
    split fewer examples than there are classes is one ``LlvError`` line that gives the range
    which works for these labels (scikit-learn would raise an opaque ``ValueError``).

    >>> import numpy as np
    >>> {k: len(v) for k, v in split_indices(np.repeat(np.arange(4), 5), 0.2, 0).items()}
    {'train': 16, 'test': 4}
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    check_fraction(labels, test_fraction)
    index = np.arange(len(labels))
    train, test = train_test_split(
        index, test_size=float(test_fraction), stratify=labels, random_state=int(split_seed)
    )
    return {"train": torch.from_numpy(np.sort(train)), "test": torch.from_numpy(np.sort(test))}


def _test_count(count: int, test_fraction: float) -> int:
    """How many of ``count`` examples scikit-learn's split puts in ``test`` (it rounds up)."""
    return math.ceil(float(test_fraction) * count)


def fraction_range(count: int, classes: int) -> tuple[float, float] | None:
    """The smallest and largest ``test_fraction`` (4 decimals) that leave at least ``classes``
    examples in each split of ``count``, or None where no fraction does.

    >>> fraction_range(1797, 10)
    (0.0056, 0.9944)
    >>> fraction_range(20, 4)
    (0.2, 0.8)
    """

    def works(fraction: float) -> bool:
        tests = _test_count(count, fraction)
        return 0.0 < fraction < 1.0 and tests >= classes and count - tests >= classes

    step = 1e-4
    low = round(math.ceil(classes / count / step) * step, 4)
    high = round(math.floor((count - classes) / count / step) * step, 4)
    while low < 1.0 and not works(low):
        low = round(low + step, 4)
    while high > 0.0 and not works(high):
        high = round(high - step, 4)
    return (low, high) if works(low) and works(high) and low <= high else None


def check_fraction(labels, test_fraction: float) -> None:
    """``LlvError`` unless a stratified split of ``labels`` by ``test_fraction`` exists."""
    import numpy as np

    from llv.errors import LlvError

    fraction = float(test_fraction)
    if not 0.0 < fraction < 1.0:
        raise LlvError(f"dataset.test_fraction must be between 0 and 1, got {test_fraction}")
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(values) and counts.min() < 2:
        rare = values[counts.argmin()]
        raise LlvError(
            f"a stratified train/test split needs at least 2 examples of every class, but class "
            f"{rare} has {counts.min()} example"
        )
    count, classes = len(labels), len(values)
    tests = _test_count(count, fraction)
    if tests >= classes and count - tests >= classes:
        return
    span = fraction_range(count, classes)
    short, held = ("test", tests) if tests < classes else ("train", count - tests)
    advice = (f"use a test_fraction between {span[0]:g} and {span[1]:g}" if span
              else "no test_fraction can")
    raise LlvError(
        f"dataset.test_fraction={test_fraction} leaves {held} of the {count} images in the "
        f"{short} split, fewer than the {classes} classes a stratified split puts in each: "
        f"{advice}"
    )


def check_config(cfg) -> None:
    """``LlvError`` for a ``dataset.test_fraction`` no stratified split of the digits honours,
    from the labels alone (no images are normalized): callers run it before any other work."""
    from sklearn.datasets import load_digits

    check_fraction(load_digits().target, setting(cfg, "test_fraction", 0.2))


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
