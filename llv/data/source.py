"""What every data set reader returns, and the one way its pixels become normalized tensors.

An image reader turns files (or a seed) into a :class:`RawSplit`: the images as stored
(``uint8`` for real data sets) plus the number that maps them to ``[0, 1]``. :func:`normalize`
then reproduces torchvision's ``ToTensor()`` followed by ``Normalize(mean, std)`` exactly, in
float32, on a whole batch at once. A text reader returns a :class:`TokenSplit`: token ids and
their next-token targets, which are never normalized nor cast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class RawSplit:
    """One split of a data set as stored: ``pixels`` N×C×H×W on the CPU, ``labels`` N int64.

    ``scale`` maps ``pixels`` to ``[0, 1]`` (255 for 8-bit images, 16 for scikit-learn's digits,
    1 for data already in floating point).
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    scale: float

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class TokenSplit:
    """One split of a text as sequences: ``inputs`` N×T int64 token ids, ``targets`` N×T int64,
    the next token after each input (``targets[:, :-1] == inputs[:, 1:]``)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return int(self.targets.shape[0])


#: What a source's splits hold: ``images`` (a :class:`RawSplit`) or ``tokens`` (a :class:`TokenSplit`).
KINDS = ("images", "tokens")


@dataclass(frozen=True)
class DataSource:
    """How to find and read one data set.

    Attributes:
        name: the config name (``dataset=<name>``).
        title: the name users know (``CIFAR-10``), used in messages.
        shape: ``(in_channels, image_size, num_classes)`` the files always have, or ``None``
            where the config decides (synthetic, folder).
        locate: ``(cfg, split) -> files`` the split is read from; raises ``LlvError`` where
            they are missing (after downloading them when ``cfg.download`` is true).
        read: ``(cfg, split, files) -> RawSplit`` (or ``TokenSplit`` for ``tokens``).
        kind: one of :data:`KINDS`.
    """

    name: str
    title: str
    shape: tuple[int, int, int] | None
    locate: Callable[[object, str], Sequence[Path]]
    read: Callable[[object, str, Sequence[Path]], RawSplit | TokenSplit]
    kind: str = "images"


def setting(cfg, key: str, default=None):
    """``cfg[key]`` of a dataset config (an OmegaConf node or a plain dict), else ``default``."""
    value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
    return default if value is None else value


def root_dir(cfg) -> Path:
    """``dataset.root`` as a path (``~`` expanded, relative to the working directory)."""
    return Path(str(setting(cfg, "root", "data"))).expanduser()


def check_split(split: str) -> None:
    """Raise ``LlvError`` unless ``split`` is one of :data:`SPLITS`."""
    from llv.errors import LlvError

    if split not in SPLITS:
        raise LlvError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def channel_stats(values: Sequence[float], channels: int, what: str) -> torch.Tensor:
    """The config's per-channel ``mean`` or ``std`` as a float32 C×1×1 tensor (one value broadcasts)."""
    from llv.errors import LlvError

    stats = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
    if stats.numel() == 1:
        stats = stats.expand(channels).clone()
    if stats.numel() != channels:
        raise LlvError(
            f"dataset.{what} has {stats.numel()} values but the images have {channels} channels; "
            f"give one value per channel (or a single value for all)"
        )
    if what == "std" and bool((stats <= 0).any()):
        raise LlvError(f"dataset.std must be positive, got {[float(v) for v in values]}")
    return stats.view(channels, 1, 1)


def normalize(
    pixels: torch.Tensor, scale: float, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """``(pixels / scale - mean) / std`` in float32, the operations of ``ToTensor`` + ``Normalize``.

    >>> x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    >>> normalize(x, 255, torch.tensor([0.5]).view(1, 1, 1), torch.tensor([0.5]).view(1, 1, 1))
    tensor([[[[-1.,  1.]]]])
    """
    images = pixels.to(dtype=torch.float32, copy=True)  # never normalize the stored pixels in place
    if scale != 1:
        images.div_(scale)
    mean = mean.to(images.device)
    std = std.to(images.device)
    return images.sub_(mean).div_(std)


def download_with_torchvision(torchvision_class: str, title: str, root: Path, split: str) -> None:
    """Fetch a data set with torchvision's own downloader (only on ``dataset.download=true``)."""
    import torchvision.datasets

    from llv.console import LlvError, log

    log.info(f"downloading {title} into {root}")
    try:
        getattr(torchvision.datasets, torchvision_class)(
            root=str(root), train=split == "train", download=True
        )
    except Exception as exc:  # network, disk and checksum failures all end the run the same way
        raise LlvError(f"downloading {title} into {root} failed: {exc}") from None
