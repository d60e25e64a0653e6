"""llv: the loss-landscape visualizer for PyTorch (Li et al., NeurIPS 2018), as a library.

Any ``nn.Module`` and any data (a DataLoader, a Dataset, an ``(inputs, targets)`` pair or an
iterable of tuple or dict batches) in, result objects out::

    import llv
    s = llv.surface(model, loader, x=(-1, 1, 51), y=(-1, 1, 51), norm="filter")
    s["train_loss"]; s.plot(kind="contour"); s.save("surface.h5"); llv.load("surface.h5")
    llv.interpolate(model_a, model_b, loader)
    llv.hessian(model, loader).eigenvalues(k=3)

Importing :mod:`llv` is cheap: torch, matplotlib and h5py are imported on first use of an API
function, so ``llv --help`` stays instant. Submodules are attributes too, imported on first
access (``llv.curves.Connection.load(...)``, ``llv.plot.make_plot(...)``, ``llv.api.point_metrics``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "Density",
    "Directions",
    "Eigenvalues",
    "Hessian",
    "HessianPoint",
    "LlvError",
    "Projection",
    "Surface",
    "Trace",
    "__version__",
    "connect",
    "directions",
    "extent",
    "hessian",
    "hessian_map",
    "interpolate",
    "load",
    "surface",
    "trajectory",
]

import os

from llv.errors import LlvError

_LAZY = {
    "surface": "llv.api", "interpolate": "llv.api", "directions": "llv.api", "hessian": "llv.api",
    "hessian_map": "llv.api", "trajectory": "llv.api", "connect": "llv.api",
    "extent": "llv.api",
    "load": "llv.results", "Surface": "llv.results", "HessianPoint": "llv.results",
    "Projection": "llv.results", "Eigenvalues": "llv.results", "Trace": "llv.results",
    "Density": "llv.results", "Directions": "llv.direction", "Hessian": "llv.spectrum",
}


_HERE = os.path.dirname(__file__)


def __getattr__(name: str):
    """The API and the submodules, imported on first use (PEP 562): ``import llv`` does not
    import torch."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif _is_submodule(name):
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'llv' has no attribute {name!r}")
    globals()[name] = value
    return value


def _is_submodule(name: str) -> bool:
    """Whether ``llv.<name>`` is a module or package of llv (``llv.curves``, ``llv.plot``)."""
    if not name.isidentifier() or name.startswith("_"):
        return False
    return (os.path.isfile(os.path.join(_HERE, f"{name}.py"))
            or os.path.isfile(os.path.join(_HERE, name, "__init__.py")))
