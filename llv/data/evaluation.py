"""The evaluation view of a split: all (or a seeded subset of) its images as one tensor on the
device, normalized and never augmented, loaded once and shared by every grid point."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from llv.console import LlvError
from llv.data.loading import image_shape, read_split, source_of
from llv.data.source import channel_stats, check_split, normalize, setting

_MAX_CACHED = 4
# Values keep their RawSplit alive, so the id() in a key cannot be reused by another split.
_eval_cache: OrderedDict[tuple, tuple[object, EvalData]] = OrderedDict()


@dataclass(frozen=True, eq=False)  # equality of tensors has no single truth value
class EvalData:
    """Inputs and targets of one split, on one device; treat the tensors as read-only.

    Attributes:
        inputs: N×C×H×W normalized images.
        targets: N int64 labels.
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
    every precision sees the same images. Results are cached per process: calling again with the
    same arguments returns the same object.

    Args:
        dataset_cfg: the ``dataset`` config node (``cfg.dataset``).
        split: ``"train"`` or ``"test"``.
        max_samples: keep a seeded random subset of this many examples (``None``: all).
        seed: seed of that subset.
        device: where the tensors live (``"auto"``: CUDA where available).
        dtype: floating dtype of ``inputs``.

    >>> data = load_eval_data({"name": "digits", "in_channels": 1, "image_size": 8,
    ...                        "num_classes": 10, "mean": [0.3], "std": [0.4]}, "train", 100)
    >>> len(data), data.inputs.shape, data.targets.dtype
    (100, torch.Size([100, 1, 8, 8]), torch.int64)
    """
    check_split(split)
    source = source_of(dataset_cfg)
    channels, _, _ = image_shape(dataset_cfg)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if not dtype.is_floating_point:
        raise LlvError(f"evaluation data must be floating point, not {dtype}")
    mean = channel_stats(setting(dataset_cfg, "mean", [0.0]), channels, "mean")
    std = channel_stats(setting(dataset_cfg, "std", [1.0]), channels, "std")
    raw = read_split(dataset_cfg, split)  # cached itself; checks the files every call
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    key = (
        id(raw),
        mean.flatten().tolist(),
        std.flatten().tolist(),
        max_samples,
        int(seed),
        str(device),
        str(dtype),
    )
    key = tuple(tuple(k) if isinstance(k, list) else k for k in key)
    if key in _eval_cache:
        _eval_cache.move_to_end(key)
        return _eval_cache[key][1]
    indices = subset_indices(len(raw), max_samples, seed)
    pixels, labels = (
        (raw.pixels, raw.labels) if indices is None else (raw.pixels[indices], raw.labels[indices])
    )
    inputs = normalize(pixels, raw.scale, mean, std).to(device=device, dtype=dtype)
    data = EvalData(inputs, labels.to(device), source.name, split, indices)
    _eval_cache[key] = (raw, data)
    while len(_eval_cache) > _MAX_CACHED:
        _eval_cache.popitem(last=False)
    return data


def clear_cache() -> None:
    """Drop the cached evaluation tensors (and the device memory they hold)."""
    _eval_cache.clear()
