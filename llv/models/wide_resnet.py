"""Wide residual networks WRN-depth-k (paper §5, Fig. 6): CIFAR ResNets with k× the channels."""

from __future__ import annotations

from llv.models._layers import ModelSpec
from llv.models.resnet import ResNet, cifar_resnet


def wide_resnet(spec: ModelSpec, depth: int, widen: int, shortcut: bool = True) -> ResNet:
    """WRN-``depth``-``widen``: stages of 16k/32k/64k channels, as the reference's WResNet_cifar.

    Its keys and shapes equal the reference's; at ``widen=1`` it is the plain CIFAR ResNet.

    >>> net = wide_resnet(ModelSpec(), depth=56, widen=2)
    >>> net.linear.in_features
    128
    """
    return cifar_resnet(spec, depth=depth, widen=widen, shortcut=shortcut)
