"""What plots read: the result layouts of :mod:`llv.storage`, one module per file layout.

Kept as the plotting modules' single import point; the readers themselves live in storage.
"""

from llv.storage.hessian import HessianPoint
from llv.storage.hessian import read as load_hessian_point
from llv.storage.projection import Projection
from llv.storage.projection import read as load_projection
from llv.storage.surface import Surface
from llv.storage.surface import read as load_surface

__all__ = ["HessianPoint", "Projection", "Surface", "load_hessian_point", "load_projection",
           "load_surface"]
