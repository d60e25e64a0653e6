"""Data sets: the images (or text) every command trains on or evaluates, read once, kept as tensors.

``load_split`` gives a map-style ``Dataset`` for training (augmented on tensors);
``load_eval_data`` gives an :class:`EvalData` with the whole (or a seeded subset of a) split
on the device, for the grid engine. Data sets (``dataset=<name>``): ``digits`` (bundled with
scikit-learn, the default), ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist`` (read from
``dataset.root`` in torchvision's on-disk formats; ``dataset.download=true`` fetches them with
torchvision), ``synthetic`` (seeded, any shape), ``folder`` (torchvision's ImageFolder layout)
and ``text`` (a plain-text file as next-token sequences; a public-domain text is bundled).

Modules, from the bottom: ``source`` (what a reader returns), one reader per data set,
``cache`` (the one cache), ``loading`` (config -> checked split), then the two views,
``evaluation`` and ``training``.

>>> from llv.data import DATASET_NAMES
>>> DATASET_NAMES[0]
'digits'
"""

from llv.data.evaluation import EvalData, load_eval_data
from llv.data.loading import DATASET_NAMES, clear_cache
from llv.data.training import ImageSplit, SequenceSplit, load_split

__all__ = [
    "DATASET_NAMES",
    "EvalData",
    "ImageSplit",
    "SequenceSplit",
    "clear_cache",
    "load_eval_data",
    "load_split",
]
