"""Helpers shared by the zoo: the build spec, image-size parsing, the reference initialisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from llv.console import LlvError


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """Return ``(height, width)`` from an int or a pair.

    >>> image_hw(32), image_hw([28, 14])
    ((32, 32), (28, 14))
    """
    try:
        if isinstance(image_size, (int, str)):
            hw = (int(image_size), int(image_size))
        else:
            hw = tuple(int(s) for s in image_size)
    except (TypeError, ValueError):
        hw = ()
    if len(hw) != 2:
        raise LlvError(f"model image_size must be an int or [height, width], got {image_size}")
    if min(hw) < 1:
        raise LlvError(f"model image_size must be positive, got {image_size}")
    return hw


def reference_init(net: nn.Module) -> nn.Module:
    """Initialise ``net`` in place as the reference implementation does before training.

    Convolutions get Kaiming-normal weights (fan-in) and zero biases, batch norms weight 1 and
    bias 0, linear layers N(0, 1e-3²) weights and zero biases.
    """
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1e-3)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return net


@dataclass(frozen=True)
class ModelSpec:
    """What every model is built from: the data set's shape and the model's own options.

    Attributes:
        in_channels: image channels (1 for digits and MNIST, 3 for CIFAR).
        num_classes: number of output logits.
        image_size: ``(height, width)`` of the input images.
        options: the whole model config node, for model-specific keys (``mlp.hidden``,
            ``custom.module``).
    """

    in_channels: int = 3
    num_classes: int = 10
    image_size: tuple[int, int] = (32, 32)
    options: Mapping[str, Any] = field(default_factory=dict)
