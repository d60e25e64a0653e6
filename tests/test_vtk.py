"""ParaView files (``llv plot vtk``): every metric as a point array, ``--metric`` picks the height,
a ``valid`` mask marks missing nodes, a wrong ``--out`` suffix is refused. Checked by parsing
the XML, and by VTK's own reader where the ``vtk`` wheel is installed. Also the HTML pages."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from llv.console import LlvError
from llv.plot import make_plot

X = np.linspace(-1.0, 1.0, 5)
Y = np.linspace(-0.5, 0.5, 3)
XX, YY = np.meshgrid(X, Y)
TRAIN_LOSS = 0.2 + XX**2 + 2.0 * YY**2
METRICS = {
    "train_loss": TRAIN_LOSS,
    "train_acc": 100.0 - 10.0 * TRAIN_LOSS,
    "test_loss": 0.3 + 2.0 * XX**2 + YY**2,
    "test_acc": 90.0 - 5.0 * TRAIN_LOSS,
}


def write_surface(path, metrics=METRICS, done=None, y=Y):
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"] = X
        h5["ycoordinates"] = y
        for name, values in metrics.items():
            h5[name] = values
        h5["done"] = np.ones((len(y), len(X)), dtype=bool) if done is None else done
        h5.attrs.update({"llv_version": "0.1.0", "command": "surface", "model": "resnet8",
                         "dataset": "digits", "norm": "filter"})
    return path


def parse(path):
    piece = ET.parse(path).getroot().find("PolyData/Piece")
    arrays = {}
    for array in piece.find("PointData"):
        dtype = float if array.get("type").startswith("Float") else int
        arrays[array.get("Name")] = np.array(array.text.split(), dtype=dtype)
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    polys = {a.get("Name"): np.array(a.text.split(), dtype=int) for a in piece.find("Polys")}
    return piece, arrays, points, polys["connectivity"].reshape(-1, 4)


def test_every_metric_is_a_point_array_and_the_loss_is_the_height(tmp_path):
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5")])
    piece, arrays, points, quads = parse(out)
    assert piece.find("PointData").get("Scalars") == "train_loss"
    assert list(arrays) == ["train_loss", "test_loss", "train_acc", "test_acc", "valid"]
    for name, values in METRICS.items():
        np.testing.assert_array_equal(arrays[name], values.ravel())
    np.testing.assert_array_equal(points[:, 2], TRAIN_LOSS.ravel())
    np.testing.assert_array_equal(arrays["valid"], np.ones(15, dtype=int))
    assert len(quads) == 4 * 2


def test_metric_picks_the_height(tmp_path):
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5")], metric="test_loss")
    piece, arrays, points, _ = parse(out)
    assert piece.find("PointData").get("Scalars") == "test_loss"
    np.testing.assert_array_equal(points[:, 2], METRICS["test_loss"].ravel())
    assert list(arrays)[0] == "test_loss" and "train_loss" in arrays
    with pytest.raises(LlvError, match="no dataset 'nope'"):
        make_plot("vtk", [tmp_path / "surface.h5"], metric="nope")


def test_log_height_keeps_the_raw_metric_beside_it(tmp_path):
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5")], log=True)
    piece, arrays, points, _ = parse(out)
    assert piece.find("PointData").get("Scalars") == "ln(train_loss+0.1)"
    np.testing.assert_allclose(points[:, 2], np.log(TRAIN_LOSS.ravel() + 0.1), rtol=1e-15)
    np.testing.assert_array_equal(arrays["train_loss"], TRAIN_LOSS.ravel())


def test_missing_nodes_are_masked_at_the_lowest_height_not_the_highest(tmp_path):
    done = np.ones((3, 5), dtype=bool)
    done[2, 4] = done[0, 0] = False  # a partial run: two nodes not computed
    metrics = {k: np.where(done, v, np.nan) for k, v in METRICS.items()}
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5", metrics, done)])
    text = out.read_text()
    assert "nan" not in text.lower()  # VTK before 9.3 cannot read NaN in ASCII
    _, arrays, points, quads = parse(out)
    np.testing.assert_array_equal(arrays["valid"], done.ravel().astype(int))
    lowest = TRAIN_LOSS[done].min()
    assert points[0, 2] == lowest and points[14, 2] == lowest
    assert points[:, 2].max() == TRAIN_LOSS[done].max()
    assert len(quads) == 8 - 2  # the corner quads lost a node
    assert not np.isin(quads, [0, 14]).any()


def test_ensemble_members_give_the_median_and_its_standard_error(tmp_path):
    rng = np.random.default_rng(0)
    members = TRAIN_LOSS + rng.normal(0, 0.1, size=(4, 3, 5))
    metrics = {"train_loss": members, "train_acc": 90.0 - members}
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5", metrics)])
    _, arrays, points, _ = parse(out)
    np.testing.assert_allclose(arrays["train_loss"], np.median(members, axis=0).ravel(), rtol=1e-15)
    se = np.array([np.std(members[:, i, j], ddof=1) / 2.0 for i in range(3) for j in range(5)])
    np.testing.assert_allclose(arrays["train_loss_se"], se, rtol=1e-12)
    np.testing.assert_allclose(arrays["train_acc_se"], se, rtol=1e-12)


@pytest.mark.parametrize(("kind", "fmt", "out", "needle"), [
    ("vtk", "png", "x.png", "writes a .vtp file"),
    ("vtk", "png", "x", "writes a .vtp file"),
    ("contour", "png", "x.txt", "writes a .png file"),
    ("contour", "html", "x.png", "does not match --format html"),
    ("heatmap", "svg", "x.pdf", "does not match --format svg"),
])
def test_a_wrong_suffix_for_the_format_is_refused(tmp_path, kind, fmt, out, needle):
    path = write_surface(tmp_path / "surface.h5")
    with pytest.raises(LlvError, match=needle):
        make_plot(kind, [path], out=tmp_path / out, fmt=fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.h5"]


def test_the_command_line_refuses_a_png_named_vtk_in_one_line(tmp_path, capsys):
    from llv import cli

    path = write_surface(tmp_path / "surface.h5")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "vtk", str(path), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"llv: error: --out {tmp_path / 'x.png'}: 'llv plot vtk' writes a .vtp file here; give --out a name ending in .vtp"]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("vtk") is None,
                    reason="the vtk wheel is not installed (pip install vtk, or llv[test-extra])")
def test_vtks_own_reader_sees_every_array_and_the_mask(tmp_path):
    from vtk import vtkXMLPolyDataReader
    from vtk.util.numpy_support import vtk_to_numpy

    done = np.ones((3, 5), dtype=bool)
    done[1, 2] = False
    metrics = {k: np.where(done, v, np.nan) for k, v in METRICS.items()}
    (out,) = make_plot("vtk", [write_surface(tmp_path / "surface.h5", metrics, done)], metric="test_loss")
    reader = vtkXMLPolyDataReader()
    reader.SetFileName(str(out))
    reader.Update()
    data = reader.GetOutput()
    assert data.GetNumberOfPoints() == 15 and data.GetNumberOfPolys() == 8 - 4
    point_data = data.GetPointData()
    assert point_data.GetScalars().GetName() == "test_loss"
    names = [point_data.GetArrayName(i) for i in range(point_data.GetNumberOfArrays())]
    assert names == ["test_loss", "train_loss", "train_acc", "test_acc", "valid"]
    valid = vtk_to_numpy(point_data.GetArray("valid")).astype(bool)
    np.testing.assert_array_equal(valid, done.ravel())
    for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
        np.testing.assert_array_equal(vtk_to_numpy(point_data.GetArray(name))[valid], METRICS[name][done])
    z = vtk_to_numpy(data.GetPoints().GetData())[:, 2]
    np.testing.assert_array_equal(z[valid], METRICS["test_loss"][done])


# ------------------------------------------------------------------------------------ html


def write_1d(path, y=None):
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"] = X
        h5["train_loss"] = 0.2 + X**2
        h5["train_acc"] = 90 - X**2
        h5["test_loss"] = 0.4 + X**2
        h5["test_acc"] = 80 - X**2
        h5["done"] = np.ones(len(X), dtype=bool)
        h5.attrs.update({"llv_version": "0.1.0", "command": "surface"})
    return path


def plotly_json(path: Path) -> list[dict]:
    """The traces of a plotly page (its ``Plotly.newPlot`` data)."""
    import json
    import re

    text = path.read_text()
    start = re.search(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", text).end()
    data, _ = json.JSONDecoder().raw_decode(text[start:])
    return data


needs_plotly = pytest.mark.skipif(importlib.util.find_spec("plotly") is None,
                                  reason="the html extra (plotly) is not installed")


@needs_plotly
def test_html_cdn_is_small_inline_works_offline(tmp_path):
    path = write_surface(tmp_path / "surface.h5")
    (cdn,) = make_plot("contour", [path], fmt="html")
    (inline,) = make_plot("contour", [path], fmt="html", plotly="inline", out=tmp_path / "offline.html")
    small, big = cdn.read_text(), inline.read_text()
    assert len(small) < 100_000 and 'src="https://cdn.plot.ly/' in small
    assert len(big) > 1_000_000 and "cdn.plot.ly/plotly" not in big.split("</script>", 1)[1]
    for text in (small, big):  # responsive: fills the window, no fixed 800 x 650
        assert '"responsive": true' in text and '"width":800' not in text.replace(" ", "")
    with pytest.raises(LlvError, match="--plotly takes cdn or inline"):
        make_plot("contour", [path], fmt="html", plotly="local")


@needs_plotly
def test_html_of_1d_has_every_loss_and_accuracy_curve(tmp_path):
    (page,) = make_plot("1d", [write_1d(tmp_path / "line.h5")], fmt="html")
    traces = plotly_json(page)
    assert [t["name"] for t in traces] == ["training loss", "test loss", "training accuracy (%)", "test accuracy (%)"]
    np.testing.assert_array_equal(traces[0]["x"], X)
    np.testing.assert_array_equal(traces[1]["y"], 0.4 + X**2)
    assert traces[2]["yaxis"] == "y2" and "yaxis" not in traces[0]


@needs_plotly
def test_html_compare_shares_one_colour_scale(tmp_path):
    a = write_surface((tmp_path / "a").mkdir() or tmp_path / "a" / "surface.h5")
    doubled = {k: 2 * v for k, v in METRICS.items()}
    b = write_surface((tmp_path / "b").mkdir() or tmp_path / "b" / "surface.h5", doubled)
    (page,) = make_plot("compare", [a, b], fmt="html", out=tmp_path / "both.html")
    traces = plotly_json(page)
    assert [t["type"] for t in traces] == ["contour", "contour"]
    assert {t["coloraxis"] for t in traces} == {"coloraxis"}
    np.testing.assert_array_equal(np.array(traces[1]["z"], dtype=float), 2 * TRAIN_LOSS)
    text = page.read_text()
    assert f'"cmin":{TRAIN_LOSS.min()}' in text.replace(" ", "") and f'"cmax":{2 * TRAIN_LOSS.max()}' in text.replace(" ", "")


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.slow
@needs_plotly
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium (Debian's chromium package) is not installed")
@pytest.mark.parametrize("kind", ["contour", "1d"])
def test_inline_html_renders_offline_in_headless_chromium(tmp_path, kind):
    source = write_surface(tmp_path / "surface.h5") if kind != "1d" else write_1d(tmp_path / "line.h5")
    (page,) = make_plot(kind, [source], fmt="html", plotly="inline")
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                             "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    dom = result.stdout
    assert 'class="plot-container plotly"' in dom  # plotly drew into the div
    assert "main-svg" in dom
