"""VGG-9 (paper §5, Fig. 5): the first 7 convolutions of VGG-16 with batch norm, then 2 FC layers.

Keys and shapes follow the reference implementation (``features.*``, ``fc.*``,
``classifier.*``). The flattened size fed to ``fc.0`` is computed from the image size: 256·4·4
= 4096 at 32×32 as in the reference, 256·1·1 at 8×8. Pooling uses ``ceil_mode`` as the
reference does, so a 1×1 map stays 1×1 and small images never vanish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from llv.models._layers import ModelSpec, reference_init

POOL = "M"
VGG9_LAYOUT: tuple[int | str, ...] = (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL)


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max pools, one FC-BN-ReLU layer and a linear classifier.

    Args:
        layout: output channels per convolution, ``"M"`` for a 2×2 max pool.
        in_channels: input image channels.
        num_classes: output logits.
        image_size: ``(height, width)`` of the inputs; fixes the FC layer's input size.
    """

    def __init__(
        self,
        layout: Sequence[int | str] = VGG9_LAYOUT,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: tuple[int, int] = (32, 32),
    ):
        super().__init__()
        height, width = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
                height, width = math.ceil(height / 2), math.ceil(width / 2)
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU()]
                channels = item
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(channels * height * width, channels), nn.BatchNorm1d(channels), nn.ReLU()
        )
        self.classifier = nn.Linear(channels, num_classes)
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x).flatten(1)
        return self.classifier(self.fc(out))


def vgg9(spec: ModelSpec) -> VGG:
    """VGG-9 for ``spec``'s data shape.

    >>> vgg9(ModelSpec()).fc[0].in_features
    4096
    """
    return VGG(VGG9_LAYOUT, spec.in_channels, spec.num_classes, spec.image_size)
