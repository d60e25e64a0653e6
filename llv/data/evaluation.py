"""The evaluation view of a split: all (or a seeded subset of) its examples as tensors on the
device, loaded once and shared by every grid point.

Images are normalized (and never augmented) and cast to the evaluation dtype; token ids stay
int64, exactly as read. The tensors are kept in the data layer's cache (:mod:`llv.data.cache`);
the split as stored is not kept beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from llv.data import cache
from llv.data.loading import image_shape, locate, read_split
from llv.data.source import DataSource, channel_stats, normalize, setting
from llv.errors import LlvError


@dataclass(frozen=True, eq=False)  # equality of tensors has no single truth value
class EvalData:
    """Inputs and targets of one split, on one device; treat the tensors as read-only.

    Attributes:
        inputs: N×C×H×W normalized images, or N×T int64 token ids for text.
        targets: N int64 labels, or N×T int64 next tokens for text.
        name: the data set (``cfg.dataset.name``).
        split: ``"train"`` or ``"test"``.
        indices: the examples' positions in the full split (sorted), ``None`` for all of them.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    name: str
    split: str
    indices: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive ``(inputs, targets)`` slices (views, no copies) of at most ``batch_size``."""
        for start in range(0, len(self), int(batch_size)):
            yield self.inputs[start : start + batch_size], self.targets[start : start + batch_size]


def subset_indices(total: int, max_samples: int | None, seed: int) -> torch.Tensor | None:
    """Sorted positions of a seeded random subset of ``max_samples`` of ``total`` examples.

    Drawn on the CPU (``randperm`` with a seeded generator), so every device gets the same
    subset; ``None`` where the subset would be everything.

    >>> subset_indices(10, 3, seed=0).tolist() == subset_indices(10, 3, seed=0).tolist()
    True
    """
    if max_samples is None:
        return None
    if int(max_samples) < 1:
        raise LlvError(f"eval.max_samples must be at least 1 (or null for all), got {max_samples}")
    if int(max_samples) >= total:
        return None
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randperm(total, generator=generator)[: int(max_samples)].sort().values


def _image_tensors(cfg, dtype: torch.dtype):
    """``(key, make)``: the normalization's part of the cache key, and raw -> (inputs, targets)."""
    channels, _, _ = image_shape(cfg)
    mean = channel_stats(setting(cfg, "mean", [0.0]), channels, "mean")
    std = channel_stats(setting(cfg, "std", [1.0]), channels, "std")

    def make(raw, indices, device):
        pixels, labels = (
            (raw.pixels, raw.labels) if indices is None else (raw.pixels[indices], raw.labels[indices])
        )
        inputs = normalize(pixels, raw.scale, mean, std).to(device=device, dtype=dtype)
        return inputs, labels.to(device)

    return (tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()), str(dtype)), make


def _token_tensors(cfg, dtype: torch.dtype):
    """Token ids are categories: never normalized, never cast (``dtype`` does not apply)."""

    def make(raw, indices, device):
        if indices is None:
            return raw.inputs.to(device), raw.targets.to(device)
        return raw.inputs[indices].to(device), raw.targets[indices].to(device)

    return (), make


_TENSORS: dict[str, Callable] = {"images": _image_tensors, "tokens": _token_tensors}


def load_eval_data(
    dataset_cfg,
    split: str,
    max_samples: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> EvalData:
    """A split as tensors on ``device``, ready for every grid point.

    Normalization is computed in float32 (as torchvision does) and then cast to ``dtype``, so
    every precision sees the same images; token ids (``dataset=text``) stay int64. Results are
    cached per process: calling again with the same arguments returns the same object.

    Args:
        dataset_cfg: the dataset's settings (``cfg.dataset``; any mapping).
        split: ``"train"`` or ``"test"``.
        max_samples: keep a seeded random subset of this many examples (``None``: all).
        seed: seed of that subset.
        device: where the tensors live (``"auto"``: CUDA where available).
        dtype: floating dtype of image ``inputs``.

    >>> data = load_eval_data({"name": "digits", "in_channels": 1, "image_size": 8,
    ...                        "num_classes": 10, "mean": [0.3], "std": [0.4]}, "train", 100)
    >>> len(data), data.inputs.shape, data.targets.dtype
    (100, torch.Size([100, 1, 8, 8]), torch.int64)
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if not dtype.is_floating_point:
        raise LlvError(f"evaluation data must be floating point, not {dtype}")
    source, _, split_key = locate(dataset_cfg, split)  # checks the files every call
    view_key, make = _TENSORS[source.kind](dataset_cfg, dtype)
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    key = ("eval", split_key, view_key, max_samples, int(seed), str(device))
    return cache.tensors(key, lambda: _build(source, dataset_cfg, split, max_samples, seed, device, make))


def _build(source: DataSource, cfg, split, max_samples, seed, device, make) -> EvalData:
    raw = read_split(cfg, split)  # dropped on return unless something else still uses it
    indices = subset_indices(len(raw), max_samples, seed)
    inputs, targets = make(raw, indices, device)
    return EvalData(inputs, targets, source.name, split, indices)
