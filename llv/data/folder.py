"""Images in torchvision's ImageFolder layout: ``<root>/train/<class>/*.png``, ``<root>/test/...``.

Classes are the sorted sub-folder names of both splits together (so train and test agree on
the label of each class); images are converted to ``in_channels`` (1: grayscale, 3: RGB) and
resized to ``image_size`` × ``image_size`` the way ``ImageFolder`` + ``Grayscale`` + ``Resize``
would, once, when the split is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from llv.data.source import SPLITS, DataSource, RawSplit, root_dir, setting
from llv.errors import LlvError

# torchvision.datasets.folder.IMG_EXTENSIONS
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_MODES = {1: "L", 3: "RGB"}


def find_classes(root: Path) -> list[str]:
    """Sorted class names: the sub-folders of ``root/train`` and ``root/test`` together."""
    names: set[str] = set()
    for split in SPLITS:
        if (root / split).is_dir():
            names.update(entry.name for entry in os.scandir(root / split) if entry.is_dir())
    return sorted(names)


def image_files(split_dir: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """``(path, label)`` in ImageFolder's order: by class, then by sorted walk of its folder."""
    samples = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue
        for dirpath, _, filenames in sorted(os.walk(class_dir, followlinks=True)):
            for filename in sorted(filenames):
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(dirpath) / filename, label))
    return samples


def _locate(cfg, split: str) -> list[Path]:
    root = root_dir(cfg)
    split_dir = root / split
    if not split_dir.is_dir():
        raise LlvError(
            f"image folder not found: {split_dir} does not exist; put images in "
            f"{root}/{split}/<class>/*.png (torchvision's ImageFolder layout) or set dataset.root"
        )
    classes = find_classes(root)
    num_classes = int(setting(cfg, "num_classes", 0))
    if len(classes) != num_classes:
        raise LlvError(
            f"{root} has {len(classes)} classes ({', '.join(classes[:10])}"
            f"{', ...' if len(classes) > 10 else ''}) but dataset.num_classes={num_classes}; "
            f"set dataset.num_classes={len(classes)}"
        )
    files = [path for path, _ in image_files(split_dir, classes)]
    if not files:
        raise LlvError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {split_dir}/<class>/"
        )
    return files


def _read(cfg, split: str, files: Sequence[Path]) -> RawSplit:
    from PIL import Image

    channels = int(setting(cfg, "in_channels", 3))
    size = int(setting(cfg, "image_size", 32))
    if channels not in _MODES:
        raise LlvError(f"image folders can be read with in_channels 1 or 3, not {channels}")
    root = root_dir(cfg)
    label_of = {name: label for label, name in enumerate(find_classes(root))}
    pixels = np.empty((len(files), channels, size, size), dtype=np.uint8)
    labels = np.empty(len(files), dtype=np.int64)
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")  # torchvision's default loader
                if channels == 1:
                    image = image.convert("L")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)  # transforms.Resize
                array = np.asarray(image, dtype=np.uint8)
        except OSError as exc:
            raise LlvError(f"cannot read image {path}: {exc}") from None
        pixels[i] = array.reshape(size, size, channels).transpose(2, 0, 1)
        labels[i] = label_of[path.relative_to(root / split).parts[0]]
    return RawSplit(torch.from_numpy(pixels), torch.from_numpy(labels), scale=255.0)


SOURCE = DataSource("folder", "image folder", None, _locate, _read)
