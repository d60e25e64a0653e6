"""The training view of a split: a map-style ``Dataset`` of normalized (augmented) images, or
of ``(token ids, next tokens)`` sequences for text.

The whole split stays in memory as stored (``uint8`` for real data sets); a batch is gathered,
augmented and normalized with a few tensor operations. ``DataLoader`` uses
:meth:`ImageSplit.__getitems__` for that, so there is no per-image work in Python. While a
training split is alive, evaluation tensors of the same split are built from its copy instead
of reading the files again.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from llv.data.augment import crop_flip
from llv.data.loading import image_shape, read_split, source_of
from llv.data.source import RawSplit, TokenSplit, channel_stats, normalize, setting

DEFAULT_PADDING = 4  # RandomCrop(32, padding=4), the reference implementation's CIFAR recipe


class ImageSplit(Dataset):
    """``(image, label)`` pairs: a float32 C×H×W normalized image and an ``int`` label.

    Attributes:
        raw: the split as stored (kept, so evaluation shares it while training runs).
        pixels: every image as stored, N×C×H×W on the CPU (read-only).
        targets: the labels, N int64.
        augment: whether items are randomly cropped (zero padding ``padding``) and, where
            ``flip``, mirrored; drawn from torch's global random generator, as torchvision does.
    """

    def __init__(
        self,
        raw: RawSplit,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: bool,
        padding: int = DEFAULT_PADDING,
        flip: bool = True,
    ):
        self.raw = raw
        self.pixels = raw.pixels
        self.targets = raw.labels
        self.scale = raw.scale
        self.mean = mean
        self.std = std
        self.augment = bool(augment)
        self.padding = int(padding)
        self.flip = bool(flip)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B×C×H×W float32, normalized, augmented if enabled) and labels (B int64)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        pixels = self.pixels[index]
        if self.augment:
            pixels = crop_flip(pixels, self.padding, self.flip)
        return normalize(pixels, self.scale, self.mean, self.std), self.targets[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        images, labels = self.batch([int(index)])
        return images[0], int(labels[0])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        images, labels = self.batch(indices)
        return list(zip(images, labels.tolist(), strict=True))


class SequenceSplit(Dataset):
    """``(inputs, targets)`` pairs of a text: T int64 token ids and the T tokens after them.

    A ``DataLoader`` batches them into B×T tensors, as a language model's loss wants.

    Attributes:
        raw: the split as stored; ``inputs`` and ``targets`` are its N×T tensors (read-only).
    """

    def __init__(self, raw: TokenSplit):
        self.raw = raw
        self.inputs = raw.inputs
        self.targets = raw.targets

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and next tokens of the sequences ``indices``, B×T int64 each."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.inputs[index], self.targets[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[int(index)], self.targets[int(index)]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        inputs, targets = self.batch(indices)
        return list(zip(inputs, targets, strict=True))


def load_split(dataset_cfg, split: str, augment: bool = False) -> ImageSplit | SequenceSplit:
    """The split ``split`` (``train`` or ``test``) of a data set, for training with a DataLoader.

    Args:
        dataset_cfg: the dataset's settings (``cfg.dataset``; any mapping).
        split: ``"train"`` or ``"test"``.
        augment: random crop (zero padding ``dataset.crop_padding``, default 4) and, where
            ``dataset.hflip`` (default true), horizontal flip, as in the paper's CIFAR training.
            Text is never augmented.

    >>> split = load_split({"name": "digits", "in_channels": 1, "image_size": 8,
    ...                     "num_classes": 10, "mean": [0.3], "std": [0.4]}, "test")
    >>> len(split), split[0][0].shape
    (360, torch.Size([1, 8, 8]))
    """
    if source_of(dataset_cfg).kind == "tokens":
        return SequenceSplit(read_split(dataset_cfg, split))
    channels, _, _ = image_shape(dataset_cfg)
    raw = read_split(dataset_cfg, split)
    return ImageSplit(
        raw,
        channel_stats(setting(dataset_cfg, "mean", [0.0]), channels, "mean"),
        channel_stats(setting(dataset_cfg, "std", [1.0]), channels, "std"),
        augment,
        padding=int(setting(dataset_cfg, "crop_padding", DEFAULT_PADDING)),
        flip=bool(setting(dataset_cfg, "hflip", True)),
    )
