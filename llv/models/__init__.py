"""The model zoo: the paper's networks with the reference's state-dict keys, small CPU models, a tiny
causal language model (``tiny_lm``), custom.

>>> from llv.models import build_model
>>> net = build_model({"name": "resnet56", "in_channels": 3, "num_classes": 10, "image_size": 32})
>>> sum(p.numel() for p in net.parameters())
855770
"""

from llv.models._layers import ModelSpec, reference_init
from llv.models.registry import MODEL_NAMES, build_model

__all__ = ["MODEL_NAMES", "ModelSpec", "build_model", "reference_init"]
