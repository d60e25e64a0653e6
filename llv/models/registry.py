"""The model registry: one table from config name to constructor, and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import nn

from llv.console import LlvError
from llv.models._layers import ModelSpec, image_hw
from llv.models.densenet import densenet121
from llv.models.resnet import cifar_resnet, imagenet_resnet
from llv.models.small import mlp, resnet8
from llv.models.transformer import tiny_lm
from llv.models.vgg import vgg9
from llv.models.wide_resnet import wide_resnet


def custom(spec: ModelSpec) -> nn.Module:
    """Any ``torch.nn.Module``, built by Hydra from the ``module`` node (``_target_`` + kwargs).

    The module keeps its own initialisation: llv does not re-initialise foreign code.
    """
    from hydra.errors import HydraException
    from hydra.utils import instantiate

    node = spec.options.get("module")
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not target:
        raise LlvError(
            "model=custom needs model.module._target_ (e.g. torchvision.models.resnet18)"
        )
    try:
        module = instantiate(node)
    except (HydraException, ImportError, TypeError, ValueError) as error:
        message = " ".join(str(error).split())
        raise LlvError(f"cannot build custom model {target}: {message}") from error
    if not isinstance(module, nn.Module):
        raise LlvError(
            f"custom model {target} built a {type(module).__name__}, not a torch.nn.Module"
        )
    return module


_BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    # The paper's CIFAR-10 models (reference keys and shapes).
    "resnet20": partial(cifar_resnet, depth=20),
    "resnet20_noshort": partial(cifar_resnet, depth=20, shortcut=False),
    "resnet56": partial(cifar_resnet, depth=56),
    "resnet56_noshort": partial(cifar_resnet, depth=56, shortcut=False),
    "resnet110": partial(cifar_resnet, depth=110),
    "resnet110_noshort": partial(cifar_resnet, depth=110, shortcut=False),
    "vgg9": vgg9,
    "wrn56_2": partial(wide_resnet, depth=56, widen=2),
    "wrn56_2_noshort": partial(wide_resnet, depth=56, widen=2, shortcut=False),
    "wrn56_4": partial(wide_resnet, depth=56, widen=4),
    "wrn56_4_noshort": partial(wide_resnet, depth=56, widen=4, shortcut=False),
    "wrn56_8": partial(wide_resnet, depth=56, widen=8),
    "wrn56_8_noshort": partial(wide_resnet, depth=56, widen=8, shortcut=False),
    "densenet121": densenet121,
    # Small CPU models for the embedded default (digits).
    "resnet8": resnet8,
    "resnet8_noshort": partial(resnet8, shortcut=False),
    "mlp": mlp,
    # A small causal transformer language model for dataset=text.
    "tiny_lm": tiny_lm,
    # Anything else, by Hydra _target_.
    "custom": custom,
    # The reference's other names (its noshort depth sweep and ImageNet-style ResNets).
    "resnet32_noshort": partial(cifar_resnet, depth=32, shortcut=False),
    "resnet44_noshort": partial(cifar_resnet, depth=44, shortcut=False),
    "resnet50_16_noshort": partial(cifar_resnet, depth=50, shortcut=False),
    "wrn110_2_noshort": partial(wide_resnet, depth=110, widen=2, shortcut=False),
    "wrn110_4_noshort": partial(wide_resnet, depth=110, widen=4, shortcut=False),
    "resnet18": partial(imagenet_resnet, depth=18),
    "resnet18_noshort": partial(imagenet_resnet, depth=18, shortcut=False),
    "resnet34": partial(imagenet_resnet, depth=34),
    "resnet34_noshort": partial(imagenet_resnet, depth=34, shortcut=False),
    "resnet50": partial(imagenet_resnet, depth=50),
    "resnet50_noshort": partial(imagenet_resnet, depth=50, shortcut=False),
    "resnet101": partial(imagenet_resnet, depth=101),
    "resnet101_noshort": partial(imagenet_resnet, depth=101, shortcut=False),
    "resnet152": partial(imagenet_resnet, depth=152),
    "resnet152_noshort": partial(imagenet_resnet, depth=152, shortcut=False),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
"""Every name :func:`build_model` accepts (and every option of the ``model`` config group)."""


def build_model(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Build the model a ``model`` config node names, initialised as the reference does.

    Args:
        model_cfg: an OmegaConf node or dict with ``name``, ``in_channels``, ``num_classes`` and
            ``image_size`` (an int or ``[height, width]``; missing ones default to CIFAR-10's
            3, 10 and 32), plus model options (``hidden`` for ``mlp``, ``module`` for ``custom``,
            ``vocab_size`` and ``seq_len`` for ``tiny_lm``).

    Returns:
        The model on the CPU in training mode. Seed the global RNG first for reproducible
        weights.

    Raises:
        LlvError: unknown name (the message lists the valid ones) or invalid shape.

    >>> net = build_model({"name": "resnet8", "in_channels": 1, "image_size": 8})
    >>> type(net).__name__, net.linear.out_features
    ('ResNet', 10)
    """
    name = model_cfg.get("name")
    builder = _BUILDERS.get(name)
    if builder is None:
        raise LlvError(f"unknown model {name!r}; valid models: {', '.join(MODEL_NAMES)}")
    in_channels = int(model_cfg.get("in_channels", 3))
    num_classes = int(model_cfg.get("num_classes", 10))
    if in_channels < 1 or num_classes < 1:
        raise LlvError(
            f"model {name} needs in_channels >= 1 and num_classes >= 1, "
            f"got {in_channels} and {num_classes}"
        )
    image_size = image_hw(model_cfg.get("image_size", 32))
    return builder(ModelSpec(in_channels, num_classes, image_size, model_cfg))
