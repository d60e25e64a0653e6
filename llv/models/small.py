"""Small CPU models for the embedded default (8×8 digits): ResNet-8 and a multilayer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llv.models._layers import ModelSpec
from llv.models.resnet import ResNet, cifar_resnet

DEFAULT_HIDDEN = (64, 64)


def resnet8(spec: ModelSpec, shortcut: bool = True) -> ResNet:
    """ResNet-8: one basic block per stage, 16/32/64 channels (about 78 k parameters).

    >>> net = resnet8(ModelSpec(in_channels=1, image_size=(8, 8)))
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    return cifar_resnet(spec, depth=8, shortcut=shortcut)


class MLP(nn.Module):
    """Flatten, then fully connected layers with ReLU between them; no batch norm.

    Args:
        in_features: flattened input size (channels · height · width).
        num_classes: output logits.
        hidden: width of each hidden layer.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = DEFAULT_HIDDEN):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)
        # Without batch norm the reference's N(0, 1e-3²) linear init would start the net at
        # vanishing activations; Kaiming keeps their scale through the ReLUs.
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(spec: ModelSpec) -> MLP:
    """The MLP for ``spec``'s data shape; hidden widths from the ``hidden`` option (64, 64).

    >>> sum(p.numel() for p in mlp(ModelSpec(in_channels=1, image_size=(8, 8))).parameters())
    8970
    """
    height, width = spec.image_size
    hidden = spec.options.get("hidden", DEFAULT_HIDDEN)
    hidden = DEFAULT_HIDDEN if hidden is None else [int(h) for h in hidden]
    return MLP(spec.in_channels * height * width, spec.num_classes, hidden)
