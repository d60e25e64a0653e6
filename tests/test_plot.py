"""``llv plot``: every kind renders real pixels from small files; readers, levels, VTK, HTML, errors."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.contour import ContourSet
from matplotlib.image import imread

from llv.console import LlvError
from llv.plot import DPI, make_plot
from llv.plot import hessian as hessian_plot
from llv.plot import surface as surface_plot
from llv.plot import trajectory as trajectory_plot
from llv.plot._figure import PlotOptions, contour_levels, new_figure, save_figure
from llv.plot.io import load_hessian_point, load_projection, load_surface
from llv.plot.vtk import surface_vtp

X7 = np.linspace(-1.0, 1.0, 7)
Y4 = np.linspace(-0.5, 1.0, 4)
ATTRS = {"llv_version": "0.1.0", "model": "resnet8", "dataset": "digits", "norm": "filter"}


def bowl(x, y):
    return 0.2 + x**2 + 2.0 * y**2


def write_llv_surface(path, x=X7, y=Y4, fn=bowl, scale=1.0, command="surface", **extra):
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"] = x
        if y is None:
            loss = scale * fn(x, 0.0)
            h5["train_loss"] = loss
            h5["train_acc"] = 100.0 - 10.0 * loss
            h5["test_loss"] = loss + 0.1
            h5["test_acc"] = 95.0 - 10.0 * loss
        else:
            h5["ycoordinates"] = y
            xx, yy = np.meshgrid(x, y)
            loss = scale * fn(xx, yy)
            h5["train_loss"] = loss
            h5["train_acc"] = 100.0 - 10.0 * loss
        h5["done"] = np.ones(loss.shape, dtype=bool)
        for name, value in extra.items():
            h5[name] = value
        h5.attrs.update(ATTRS)
        h5.attrs["command"] = command
    return path


def write_reference_surface(path, x, y, fn, missing=()):
    """The reference's layout: allocated (nx, ny), filled in meshgrid(x, y)-raveled order, -1 unset."""
    nx, ny = len(x), len(y)
    buffer = -np.ones(nx * ny)
    for k, (xk, yk) in enumerate(zip(*(m.ravel() for m in np.meshgrid(x, y)), strict=True)):
        if k not in missing:
            buffer[k] = fn(xk, yk)
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"] = x
        h5["ycoordinates"] = y
        h5["train_loss"] = buffer.reshape(nx, ny)
        unset = np.isin(np.arange(nx * ny), list(missing))
        h5["train_acc"] = np.where(unset, -1, 50.0).reshape(nx, ny)
        h5["dir_file"] = "directions.h5"
    return path


def write_hessian_grid(path):
    xx, yy = np.meshgrid(X7, Y4)
    return write_llv_surface(
        path, command="hessian", max_eig=10.0 + xx**2, min_eig=-np.abs(xx * yy)
    )


def write_hessian_point(path, with_density=False):
    with h5py.File(path, "w") as h5:
        h5["eigenvalues"] = np.array([12.0, 9.5, 7.0])
        h5["density_nodes"] = np.array([[-0.5, 0.1, 3.0, 12.0], [-0.2, 0.0, 2.0, 11.9]])
        h5["density_weights"] = np.array([[0.2, 0.6, 0.15, 0.05], [0.1, 0.7, 0.15, 0.05]])
        if with_density:
            h5["density_grid"] = np.linspace(-1, 13, 50)
            h5["density"] = np.exp(-(np.linspace(-1, 13, 50) ** 2))
        h5.attrs.update(ATTRS)
        h5.attrs.update(
            command="hessian", lambda_max=12.0, lambda_min=-0.5, trace=40.0, trace_stderr=1.5
        )
    return path


def write_projection(folder, surface_name="surface.h5"):
    epochs = np.arange(0, 11)
    with h5py.File(folder / "projection.h5", "w") as h5:
        h5["proj_xcoord"] = np.linspace(0.9, 0.0, 11)
        h5["proj_ycoord"] = 0.8 * np.sin(np.linspace(0.0, 3.0, 11))
        h5["epochs"] = epochs
        h5["lr_drop_epochs"] = np.array([5, 8])
        h5.attrs.update(ATTRS)
        h5.attrs["explained_variance_ratio"] = np.array([0.532, 0.251])
        if surface_name:
            h5.attrs["surface_file"] = surface_name
    return folder / "projection.h5"


def write_run(folder, scale):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    )
    (folder / "checkpoints").mkdir(parents=True)
    for epoch in range(3):
        state = {k: v * scale * (1 + epoch) for k, v in model.state_dict().items()}
        torch.save(
            {"state_dict": state, "epoch": epoch}, folder / "checkpoints" / f"epoch_{epoch:03d}.pt"
        )
    torch.save({"state_dict": state}, folder / "final.pt")
    return folder


def pixels(path):
    return imread(str(path))


def assert_rendered(path, figure):
    image = pixels(path)
    width, height = figure.get_size_inches()
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert image[..., :3].var() > 1e-3, "blank image"


# ------------------------------------------------------------------------------ reading


def test_reference_layout_reads_back_value_at_x_y_with_missing_as_nan(tmp_path):
    x, y = np.linspace(0, 1.5, 7), np.linspace(-1, 2, 4)  # f never hits the sentinel -1
    path = write_reference_surface(
        tmp_path / "ref.h5", x, y, lambda a, b: a + 10 * b, missing={2, 20}
    )
    surface = load_surface(path)
    assert surface.reference and surface.grid_shape == (4, 7)
    values = surface.values["train_loss"]
    expected = x[None, :] + 10 * y[:, None]
    expected.flat[2] = expected.flat[20] = np.nan
    np.testing.assert_array_equal(values, expected)
    assert np.isnan(surface.values["train_acc"]).sum() == 2
    out = make_plot("contour", [path])
    assert out == [tmp_path / "ref_contour.png"]
    assert pixels(out[0])[..., :3].var() > 1e-3


def test_llv_layout_hides_points_not_done(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5")
    with h5py.File(path, "a") as h5:
        done = h5["done"][()]
        done[1, 3] = False
        h5["done"][...] = done
    surface = load_surface(path)
    assert not surface.reference
    assert np.isnan(surface.values["train_loss"][1, 3])
    assert np.isfinite(surface.values["train_loss"]).sum() == 27
    assert surface.values["train_loss"][2, 5] == pytest.approx(bowl(X7[5], Y4[2]))


def test_ensemble_plots_the_median(tmp_path):
    members = np.stack([np.full((4, 7), v) for v in (1.0, 2.0, 7.0)])
    path = write_llv_surface(tmp_path / "surface.h5")
    with h5py.File(path, "a") as h5:
        del h5["train_loss"]
        h5["train_loss"] = members
        h5.attrs["ensemble"] = 3
    surface = load_surface(path)
    np.testing.assert_array_equal(surface.grid("train_loss"), np.full((4, 7), 2.0))
    assert surface.members("train_loss").shape == (3, 4, 7)


def test_ensemble_1d_draws_median_band_and_members(tmp_path):
    path = tmp_path / "line.h5"
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"] = X7
        h5["train_loss"] = np.stack([X7**2 + k for k in range(5)])
        h5.attrs.update(ATTRS, ensemble=5)
    figure = surface_plot.figure_1d(load_surface(path), PlotOptions())
    ax = figure.axes[0]
    median = [line for line in ax.get_lines() if "median" in line.get_label()]
    assert len(median) == 1
    np.testing.assert_allclose(median[0].get_ydata(), X7**2 + 2)
    curves = [line for line in ax.get_lines() if not line.get_label().startswith("minimum")]
    assert len(curves) == 6  # five faint members and the median
    assert len(ax.collections) == 1  # the 10-90 % band
    members = np.stack([X7**2 + k for k in range(5)])
    band = ax.collections[0].get_paths()[0].vertices  # every vertex is (alpha, loss) on the band's edge
    for alpha, loss in band:
        column = members[:, np.argmin(np.abs(X7 - alpha))]
        assert column.min() - 1e-9 <= loss <= column.max() + 1e-9


# ------------------------------------------------------------------------------ every kind


def _inputs(kind, tmp_path):
    """Input files of ``kind`` and a function building its figure, for the size check."""
    opts = PlotOptions()
    if kind == "1d":
        path = write_llv_surface(tmp_path / "line.h5", y=None)
        return [path], lambda: surface_plot.figure_1d(load_surface(path), opts)
    if kind in ("contour", "contourf", "heatmap"):
        path = write_llv_surface(tmp_path / "surface.h5")
        return [path], lambda: surface_plot.figure_map(load_surface(path), kind, opts)
    if kind == "surface3d":
        path = write_llv_surface(tmp_path / "surface.h5")
        return [path], lambda: surface_plot.figure_surface3d(load_surface(path), opts)
    if kind == "hessian":
        path = write_hessian_grid(tmp_path / "hessian.h5")
        return [path], lambda: hessian_plot.figure_hessian(load_surface(path), opts)
    if kind == "spectrum":
        path = write_hessian_point(tmp_path / "hessian.h5")
        return [path], lambda: hessian_plot.figure_spectrum(load_hessian_point(path), opts)
    if kind == "trajectory":
        write_llv_surface(
            tmp_path / "surface.h5", x=np.linspace(-0.2, 1, 9), y=np.linspace(-1, 1, 9)
        )
        path = write_projection(tmp_path)
        return [path], lambda: trajectory_plot.figure_trajectory(
            load_projection(path), load_surface(tmp_path / "surface.h5"), opts
        )
    if kind == "compare":
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        paths = [
            write_llv_surface(tmp_path / "a" / "surface.h5"),
            write_llv_surface(tmp_path / "b" / "surface.h5", scale=3.0),
        ]
        return paths, lambda: surface_plot.figure_compare([load_surface(p) for p in paths], opts)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "1d",
        "contour",
        "contourf",
        "heatmap",
        "surface3d",
        "hessian",
        "spectrum",
        "trajectory",
        "compare",
    ],
)
def test_each_kind_renders_a_nonblank_png_of_the_figure_size(kind, tmp_path):
    paths, build = _inputs(kind, tmp_path)
    written = make_plot(kind, paths)
    assert written == [paths[0].parent / f"{paths[0].stem}_{kind}.png"]
    assert_rendered(written[0], build())


def test_surface3d_draws_a_surface_not_empty_axes(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5")
    (image_path,) = make_plot("surface3d", [path])
    figure = surface_plot.figure_surface3d(load_surface(path), PlotOptions())
    empty = new_figure(*figure.get_size_inches())
    empty.add_subplot(projection="3d")
    empty_path = save_figure(empty, tmp_path / "empty.png", "png")
    drawn, blank = pixels(image_path)[..., :3], pixels(empty_path)[..., :3]
    assert drawn.shape == blank.shape
    changed = np.abs(drawn - blank).max(axis=-1) > 0.1
    assert changed.mean() > 0.1, "the 3-D render is (nearly) the empty axes"
    # coolwarm's red end is drawn where the loss is highest
    assert ((drawn[..., 0] > 0.6) & (drawn[..., 2] < 0.4)).sum() > 100


def test_weights_kind_writes_figure_and_stats_per_run(tmp_path):
    runs = [
        write_run(tmp_path / "2024-01-01_00-00-00_small_batch", 1.0),
        write_run(tmp_path / "2024-01-01_00-00-01_large_batch", 2.0),
    ]
    written = make_plot("weights", runs)
    assert written[1:] == [run / "weights.h5" for run in runs]
    assert written[0] == tmp_path / "2024-01-01_00-00-00_small_batch_weights.png"
    image = pixels(written[0])
    assert image.shape[:2] == (4 * DPI, 10 * DPI) and image[..., :3].var() > 1e-3
    from llv.plot.weights import figure_weights, gather_stats

    labelled, _ = gather_stats(runs)
    assert [label for label, _ in labelled] == ["small_batch", "large_batch"]
    histogram_axes = figure_weights(labelled, PlotOptions()).axes[0]
    assert [t.get_text() for t in histogram_axes.get_legend().get_texts()] == [
        "small_batch",
        "large_batch",
    ]


# ------------------------------------------------------------------------------ vtk


def test_vtk_nonsquare_grid_has_all_points_quads_and_the_loss_as_height(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5")  # 7 x 4
    (out,) = make_plot("vtk", [path])
    assert out == tmp_path / "surface_vtk.vtp"
    piece = ET.parse(out).getroot().find("PolyData/Piece")
    assert int(piece.get("NumberOfPoints")) == 7 * 4
    assert int(piece.get("NumberOfPolys")) == 6 * 3
    points = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)
    xx, yy = np.meshgrid(X7, Y4)
    np.testing.assert_array_equal(points[:, 0], xx.ravel())
    np.testing.assert_array_equal(points[:, 1], yy.ravel())
    np.testing.assert_array_equal(points[:, 2], bowl(xx, yy).ravel())
    loss = np.array(piece.find("PointData/DataArray").text.split(), dtype=float)
    np.testing.assert_array_equal(loss, bowl(xx, yy).ravel())
    arrays = {a.get("Name"): np.array(a.text.split(), dtype=int) for a in piece.find("Polys")}
    quads = arrays["connectivity"].reshape(-1, 4)
    np.testing.assert_array_equal(arrays["offsets"], 4 * np.arange(1, 19))
    assert quads[0].tolist() == [0, 1, 8, 7] and quads[-1].tolist() == [19, 20, 27, 26]
    # every quad is one grid step wide in x and in y
    corners = points[quads]
    np.testing.assert_allclose(np.ptp(corners[..., 0], axis=1), X7[1] - X7[0])
    np.testing.assert_allclose(np.ptp(corners[..., 1], axis=1), Y4[1] - Y4[0])


def test_vtk_clips_at_vmax_and_skips_quads_of_missing_points(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5")
    with h5py.File(path, "a") as h5:
        loss = h5["train_loss"][()]
        loss[0, 0] = np.nan
        h5["train_loss"][...] = loss
    root = ET.fromstring(surface_vtp(load_surface(path), PlotOptions(vmax=1.0)))
    piece = root.find("PolyData/Piece")
    assert int(piece.get("NumberOfPoints")) == 28
    assert int(piece.get("NumberOfPolys")) == 17  # the corner quad lost its point
    z = np.array(piece.find("Points/DataArray").text.split(), dtype=float).reshape(-1, 3)[:, 2]
    assert z.max() == 1.0 and np.isfinite(z).all()


def test_vtk_needs_a_2d_surface(tmp_path):
    path = write_llv_surface(tmp_path / "line.h5", y=None)
    with pytest.raises(LlvError, match="needs a 2-D surface"):
        make_plot("vtk", [path])


# ------------------------------------------------------------------------------ levels, compare


def test_contour_levels_follow_vmin_vmax_vlevel_and_log():
    values = np.array([0.3, 7.9])
    np.testing.assert_allclose(
        contour_levels(values, PlotOptions(vmin=0.1, vmax=10, vlevel=0.5)),
        0.1 + 0.5 * np.arange(20),
    )
    auto = contour_levels(values, PlotOptions())
    assert auto[0] <= 0.3 and auto[-1] >= 7.9 and 10 <= len(auto) <= 22
    logs = contour_levels(values, PlotOptions(log=True, vmin=0.01, vmax=100, vlevel=1))
    np.testing.assert_allclose(logs, [0.01, 0.1, 1, 10, 100])
    bounded = contour_levels(values, PlotOptions(vmin=0.25, vmax=5.0))
    assert bounded[0] == 0.25 and bounded[-1] == 5.0


def test_compare_uses_the_same_levels_in_every_panel_and_one_colour_bar(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    low = load_surface(write_llv_surface(tmp_path / "a" / "surface.h5"))
    high = load_surface(
        write_llv_surface(tmp_path / "b" / "surface.h5", x=np.linspace(-2, 2, 5), scale=4.0)
    )
    figure = surface_plot.figure_compare([low, high], PlotOptions())
    sets = [[c for c in ax.collections if isinstance(c, ContourSet)] for ax in figure.axes[:2]]
    levels = [cs.levels for panel in sets for cs in panel]
    assert len(levels) == 4  # filled and lines in each panel
    for other in levels[1:]:
        np.testing.assert_array_equal(other, levels[0])
    union = np.concatenate([low.values["train_loss"].ravel(), high.values["train_loss"].ravel()])
    assert levels[0][0] <= union.min() and levels[0][-1] >= union.max()
    assert len(figure.axes) == 3  # two panels and one shared colour bar
    # each panel names its run and what differs; the super-title what they share
    assert [ax.get_title() for ax in figure.axes[:2]] == ["a · 7×4 grid", "b · 5×4 grid"]
    assert figure.get_suptitle() == "resnet8 · digits · filter norm"
    fixed = surface_plot.figure_compare([low, high], PlotOptions(vmin=1, vmax=5, vlevel=1))
    for ax in fixed.axes[:2]:
        for cs in (c for c in ax.collections if isinstance(c, ContourSet)):
            np.testing.assert_array_equal(cs.levels, [1, 2, 3, 4, 5])


def test_log_contours_are_1_2_5_within_each_decade(tmp_path):
    surface = load_surface(write_llv_surface(tmp_path / "surface.h5"))  # 0.2 to 3.2
    figure = surface_plot.figure_map(surface, "contourf", PlotOptions(log=True))
    (filled,) = [c for c in figure.axes[0].collections if isinstance(c, ContourSet) and c.filled]
    np.testing.assert_allclose(filled.levels, [0.2, 0.5, 1, 2, 5])


# ------------------------------------------------------------------------------ 1-D, trajectory, curvature


def test_1d_draws_standard_errors_as_error_bars(tmp_path):
    se = np.linspace(0.01, 0.07, 7)
    path = write_llv_surface(tmp_path / "line.h5", y=None, train_loss_se=se)
    ax = surface_plot.figure_1d(load_surface(path), PlotOptions()).axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = bars.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 2 * se)
    plain = write_llv_surface(tmp_path / "plain.h5", y=None)
    ax = surface_plot.figure_1d(load_surface(plain), PlotOptions()).axes[0]
    assert not [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_interpolation_file_plots_along_alpha(tmp_path):
    path = tmp_path / "interpolate.h5"
    alphas = np.linspace(-0.5, 1.5, 9)
    with h5py.File(path, "w") as h5:
        h5["alphas"] = alphas
        for split in ("train", "test"):
            h5[f"{split}_loss"] = (alphas - 0.5) ** 2
            h5[f"{split}_acc"] = 90 - alphas
        h5.attrs.update(ATTRS, command="interpolate")
    surface = load_surface(path)
    assert surface.is_interpolation and not surface.is_2d
    ax = surface_plot.figure_1d(surface, PlotOptions()).axes[0]
    assert ax.get_xlabel() == "α" and "interpolation" in ax.get_title()
    assert {
        line.get_linestyle() for line in ax.get_lines() if line.get_label().endswith("loss")
    } == {"-", "--"}
    (out,) = make_plot("1d", [path])
    assert pixels(out)[..., :3].var() > 1e-3


def test_trajectory_marks_lr_drops_red_and_labels_explained_variance(tmp_path):
    write_llv_surface(tmp_path / "surface.h5", x=np.linspace(-0.2, 1, 9), y=np.linspace(-1, 1, 9))
    projection = load_projection(write_projection(tmp_path))
    assert projection.surface_file == tmp_path / "surface.h5"
    figure = trajectory_plot.figure_trajectory(
        projection, load_surface(projection.surface_file), PlotOptions()
    )
    ax = figure.axes[0]
    assert ax.get_xlabel() == "1st PC: 53.20 %" and ax.get_ylabel() == "2nd PC: 25.10 %"
    (red,) = [line for line in ax.get_lines() if line.get_color() == "red"]
    np.testing.assert_array_equal(red.get_xdata(), projection.x[[5, 8]])
    np.testing.assert_array_equal(red.get_ydata(), projection.y[[5, 8]])
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    # without its surface, the path alone
    (tmp_path / "alone").mkdir()
    alone = write_projection(tmp_path / "alone", surface_name=None)
    ax = trajectory_plot.figure_trajectory(load_projection(alone), None, PlotOptions()).axes[0]
    assert not any(isinstance(c, ContourSet) for c in ax.collections)


def test_hessian_map_is_abs_min_over_max(tmp_path):
    surface = load_surface(write_hessian_grid(tmp_path / "hessian.h5"))
    xx, yy = np.meshgrid(X7, Y4)
    np.testing.assert_allclose(hessian_plot.eigen_ratio(surface), np.abs(xx * yy) / (10 + xx**2))
    with pytest.raises(LlvError, match="not a Hessian grid"):
        hessian_plot.eigen_ratio(load_surface(write_llv_surface(tmp_path / "surface.h5")))


def test_spectral_density_is_a_normalized_gaussian_mixture():
    grid, density = hessian_plot.spectral_density(np.array([[0.0, 10.0]]), np.array([[0.5, 0.5]]))
    sigma = 0.1  # 1 % of the range
    assert np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(grid)) == pytest.approx(1.0)
    peak = density[np.argmin(np.abs(grid))]
    assert peak == pytest.approx(0.5 / (sigma * np.sqrt(2 * np.pi)), rel=0.01)
    assert grid[0] == pytest.approx(-5 * sigma) and grid[-1] == pytest.approx(10 + 5 * sigma)


def test_spectrum_uses_the_stored_density_when_present(tmp_path):
    point = load_hessian_point(write_hessian_point(tmp_path / "hessian.h5", with_density=True))
    ax = hessian_plot.figure_spectrum(point, PlotOptions()).axes[0]
    assert ax.get_yscale() == "log"
    curve = ax.get_lines()[0]
    np.testing.assert_array_equal(curve.get_xdata(), np.linspace(-1, 13, 50))


# ------------------------------------------------------------------------------ html


def test_html_is_one_self_contained_file_with_the_data(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5", fn=lambda x, y: 0.123456789 + 0 * x + 0 * y)
    with h5py.File(path, "a") as h5:
        loss = h5["train_loss"][()]
        loss[3, 6] = 4.75
        h5["train_loss"][...] = loss
    written = make_plot("contourf", [path], fmt="html", plotly="inline")
    assert written == [tmp_path / "surface_contourf.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["surface.h5", "surface_contourf.html"]
    text = written[0].read_text()
    assert "0.123456789" in text and "4.75" in text
    assert "<script src=" not in text  # plotly.js embedded, works offline
    assert len(text) > 1_000_000


def test_html_only_for_2d_surface_kinds_and_needs_plotly(tmp_path, monkeypatch):
    path = write_llv_surface(tmp_path / "surface.h5")
    with pytest.raises(LlvError, match="--format html is available for"):
        make_plot("spectrum", [path], fmt="html")
    monkeypatch.setitem(sys.modules, "plotly", None)
    monkeypatch.setitem(sys.modules, "plotly.graph_objects", None)
    with pytest.raises(LlvError, match=r"pip install 'llv\[html\]'"):
        make_plot("heatmap", [path], fmt="html")


# ------------------------------------------------------------------------------ outputs, errors


def test_out_and_format_choose_the_file(tmp_path):
    path = write_llv_surface(tmp_path / "surface.h5")
    (pdf,) = make_plot("heatmap", [path], out=tmp_path / "figs" / "map.pdf")
    assert pdf == tmp_path / "figs" / "map.pdf" and pdf.read_bytes()[:4] == b"%PDF"
    (svg,) = make_plot("contour", [path], fmt="svg")
    assert svg == tmp_path / "surface_contour.svg" and b"<svg" in svg.read_bytes()[:400]
    with pytest.raises(LlvError, match="does not match --format"):
        make_plot("contour", [path], out=tmp_path / "x.pdf", fmt="svg")


def test_one_figure_per_input_for_single_file_kinds(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [write_llv_surface(tmp_path / d / "surface.h5") for d in ("a", "b")]
    assert make_plot("heatmap", paths) == [tmp_path / d / "surface_heatmap.png" for d in ("a", "b")]
    with pytest.raises(LlvError, match="--out names one file"):
        make_plot("heatmap", paths, out=tmp_path / "x.png")


def test_bad_inputs_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["weights"] = np.zeros(3)
    point = write_hessian_point(tmp_path / "hessian.h5")
    line = write_llv_surface(tmp_path / "line.h5", y=None)
    grid = write_llv_surface(tmp_path / "surface.h5")
    cases = [
        (("contour", [tmp_path / "missing.h5"]), {}, "file not found"),
        (("contour", [text]), {}, "not an llv or reference loss-landscape file"),
        (
            ("contourf", [tmp_path / "other.h5"]),
            {},
            "expected datasets xcoordinates/alphas and <split>_loss",
        ),
        (("hessian", [point]), {}, "use 'llv plot spectrum'"),
        (("spectrum", [grid]), {}, "not an llv Hessian point file"),
        (("contour", [line]), {}, "'contour' needs a 2-D surface"),
        (("1d", [grid]), {}, "'1d' needs a 1-D surface"),
        (("nonsense", [line]), {}, "unknown plot kind"),
        (("contour", [grid]), {"vlevel": 0}, "--vlevel must be positive"),
        (("contour", [grid]), {"vlevel": 1e-6}, "at most 1000"),
        (("weights", [tmp_path / "no_run"]), {}, "file not found"),
        (("trajectory", [grid]), {}, "not an llv projection file"),
    ]
    for args, options, needle in cases:
        with pytest.raises(LlvError) as raised:
            make_plot(*args, **options)
        assert needle in str(raised.value)
        assert "\n" not in str(raised.value)
