"""Residual networks, with and without skip connections (paper §5, Figs. 1 and 5).

State-dict keys, shapes and parameter order follow the reference implementation
(tomgoldstein/loss-landscape, ``cifar10/models/resnet.py``), so its published checkpoints
load as they are. Two changes make every model run on every data set, without changing
anything at 3×32×32: the first convolution takes ``in_channels`` and the fixed final
average pool is an adaptive one.

A ``_noshort`` block is the same block with its skip connection removed; like the
reference, it has no ``shortcut`` module at all (hence no projection parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llv.models._layers import ModelSpec, reference_init


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The skip path: identity where shapes agree, else a strided 1×1 conv with batch norm."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm, plus the skip unless ``shortcut=False``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 convolutions (4× expansion), plus the skip unless ``shortcut=False``."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is None:
            # The reference's skip-free bottleneck ends without a ReLU; kept so that its
            # checkpoints compute the same function here.
            return out
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A 3×3 stem, one stage of blocks per width (stride 2 from the second), pool, linear.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        num_blocks: blocks per stage.
        widths: planes per stage (the stem has ``widths[0]`` channels).
        in_channels: input image channels.
        num_classes: output logits.
        shortcut: ``False`` removes every skip connection.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        widths: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 10,
        shortcut: bool = True,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        planes_in = widths[0]
        for stage, (planes, count) in enumerate(zip(widths, num_blocks, strict=True), start=1):
            strides = [1 if stage == 1 else 2] + [1] * (count - 1)
            blocks = []
            for stride in strides:
                blocks.append(block(planes_in, planes, stride, shortcut))
                planes_in = planes * block.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.linear = nn.Linear(planes_in, num_classes)
        reference_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{stage}")(out)
        # At 32×32 the last map is 8×8 (CIFAR nets) or 4×4 (ImageNet-style nets), exactly
        # what the reference's fixed pool covers; adaptive pooling also fits other sizes.
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def cifar_resnet(spec: ModelSpec, depth: int, widen: int = 1, shortcut: bool = True) -> ResNet:
    """He et al.'s CIFAR ResNet-``depth`` (3 stages of (depth-2)/6 basic blocks, 16/32/64·k).

    >>> net = cifar_resnet(ModelSpec(), depth=20)
    >>> sum(p.numel() for p in net.parameters())
    272474
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNet(
        BasicBlock,
        [n, n, n],
        [16 * widen, 32 * widen, 64 * widen],
        spec.in_channels,
        spec.num_classes,
        shortcut,
    )


_IMAGENET_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def imagenet_resnet(spec: ModelSpec, depth: int, shortcut: bool = True) -> ResNet:
    """ResNet-18/34/50/101/152 with a 3×3 stride-1 stem, as the reference trains on CIFAR."""
    block, num_blocks = _IMAGENET_LAYOUTS[depth]
    return ResNet(
        block, num_blocks, [64, 128, 256, 512], spec.in_channels, spec.num_classes, shortcut
    )
