"""scripts/gallery.py: the gallery page from CPU-twin results, without computing anything."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from test_plot import write_llv_surface

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gallery  # noqa: E402


def test_gallery_draws_existing_twins_and_lists_the_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the presets' outputs are relative to the working directory
    grid = np.linspace(-1, 1, 9)
    for preset in ("fig1_resnet56_cpu", "fig1_resnet56_noshort_cpu"):
        folder = tmp_path / "outputs" / "experiments" / "surface" / preset
        folder.mkdir(parents=True)
        write_llv_surface(folder / "surface.h5", x=grid, y=grid, fn=lambda x, y: 0.1 + x**2 + y**2)
    docs = tmp_path / "docs"
    assert gallery.main(["fig1", "fig7", "--plots-only", "--docs", str(docs)]) == 0

    text = (docs / "gallery.md").read_text()
    assert "## Fig. 1: ResNet-56 with and without skip connections" in text
    assert "## Fig. 7:" in text and text.count("not computed yet") == 2  # two ratio maps
    assert ("*Paper: Fig. 1, without skip connections · computed grid 9×9 · drawn from its bicubic "
            "resampling (the title says so).*") in text  # each figure says what it stands for
    assert text.count("**The twin:**") == 2  # and each section what its twin changes
    images = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert images == ["figures/gallery/fig1_resnet56_3d_cpu.png",
                      "figures/gallery/fig1_resnet56_noshort_3d_cpu.png"]
    for image in images:
        with Image.open(docs / image) as png:
            assert png.mode == "P" and png.size == (768, 624)  # a palette PNG of the 3-D figure, 120 dpi


def test_smooth_compare_draws_each_panel_from_its_resampling_and_says_so(tmp_path):
    """The gallery's Figs. 3, 5 and 6 are ``compare`` figures of coarse grids: ``smooth`` must
    reach them, each panel drawn from the finer grid and saying so."""
    from llv.plot import load_surface
    from llv.plot._figure import PlotOptions
    from llv.plot.surface import figure_compare

    grid = np.linspace(-1, 1, 9)
    paths = [write_llv_surface(tmp_path / f"s{k}.h5", x=grid, y=grid,
                               fn=lambda x, y, k=k: 0.1 + (k + 1) * (x**2 + 0.5 * y**2)) for k in range(2)]
    surfaces = [load_surface(p) for p in paths]
    vertices = {}
    for smooth in (False, True):
        figure = figure_compare(surfaces, PlotOptions(smooth=smooth))
        panels = figure.axes[:2]
        titles = [ax.get_title() for ax in panels]
        assert all(("interpolated (bicubic, 9×9 → 121×121)" in t) == smooth for t in titles), titles
        filled = panels[0].collections[0]  # the first panel's filled contours
        vertices[smooth] = sum(len(path.vertices) for path in filled.get_paths())
    assert vertices[True] > 4 * vertices[False]  # the level curves follow the 121×121 grid


def test_six_surfaces_are_drawn_as_the_paper_lays_out_fig5(tmp_path):
    """Pairs (with, without skips) go in columns: the first of each pair on top."""
    grid = np.linspace(-1, 1, 9)
    paths = [write_llv_surface(tmp_path / f"s{k}.h5", x=grid, y=grid,
                               fn=lambda x, y, k=k: 0.1 + (k + 1) * (x**2 + y**2)) for k in range(6)]
    out = tmp_path / "fig5.png"
    gallery.draw_two_rows(paths, out, smooth=True, log=None, numbers={"vmin": 0.1, "vmax": 10.0})
    with Image.open(out) as png:
        width, height = png.size
    assert 1.2 < width / height < 2.0  # 2 rows of 3, not 1 row of 6 (about 5.6:1)
