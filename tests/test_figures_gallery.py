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
    images = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert images == ["figures/gallery/fig1_resnet56_3d_cpu.png",
                      "figures/gallery/fig1_resnet56_noshort_3d_cpu.png"]
    for image in images:
        with Image.open(docs / image) as png:
            assert png.mode == "P" and png.size == (960, 780)  # a palette PNG of the 3-D figure
