"""Seeded random images of any shape and class count whose labels a model can learn.

Each class has a smooth random template (a coarse random pattern, at most 8×8 per channel,
upsampled to the image size). An image is mid-grey plus one class's template plus pixel
noise, clipped to ``[0, 1]``; its label is then the class whose template correlates best with
the image. Labels are therefore an exact linear function of the pixels (the argmax of a fixed
linear map), and differ between classes in colour and in coarse structure, so both linear
classifiers and small convolutional networks fit them. Train and test share the templates and
draw their images from independent streams of ``dataset.data_seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from llv.data.source import DataSource, RawSplit, setting
from llv.errors import LlvError

SIGNAL = 0.2  # template amplitude (pixel RMS) around mid-grey
NOISE = 0.1  # pixel noise standard deviation
_STREAM = {"templates": 0, "train": 1, "test": 2}


def _generator(seed: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + _STREAM[stream])


def templates(channels: int, size: int, num_classes: int, seed: int) -> torch.Tensor:
    """``num_classes`` × C × H × W class templates with unit pixel RMS each."""
    coarse = min(size, 8)
    pattern = torch.randn(
        num_classes, channels, coarse, coarse, generator=_generator(seed, "templates")
    )
    if coarse != size:
        pattern = torch.nn.functional.interpolate(
            pattern, size=(size, size), mode="bilinear", align_corners=False
        )
    rms = pattern.flatten(1).pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
    return pattern / rms.view(-1, 1, 1, 1)


def label_images(images: torch.Tensor, class_templates: torch.Tensor) -> torch.Tensor:
    """The labelling rule: the class whose template correlates best with ``images - 0.5``."""
    scores = (images - 0.5).flatten(1) @ class_templates.flatten(1).T
    return scores.argmax(dim=1)


def _locate(cfg, split: str) -> list[Path]:
    return []


def _read(cfg, split: str, files: Sequence[Path]) -> RawSplit:
    channels = int(setting(cfg, "in_channels", 3))
    size = int(setting(cfg, "image_size", 32))
    num_classes = int(setting(cfg, "num_classes", 10))
    count = int(setting(cfg, f"num_{split}", 512 if split == "train" else 256))
    seed = int(setting(cfg, "data_seed", 0))
    if channels < 1 or size < 1 or num_classes < 2 or count < 1:
        raise LlvError(
            f"synthetic data needs in_channels >= 1, image_size >= 1, num_classes >= 2 and "
            f"num_{split} >= 1 (got {channels}, {size}, {num_classes}, {count})"
        )
    class_templates = templates(channels, size, num_classes, seed)
    generator = _generator(seed, split)
    drawn = torch.randint(num_classes, (count,), generator=generator)
    noise = torch.randn(count, channels, size, size, generator=generator)
    images = (0.5 + SIGNAL * class_templates[drawn] + NOISE * noise).clamp_(0.0, 1.0)
    return RawSplit(images, label_images(images, class_templates), scale=1.0)


SOURCE = DataSource("synthetic", "synthetic", None, _locate, _read)
