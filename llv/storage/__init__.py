"""One module per file layout, used by writers, readers and plots alike.

- :mod:`llv.storage.surface`: grids of results (surfaces, interpolations, Hessian maps);
- :mod:`llv.storage.directions`: direction files (the reference implementation's layout);
- :mod:`llv.storage.hessian`: the Hessian at a point;
- :mod:`llv.storage.projection`: a training path projected on PCA directions;
- :mod:`llv.storage.trainrun`: a ``llv train`` run directory (checkpoints, ``metrics.csv``).
"""
