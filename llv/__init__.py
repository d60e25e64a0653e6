"""llv: the loss-landscape visualizer for PyTorch.

Importing :mod:`llv` is cheap: torch, matplotlib and h5py are imported by the modules that
need them, so ``llv --help`` is instant.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
