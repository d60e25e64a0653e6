"""Visual regression: a few figures against committed baseline images (tests/baseline/).

A change of look must be deliberate: after checking the new pictures, regenerate with
``LLV_UPDATE_BASELINES=1 .venv/bin/python -m pytest tests/test_figures_baseline.py`` and commit
them. Images are compared with :func:`matplotlib.testing.compare.compare_images` (RMS over
0-255 pixel values) after the same 128-colour palette encoding as the committed files, at a
tolerance that absorbs font hinting and anti-aliasing differences between machines.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from matplotlib.testing.compare import compare_images
from test_plot import ATTRS, write_llv_surface

from llv.plot import surface as surface_plot
from llv.plot._figure import PlotOptions
from llv.plot.io import load_surface

BASELINE = Path(__file__).parent / "baseline"
UPDATE = os.environ.get("LLV_UPDATE_BASELINES") == "1"
TOLERANCE = 6.0  # RMS, 0-255: a moved label or a lost plateau cut is far above this
RESOLUTION = 60  # dots per inch: small files, still every line and label


def palette_png(figure, path: Path, colors: int = 128) -> Path:
    """``figure`` as a PNG with an adaptive palette (as docs/figures, about 4x smaller)."""
    from PIL import Image

    figure.savefig(path, format="png", dpi=RESOLUTION)
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT,
                                                dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return path


X21 = np.linspace(-1.0, 1.0, 21)


def basin(x, y):
    return 0.0003 + 8.0 * (x**2 + y**2) ** 1.5 + 3.0 * np.maximum(x, 0.0) ** 2


def contour(tmp_path):
    surface = load_surface(write_llv_surface(tmp_path / "s.h5", x=X21, y=X21, fn=basin))
    return surface_plot.figure_map(surface, "contour", PlotOptions())


def surface3d(tmp_path):
    surface = load_surface(write_llv_surface(tmp_path / "s.h5", x=X21, y=X21, fn=basin))
    return surface_plot.figure_surface3d(surface, PlotOptions(vmax=5.0))


def partial_contourf(tmp_path):
    path = write_llv_surface(tmp_path / "s.h5", x=X21, y=X21, fn=basin,
                             train_loss_se=np.full((21, 21), 0.012))
    with h5py.File(path, "a") as h5:
        done = np.ones((21, 21), bool)
        done.ravel()[300:] = False
        h5["done"][...] = done
        h5.attrs["approx"] = True
    return surface_plot.figure_map(load_surface(path), "contourf", PlotOptions())


def interpolation(tmp_path):
    alphas = np.linspace(-0.5, 1.5, 81)
    path = tmp_path / "interpolation.h5"
    with h5py.File(path, "w") as h5:
        h5["alphas"] = alphas
        loss = 0.001 + 10 * (alphas - 0.5) ** 2 * (1 + np.sin(6 * alphas) ** 2)
        loss[alphas > 1.3] = np.nan
        h5["train_loss"] = loss
        h5["train_acc"] = np.where(np.isnan(loss), 10.0, 100 - 10 * np.log1p(np.nan_to_num(loss)))
        h5["done"] = np.ones(81, bool)
        h5.attrs.update(ATTRS, command="interpolate")
    return surface_plot.figure_1d(load_surface(path), PlotOptions())


FIGURES = {"contour": contour, "surface3d": surface3d, "partial_contourf": partial_contourf,
           "interpolation_1d": interpolation}


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_matches_its_baseline(name, tmp_path):
    actual = palette_png(FIGURES[name](tmp_path), tmp_path / f"{name}.png")
    expected = BASELINE / f"{name}.png"
    if UPDATE:
        BASELINE.mkdir(exist_ok=True)
        shutil.copyfile(actual, expected)
    assert expected.exists(), f"no baseline {expected}: run with LLV_UPDATE_BASELINES=1"
    failure = compare_images(str(expected), str(actual), tol=TOLERANCE)
    assert failure is None, failure


def test_the_comparison_sees_a_change_of_look(tmp_path):
    """The tolerance is not so loose that a figure without its plateau cut would pass."""
    surface = load_surface(write_llv_surface(tmp_path / "s.h5", x=X21, y=X21, fn=basin))
    different = surface_plot.figure_map(surface, "contour", PlotOptions(log=False))
    actual = palette_png(different, tmp_path / "linear.png")
    assert compare_images(str(BASELINE / "contour.png"), str(actual), tol=TOLERANCE) is not None
