"""The figure rules (issue 22): nice levels, one automatic log scale, labels that do not overlap,
the minimizer, colour bars, titles, 3-D cut at vmax, shared comparisons, partial and approximate
results, and the same picture from make_plot, ``llv plot`` and ``llv.plot.draw``."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.contour import ContourSet
from matplotlib.image import imread
from mpl_toolkits.mplot3d.art3d import Poly3DCollection
from test_plot import ATTRS, write_llv_surface, write_projection

from llv.plot import auto_log, draw, make_plot, options_tag, output_path
from llv.plot import surface as surface_plot
from llv.plot import trajectory as trajectory_plot
from llv.plot._figure import (
    PlotOptions,
    contour_levels,
    format_level,
    nice_levels,
    save_figure,
)
from llv.plot.io import load_projection, load_surface

X21 = np.linspace(-1.0, 1.0, 21)


def basin(x, y):
    """A minimizer of loss 3e-4 at the origin rising to ~45 in the corners: five decades."""
    return 0.0003 + 8.0 * (x**2 + y**2) ** 1.5 + 3.0 * np.maximum(x, 0.0) ** 2


def write_basin(path, **extra):
    return write_llv_surface(path, x=X21, y=X21, fn=basin, **extra)


def contour_sets(ax):
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def is_one_two_five(value: float) -> bool:
    """value = m x 10^k with m in {1, 2, 5}."""
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    return any(math.isclose(abs(value), m * 10.0**exponent, rel_tol=1e-9) for m in (1, 2, 5))


# ------------------------------------------------------------------------------ levels


@pytest.mark.parametrize("low, high", [(0.3, 7.9), (6.29, 65.5), (0.0, 1e-3), (-2.5, 13.0),
                                       (1234.0, 1301.0), (0.02, 0.021)])
def test_linear_levels_are_multiples_of_a_1_2_5_step_covering_the_data(low, high):
    levels = contour_levels(np.array([low, high]), PlotOptions(log=False))
    steps = np.diff(levels)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert is_one_two_five(steps[0])
    np.testing.assert_allclose(levels / steps[0], np.round(levels / steps[0]), atol=1e-9)
    assert levels[0] <= low and levels[-1] >= high
    assert levels[1] > low and levels[-2] < high  # at most one level beyond each end
    assert 5 <= len(levels) <= 21


@pytest.mark.parametrize("low, high", [(3e-4, 32.0), (0.01, 9.0), (2e-9, 5e3), (0.15, 40.0)])
def test_log_levels_are_1_2_5_within_decades_covering_the_data(low, high):
    levels = contour_levels(np.array([low, high]), PlotOptions(log=True))
    assert all(is_one_two_five(v) for v in levels)
    assert levels[0] <= low and levels[-1] >= high
    assert levels[1] > low and levels[-2] < high
    assert np.all(np.diff(levels) > 0) and len(levels) <= 21
    decades = math.log10(high / low)
    if decades < 6:  # 1, 2 and 5 in every decade while that stays readable
        assert len(levels) >= 3 * math.floor(decades)


def test_nice_levels_examples_from_the_issue():
    # the demo's levels were 6.29, 36.5, 65.5: round numbers now
    assert nice_levels(6.29, 65.5, count=10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70]
    assert nice_levels(0.0003, 32.0, log=True)[[0, 1, -1]].tolist() == [0.0002, 0.0005, 50.0]
    assert [format_level(v) for v in (0.0005, 50.0, 2e-6, 125000.0)] == [
        "0.0005", "50", "2e-6", "1.25e5"]


def test_auto_log_is_two_decades_of_positive_values():
    assert auto_log([0.0003, 32.0]) and auto_log(np.array([[0.01, np.nan], [1.01, 2.0]]))
    assert not auto_log([0.2, 3.2]) and not auto_log([0.01, 1.0])  # exactly 100: linear
    assert not auto_log([0.0, 32.0]) and not auto_log([np.nan]) and not auto_log([])


# ------------------------------------------------------------------------------ one 2-D figure


@pytest.fixture
def basin_file(tmp_path):
    return write_basin(tmp_path / "surface.h5")


def test_contour_of_a_loss_spanning_decades_is_log_with_round_levels(basin_file):
    figure = surface_plot.figure_map(load_surface(basin_file), "contour", PlotOptions())
    ax, bar_ax = figure.axes
    (lines,) = contour_sets(ax)
    assert isinstance(lines.norm, LogNorm)
    assert all(is_one_two_five(v) for v in lines.levels)
    assert bar_ax.get_ylabel() == "training loss (log scale)"
    # a tick at every level inside the colour range; the top level numbered
    ticks = np.union1d(bar_ax.yaxis.get_minorticklocs(), bar_ax.yaxis.get_majorticklocs())
    np.testing.assert_allclose(ticks, lines.levels, rtol=1e-9)
    major = dict(zip(bar_ax.yaxis.get_majorticklocs(),
                     [t.get_text() for t in bar_ax.get_yticklabels()], strict=True))
    assert major[lines.levels[-1]] == format_level(lines.levels[-1])
    linear = load_surface(write_llv_surface(basin_file.parent / "bowl.h5"))  # 0.2 .. 3.2
    (lines,) = contour_sets(surface_plot.figure_map(linear, "contour", PlotOptions()).axes[0])
    assert not isinstance(lines.norm, LogNorm)


def _boxes(figure, texts):
    renderer = figure.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in texts]


def test_contour_labels_do_not_overlap_each_other_or_the_minimizer(basin_file):
    figure = surface_plot.figure_map(load_surface(basin_file), "contour", PlotOptions())
    ax = figure.axes[0]
    figure.canvas.draw()
    (lines,) = contour_sets(ax)
    labels = lines.labelTexts
    assert len(labels) >= 5
    boxes = _boxes(figure, labels)
    for i, first in enumerate(boxes):
        for second in boxes[i + 1:]:
            assert not first.overlaps(second)
    (star,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
    star_box = star.get_window_extent(figure.canvas.get_renderer())
    assert not any(box.overlaps(star_box) for box in boxes)
    assert not any(box.overlaps(ax.get_legend().get_window_extent()) for box in boxes)
    frame = ax.get_window_extent()
    assert all(frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) for box in boxes)
    # each label says the level of the line it sits on
    assert {t.get_text() for t in labels} <= {format_level(v) for v in lines.levels}


def test_minimizer_is_marked_at_the_smallest_value(tmp_path):
    shifted = write_llv_surface(tmp_path / "s.h5", x=X21, y=X21,
                                fn=lambda x, y: 1.0 + (x - 0.3) ** 2 + (y + 0.6) ** 2)
    ax = surface_plot.figure_map(load_surface(shifted), "contourf", PlotOptions()).axes[0]
    (star,) = [line for line in ax.get_lines() if line.get_marker() == "*"]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == pytest.approx((0.3, -0.6))
    assert star.get_label() == "minimum 1"


def test_title_names_model_data_normalization_and_grid(basin_file):
    ax = surface_plot.figure_map(load_surface(basin_file), "heatmap", PlotOptions()).axes[0]
    assert ax.get_title() == "resnet8 · digits · filter norm · 21×21 grid"


# ------------------------------------------------------------------------------ same picture


def test_end_of_run_figure_equals_llv_plot_and_the_api(basin_file, tmp_path):
    values = load_surface(basin_file).grid("train_loss")
    # the end of a run: log decided by auto_log; llv plot without options: log left open
    (end_of_run,) = make_plot("contour", [basin_file], log=auto_log(values))
    first = imread(str(end_of_run))
    (plotted,) = make_plot("contour", [basin_file])
    assert plotted == end_of_run == tmp_path / "surface_contour.png"
    np.testing.assert_array_equal(imread(str(plotted)), first)
    # Result.plot's path: draw() on new axes
    ax = draw("contour", load_surface(basin_file))
    api = save_figure(ax.figure, tmp_path / "api.png", "png")
    np.testing.assert_array_equal(imread(str(api)), first)


def test_llv_plot_command_draws_the_end_of_run_figure(basin_file):
    from typer.testing import CliRunner

    from llv.cli import app

    (end_of_run,) = make_plot("contour", [basin_file], log=True)
    expected = imread(str(end_of_run))
    end_of_run.unlink()
    result = CliRunner().invoke(app, ["plot", "contour", str(basin_file)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(imread(str(end_of_run)), expected)
    for options, name in ((["--vmax", "10"], "surface_contour_vmax10.png"),):
        result = CliRunner().invoke(app, ["plot", "contour", str(basin_file), *options])
        assert result.exit_code == 0, result.output
        assert (basin_file.parent / name).is_file()
    np.testing.assert_array_equal(imread(str(end_of_run)), expected)  # not replaced


def test_llv_plot_never_overwrites_a_figure_of_other_options(basin_file, tmp_path):
    (default,) = make_plot("contour", [basin_file])
    before = default.read_bytes()
    assert make_plot("contour", [basin_file], vmax=10) == [tmp_path / "surface_contour_vmax10.png"]
    assert make_plot("contour", [basin_file], log=False) == [tmp_path / "surface_contour_linear.png"]
    assert make_plot("contour", [basin_file], log=True) == [default]  # auto says log already
    assert default.read_bytes() == before
    tag = options_tag("surface3d", [basin_file], PlotOptions(vmin=0.01, vlevel=0.5, smooth=True))
    assert output_path("surface3d", basin_file, "png", tag) == (
        tmp_path / "surface_surface3d_vmin0.01_vlevel0.5_smooth.png")


def test_user_bounds_and_spacing_decide_the_scale(basin_file):
    surface = load_surface(basin_file)
    # --vmin 1 --vmax 40 spans 1.6 decades: linear; --vlevel alone is a linear spacing
    for options in (PlotOptions(vmin=1, vmax=40), PlotOptions(vlevel=5.0)):
        (filled,) = [c for c in contour_sets(surface_plot.figure_map(
            surface, "contourf", options).axes[0]) if c.filled]
        assert not isinstance(filled.norm, LogNorm)


def test_trajectory_and_1d_follow_the_automatic_log_scale(tmp_path):
    write_llv_surface(tmp_path / "surface.h5", x=np.linspace(-0.2, 1, 9),
                      y=np.linspace(-1, 1, 9), fn=lambda x, y: 0.001 + 30 * (x**2 + y**2))
    projection = load_projection(write_projection(tmp_path))
    figure = trajectory_plot.figure_trajectory(
        projection, load_surface(tmp_path / "surface.h5"), PlotOptions())
    (lines,) = contour_sets(figure.axes[0])
    assert isinstance(lines.norm, LogNorm)
    line = write_llv_surface(tmp_path / "line.h5", x=X21, y=None, fn=lambda x, y: 0.001 + 30 * x**2)
    ax = surface_plot.figure_1d(load_surface(line), PlotOptions()).axes[0]
    assert ax.get_yscale() == "log"
    # the scale follows the training loss (as the end-of-run figure decides), not the test loss
    with h5py.File(line, "a") as h5:
        h5["train_loss"][...] = 1.0 + X21**2
        h5["test_loss"][...] = 0.001 + 30 * X21**2
    ax = surface_plot.figure_1d(load_surface(line), PlotOptions()).axes[0]
    assert ax.get_yscale() == "linear"


# ------------------------------------------------------------------------------ 3-D


def _polygons(ax):
    """The (k, 3) vertices of every face drawn (matplotlib keeps them padded to one length)."""
    (faces,) = [c for c in ax.collections if isinstance(c, Poly3DCollection)]
    return [np.asarray(face)[~invalid] for face, invalid
            in zip(faces._faces, faces._invalid_vertices, strict=True)]


def test_surface3d_is_cut_at_vmax_not_clipped_to_a_plateau(basin_file):
    surface = load_surface(basin_file)
    ax = surface_plot.figure_surface3d(surface, PlotOptions(vmax=5.0)).axes[0]
    polygons = _polygons(ax)
    tops = np.array([p[:, 2].max() for p in polygons])
    bottoms = np.array([p[:, 2].min() for p in polygons])
    assert tops.max() == pytest.approx(5.0)  # the walls end exactly at vmax...
    assert np.all(tops <= 5.0 + 1e-9)
    assert not np.any(bottoms >= 5.0 - 1e-9)  # ...and no face lies flat on it
    # every cell of the grid entirely below vmax is drawn whole
    z = surface.grid("train_loss")
    whole = (np.stack([z[:-1, :-1], z[:-1, 1:], z[1:, 1:], z[1:, :-1]]) <= 5.0).all(axis=0)
    assert sum(len(p) == 4 and p[:, 2].max() < 5.0 for p in polygons) >= whole.sum()
    assert ax.get_zlim()[1] == pytest.approx(5.0)


def test_surface_polygons_cut_a_cell_where_the_edge_crosses_vmax():
    polygons, heights = surface_plot.surface_polygons(
        np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([[0.0, 2.0], [0.0, 2.0]]), top=1.0)
    (cell,) = polygons
    # the left half of the unit square, under the plane z = 1 (z = 2x along both edges)
    assert sorted(map(tuple, cell.round(9))) == sorted(
        [(0.0, 0.0, 0.0), (0.5, 0.0, 1.0), (0.5, 1.0, 1.0), (0.0, 1.0, 0.0)])
    assert heights[0] == pytest.approx(0.5)
    kept, _ = surface_plot.surface_polygons(
        np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0]), np.array([[0.0, np.nan, 0.0]] * 2))
    assert kept == []  # a cell touching a missing value is not drawn


def test_smooth_surface3d_interpolates_through_the_grid_and_says_so(tmp_path):
    cubic = write_llv_surface(tmp_path / "cubic.h5", x=X21, y=X21,
                              fn=lambda x, y: 3 + x**3 - 2 * x * y**2 + y)
    surface = load_surface(cubic)
    fine_x, fine_y, fine = surface_plot.upsample(surface.x, surface.y, surface.grid("train_loss"))
    assert fine.shape == (121, 121)
    np.testing.assert_allclose(fine[::6, ::6], surface.grid("train_loss"), atol=1e-12)
    xx, yy = np.meshgrid(fine_x, fine_y)
    np.testing.assert_allclose(fine, 3 + xx**3 - 2 * xx * yy**2 + yy, atol=1e-9)  # cubic: exact
    ax = surface_plot.figure_surface3d(surface, PlotOptions(smooth=True)).axes[0]
    assert "interpolated (bicubic, 21×21 → 121×121)" in ax.get_title()
    plain = surface_plot.figure_surface3d(surface, PlotOptions()).axes[0]
    assert "interpolated" not in plain.get_title()


def test_smooth_maps_draw_the_interpolated_grid_with_the_same_levels(basin_file):
    surface = load_surface(basin_file)
    plain = surface_plot.figure_map(surface, "contour", PlotOptions()).axes[0]
    smooth = surface_plot.figure_map(surface, "contour", PlotOptions(smooth=True)).axes[0]
    (plain_lines,), (smooth_lines,) = contour_sets(plain), contour_sets(smooth)
    np.testing.assert_array_equal(plain_lines.levels, smooth_lines.levels)
    assert smooth.get_title().endswith("interpolated (bicubic, 21×21 → 121×121)")
    # the smooth lines have many more vertices: rings, not the grid's diamonds
    level = list(plain_lines.levels).index(0.1)
    assert (len(smooth_lines.get_paths()[level].vertices)
            > 3 * len(plain_lines.get_paths()[level].vertices))
    heat = surface_plot.figure_map(surface, "heatmap", PlotOptions(smooth=True)).axes[0]
    assert "interpolated" not in heat.get_title()  # a heatmap shows the grid's own cells
    from test_plot import write_hessian_grid

    from llv.plot import hessian as hessian_plot

    grid = load_surface(write_hessian_grid(basin_file.parent / "hessian.h5"))
    ratio = hessian_plot.figure_hessian(grid, PlotOptions(smooth=True)).axes[0]
    assert "interpolated (bicubic, 7×4 → 121×121)" in ratio.get_title()


def test_smoothing_keeps_missing_points_missing():
    values = np.ones((6, 6))
    values[2, 3] = np.nan
    x = np.linspace(0, 1, 6)
    fine_x, fine_y, fine = surface_plot.upsample(x, x, values, points=11)
    assert np.isnan(fine[4, 6]) and np.isfinite(fine).sum() == fine.size - np.isnan(fine).sum()
    np.testing.assert_allclose(fine[np.isfinite(fine)], 1.0)


# ------------------------------------------------------------------------------ compare


def test_compare_shares_levels_norm_and_log_scale_from_all_panels(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "sharp").mkdir()
    flat = write_llv_surface(tmp_path / "flat" / "surface.h5", x=X21, y=X21,
                             fn=lambda x, y: 0.01 + 0.5 * (x**2 + y**2))
    sharp = write_llv_surface(tmp_path / "sharp" / "surface.h5", x=X21, y=X21,
                              fn=lambda x, y: 1.0 + 40.0 * (x**2 + y**2))
    figure = surface_plot.figure_compare([load_surface(flat), load_surface(sharp)], PlotOptions())
    filled = [[c for c in contour_sets(ax) if c.filled][0] for ax in figure.axes[:2]]
    np.testing.assert_array_equal(filled[0].levels, filled[1].levels)
    assert all(isinstance(f.norm, LogNorm) for f in filled)  # 0.01 .. 81 together: log
    assert {(f.norm.vmin, f.norm.vmax) for f in filled} == {(filled[0].levels[0],
                                                             filled[0].levels[-1])}
    # neither panel is a single colour: each shows several bands of the shared levels
    for f in filled:
        bands = sum(len(path.vertices) > 0 for path in f.get_paths())
        assert bands >= 4
    assert [ax.get_title() for ax in figure.axes[:2]] == ["flat", "sharp"]
    independent = surface_plot.figure_compare([load_surface(flat), load_surface(sharp)],
                                              PlotOptions(), share=False)
    levels = [[c for c in contour_sets(ax) if c.filled][0].levels for ax in independent.axes[:2]]
    assert not np.array_equal(levels[0], levels[1])


def test_compare_names_every_model_not_only_the_first(tmp_path):
    paths = []
    for name in ("resnet20", "resnet56", "resnet110"):
        (tmp_path / name).mkdir()
        path = write_llv_surface(tmp_path / name / "surface.h5", x=X21, y=X21)
        with h5py.File(path, "a") as h5:
            h5.attrs["model"] = name
        paths.append(path)
    figure = surface_plot.figure_compare([load_surface(p) for p in paths], PlotOptions())
    assert figure.get_suptitle() == "digits · filter norm · 21×21 grid"
    assert [ax.get_title() for ax in figure.axes[:3]] == ["resnet20", "resnet56", "resnet110"]


# ------------------------------------------------------------------------------ honest figures


def _make_partial(path, computed=300, approx=False):
    with h5py.File(path, "a") as h5:
        done = np.ones(h5["done"].shape, bool)
        done.ravel()[computed:] = False
        h5["done"][...] = done
        for name in ("train_loss", "train_acc"):
            values = h5[name][()]
            values[~done] = np.nan
            h5[name][...] = values
        if approx:
            h5.attrs["approx"] = True
    return path


def _hatched_cells(ax):
    from matplotlib.collections import PatchCollection

    cells = 0.0
    for collection in (c for c in ax.collections if isinstance(c, PatchCollection)):
        assert collection.get_hatch()
        for path in collection.get_paths():
            box = path.get_extents(collection.get_transform() - ax.transData)
            cells += box.width * box.height
    return cells


def test_partial_result_hatches_missing_cells_and_counts_points(tmp_path):
    path = _make_partial(write_basin(tmp_path / "surface.h5"), computed=300)
    surface = load_surface(path)
    for kind in ("contour", "contourf", "heatmap"):
        ax = surface_plot.figure_map(surface, kind, PlotOptions()).axes[0]
        assert ax.get_title().splitlines()[1] == "300 of 441 points"
        step = X21[1] - X21[0]
        assert _hatched_cells(ax) == pytest.approx(141 * step * step)
        assert "not computed: 141 points" in [t.get_text() for t in ax.get_legend().get_texts()]
    (tmp_path / "full").mkdir()
    full = write_basin(tmp_path / "full" / "surface.h5")
    figure = surface_plot.figure_compare([surface, load_surface(full)], PlotOptions())
    assert "300 of 441 points" in figure.axes[0].get_title()
    assert "points" not in figure.axes[1].get_title()
    assert _hatched_cells(figure.axes[0]) > 0 and _hatched_cells(figure.axes[1]) == 0
    complete = surface_plot.figure_map(load_surface(full), "contour", PlotOptions()).axes[0]
    assert "\n" not in complete.get_title() and _hatched_cells(complete) == 0


def test_diverged_points_are_hatched_apart_from_points_not_computed(tmp_path):
    path = write_basin(tmp_path / "surface.h5")
    with h5py.File(path, "a") as h5:
        loss = h5["train_loss"][()]
        loss[0, :3] = np.inf  # computed (done, with an accuracy) but the loss overflowed
        h5["train_loss"][...] = loss
    ax = surface_plot.figure_map(load_surface(path), "contourf", PlotOptions()).axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "not finite" in texts and not any("not computed" in t for t in texts)
    assert "\n" not in ax.get_title()  # every point was computed


def test_approximate_result_says_so_with_its_largest_standard_error(tmp_path):
    se = np.full((21, 21), 0.004)
    se[3, 4] = 0.0123
    path = write_basin(tmp_path / "surface.h5", train_loss_se=se)
    with h5py.File(path, "a") as h5:
        h5.attrs["approx"] = True
    surface = load_surface(path)
    ax = surface_plot.figure_map(surface, "contour", PlotOptions()).axes[0]
    assert ax.get_title().splitlines()[1] == "approximate: s.e. ≤ 0.012"
    ax3d = surface_plot.figure_surface3d(surface, PlotOptions()).axes[0]
    assert "approximate: s.e. ≤ 0.012" in ax3d.get_title()
    line = write_llv_surface(tmp_path / "line.h5", x=X21, y=None, train_loss_se=np.full(21, 0.02))
    with h5py.File(line, "a") as h5:
        h5.attrs["approx"] = "true"
    ax = surface_plot.figure_1d(load_surface(line), PlotOptions()).axes[0]
    assert ax.get_title().endswith("approximate: s.e. ≤ 0.02")
    exact = write_basin(tmp_path / "exact.h5", train_loss_se=se)
    ax = surface_plot.figure_map(load_surface(exact), "contour", PlotOptions()).axes[0]
    assert "approximate" not in ax.get_title()


def test_1d_shades_and_explains_where_the_loss_is_not_finite(tmp_path):
    alphas = np.linspace(-0.5, 1.5, 21)  # step 0.1
    path = tmp_path / "interpolation.h5"
    with h5py.File(path, "w") as h5:
        h5["alphas"] = alphas
        loss = 0.5 + (alphas - 0.5) ** 2
        loss[17:] = np.nan  # α = 1.2 .. 1.5 diverged
        h5["train_loss"] = loss
        h5["train_acc"] = np.where(np.isnan(loss), 10.0, 90.0)
        h5["done"] = np.ones(21, bool)
        h5.attrs.update(ATTRS, command="interpolate")
    ax = surface_plot.figure_1d(load_surface(path), PlotOptions()).axes[0]
    (span,) = [p for p in ax.patches if p.get_label().startswith("loss not finite")]
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((1.15, 1.55))
    assert span.get_label() == "loss not finite (overflow or NaN): 4 of 21 points"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert span.get_label() in legend
    # θA and θB are ticks on a top axis, clear of the curves
    top = [c for c in ax.child_axes if hasattr(c, "get_xticklabels")]
    assert [t.get_text() for t in top[0].get_xticklabels()] == ["θA", "θB"]


def test_1d_error_bars_become_a_band_when_they_would_merge(tmp_path):
    x = np.linspace(-1, 1, 201)
    path = write_llv_surface(tmp_path / "line.h5", x=x, y=None, train_loss_se=np.full(201, 0.05))
    ax = surface_plot.figure_1d(load_surface(path), PlotOptions()).axes[0]
    assert not ax.containers  # no error bars
    (band,) = [c for c in ax.collections if c.get_label() == "training loss: ± s.e."]
    assert band.get_paths()[0].vertices[:, 1].max() == pytest.approx(
        float(np.max(0.2 + x**2)) + 0.05)


# ------------------------------------------------------------------------------ the API


def test_draw_puts_each_kind_on_given_axes(basin_file, tmp_path):
    from llv.plot._figure import new_figure

    surface = load_surface(basin_file)
    figure = new_figure(12, 4)
    left, right = figure.subplots(1, 2)
    assert draw("contourf", surface, ax=left, vmax=10) is left
    assert draw("heatmap", surface, ax=right, log=False) is right
    assert isinstance([c for c in contour_sets(left) if c.filled][0].norm, LogNorm)
    ax3d = draw("surface3d", surface, vmax=5)
    assert ax3d.name == "3d"
    panels = draw("compare", [surface, surface])
    assert len(panels) == 2
    line = load_surface(write_llv_surface(tmp_path / "line.h5", y=None))
    assert draw("1d", line).get_xlabel() == "α"
    from llv.console import LlvError

    with pytest.raises(LlvError, match="3-D axes"):
        draw("surface3d", surface, ax=left)
    with pytest.raises(LlvError, match="unknown figure kind"):
        draw("vtk", surface)
