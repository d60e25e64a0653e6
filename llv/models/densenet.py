"""DenseNet-121 (paper §5, Fig. 5), with the reference implementation's keys and shapes.

Changes that leave 3×32×32 untouched: the stem takes ``in_channels``; a transition skips its
2×2 average pool once the map is smaller than 2×2 (so 8×8 digits keep a 1×1 map); the final
pool is adaptive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llv.models._layers import ModelSpec, reference_init


class DenseLayer(nn.Module):
    """BN-ReLU-1×1 conv (4·growth) then BN-ReLU-3×3 conv (growth), concatenated before the input."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1×1 conv to fewer channels, then a 2×2 average pool."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(F.relu(self.bn(x)))
        if min(out.shape[-2:]) >= 2:
            out = F.avg_pool2d(out, 2)
        return out


class DenseNet(nn.Module):
    """Four dense blocks joined by transitions that halve channels and resolution.

    Args:
        num_layers: dense layers per block.
        growth_rate: channels each dense layer adds.
        reduction: channel factor of each transition.
        in_channels: input image channels.
        num_classes: output logits.
    """

    def __init__(
        self,
        num_layers: Sequence[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        reduction: float = 0.5,
        in_channels: int = 3,
        num_classes: int = 10,
    ):
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        for index, count in enumerate(num_layers, start=1):
            layers = [DenseLayer(planes + i * growth_rate, growth_rate) for i in range(count)]
            self.add_module(f"dense{index}", nn.Sequential(*layers))
            planes += count * growth_rate
            if index < len(num_layers):
                out_planes = int(math.floor(planes * reduction))
                self.add_module(f"trans{index}", Transition(planes, out_planes))
                planes = out_planes
        self.num_blocks = len(num_layers)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for index in range(1, self.num_blocks):
            out = getattr(self, f"trans{index}")(getattr(self, f"dense{index}")(out))
        out = getattr(self, f"dense{self.num_blocks}")(out)
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1).flatten(1)
        return self.linear(out)


def densenet121(spec: ModelSpec) -> DenseNet:
    """DenseNet-121 (blocks of 6/12/24/16 layers, growth rate 32) for ``spec``'s data shape."""
    return DenseNet((6, 12, 24, 16), 32, 0.5, spec.in_channels, spec.num_classes)
