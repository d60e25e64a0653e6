"""``llv plot`` defects found by QA: unwritable outputs, a trajectory over a foreign surface,
smoothing that invents values, colour-bar numbers drawn over each other, Hessian figures that do
not say their scale or their number of Hessian-vector products."""

from __future__ import annotations

import errno
import itertools
import os

import h5py
import numpy as np
import pytest
from matplotlib.figure import Figure

from llv import console
from llv.plot import hessian as hessian_plot
from llv.plot import surface as surface_plot
from llv.plot import trajectory as trajectory_plot
from llv.plot._figure import PlotOptions, spaced_labels
from llv.plot.io import load_hessian_point, load_projection, load_surface

ATTRS = {"llv_version": "0.1.0", "model": "resnet8", "dataset": "digits", "norm": "filter"}
X5 = np.linspace(-1.0, 1.0, 5)


def decades(x, y):
    """0.5 at the centre, 500 in the corners: three decades on a 5 x 5 grid."""
    return 0.5 * 10 ** (1.5 * (x**2 + y**2))


def write_surface(path, fn=decades, x=X5, y=X5, **attrs):
    xx, yy = np.meshgrid(x, y)
    loss = fn(xx, yy)
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"], h5["ycoordinates"] = x, y
        h5["train_loss"] = loss
        h5["train_acc"] = np.clip(100.0 - loss, 0, 100)
        h5["done"] = np.ones(loss.shape, dtype=bool)
        h5.attrs.update(ATTRS, command="surface", **attrs)
    return path


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("llv: error:")]


# ------------------------------------------------------------------- 1. unwritable outputs


@pytest.mark.parametrize("kind, name, extra", [("contour", "x.png", []), ("vtk", "x.vtp", []),
                                               ("contour", "x.html", ["--format", "html"])])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(run, tmp_path, kind, name, extra):
    source = write_surface(tmp_path / "surface.h5")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / name  # its folder cannot be made: a real OSError (ENOTDIR), even as root
    result = run("plot", kind, source, "--out", out, *extra)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "internal error" not in result.stderr
    assert f"{out}: " in line and ("Not a directory" in line or "File exists" in line)
    assert line.startswith(f"llv: error: cannot write {'VTK file' if kind == 'vtk' else ''}")
    assert "free of" in line


def test_a_full_disk_says_so_with_the_free_space(run, tmp_path, monkeypatch):
    source = write_surface(tmp_path / "surface.h5")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", full)
    out = tmp_path / "figures" / "x.png"
    result = run("plot", "contour", source, "--out", out)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert f"cannot write figure {out}: No space left on device" in line
    assert "free of" in line
    assert not out.exists() and not list(out.parent.iterdir())  # no temporary left behind


def test_read_only_folder_is_one_line_and_exit_2(run, tmp_path, monkeypatch):
    source = write_surface(tmp_path / "surface.h5")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        writable = os.access(locked, os.W_OK)  # root writes anywhere: simulate the file system
        if writable:
            def read_only(*args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))

            monkeypatch.setattr("llv.fsio._fsync_path", read_only)  # as the file is committed
        for kind, name in (("contour", "x.png"), ("vtk", "x.vtp")):
            result = run("plot", kind, source, "--out", locked / name)
            assert result.returncode == 2, result.stderr
            (line,) = error_lines(result)
            assert "cannot write" in line and str(locked / name) in line
            assert ("Read-only file system" if writable else "Permission denied") in line
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------- 2. trajectory directions


def write_directions(path, digest):
    with h5py.File(path, "w") as h5:
        h5.create_group("xdirection")["0"] = np.ones(3)
        h5.create_group("ydirection")["0"] = np.zeros(3)
        h5.attrs["kind"] = "pca"
        h5.attrs["sha256"] = digest
    return path


def write_projection(folder, surface_file="", dir_file="directions.h5"):
    path = folder / "projection.h5"
    with h5py.File(path, "w") as h5:
        h5["proj_xcoord"] = np.linspace(2.5, 0.0, 11)  # starts far outside a [-1, 1] box
        h5["proj_ycoord"] = np.linspace(-1.8, 0.0, 11)
        h5["epochs"] = np.arange(11)
        h5["lr_drop_epochs"] = np.array([5])
        h5["explained_variance_ratio_"] = np.array([0.9882, 0.01])
        h5.attrs.update(ATTRS)
        h5.attrs["surface_file"] = surface_file
        if dir_file:
            h5.attrs["dir_file"] = dir_file
    return path


PCA, RANDOM = "a" * 64, "b" * 64


def test_trajectory_refuses_a_surface_along_other_directions(run, tmp_path):
    write_directions(tmp_path / "directions.h5", PCA)
    projection = write_projection(tmp_path)
    other = write_surface(tmp_path / "random.h5", direction_sha256=RANDOM, dir_file="random_dirs.h5")
    result = run("plot", "trajectory", projection, other, "--out", tmp_path / "t.png")
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "other directions" in line and "direction_sha256" in line and "random.h5" in line
    assert not (tmp_path / "t.png").exists()
    with pytest.raises(console.LlvError, match="other directions"):
        trajectory_plot.figure_trajectory(load_projection(projection), load_surface(other),
                                          PlotOptions())


def test_trajectory_keeps_every_point_of_the_path_in_view(tmp_path):
    write_directions(tmp_path / "directions.h5", PCA)
    projection = load_projection(write_projection(tmp_path))
    surface = load_surface(write_surface(tmp_path / "surface.h5", direction_sha256=PCA))
    figure = trajectory_plot.figure_trajectory(projection, surface, PlotOptions())
    ax = figure.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 <= -1.0 and x1 >= 1.0 and y0 <= -1.0 and y1 >= 1.0  # the surface's box
    assert x0 <= projection.x.min() and x1 > projection.x.max()  # and the whole path
    assert y0 < projection.y.min() and y1 >= projection.y.max()
    assert "1st PC: 98.82 %" in ax.get_xlabel()


def test_trajectory_check_falls_back_to_the_direction_file_and_warns_when_it_cannot(
        tmp_path, caplog):
    write_directions(tmp_path / "directions.h5", PCA)
    projection = load_projection(write_projection(tmp_path))
    # no digest on the surface, but the same direction file: the same directions
    same = load_surface(write_surface(tmp_path / "same.h5", dir_file="directions.h5"))
    caplog.clear()
    trajectory_plot.figure_trajectory(projection, same, PlotOptions())
    assert "cannot check" not in caplog.text
    # nothing to compare: drawn, with a warning
    unknown = load_surface(write_surface(tmp_path / "unknown.h5"))
    trajectory_plot.figure_trajectory(projection, unknown, PlotOptions())
    assert "cannot check" in caplog.text


# ------------------------------------------------------------------- 3. smoothing


def coarse_basin(x, y):
    """A narrow basin on a coarse grid: a spline through it dips below the lowest value."""
    return np.where((np.abs(x) < 0.1) & (np.abs(y) < 0.1), 0.05, 20.0 + 30.0 * (x**2 + y**2))


@pytest.mark.parametrize("fn", [decades, coarse_basin])
@pytest.mark.parametrize("log", [True, False])
def test_smoothed_values_stay_within_the_computed_range(tmp_path, fn, log):
    surface = load_surface(write_surface(tmp_path / "s.h5", fn=fn))
    values = surface.grid("train_loss")
    assert values.max() / values.min() > 300  # spans more than two decades
    grid, fine, note = surface_plot.smoothed(surface, values, PlotOptions(smooth=True, log=log))
    assert note and fine.shape == (len(grid.y), len(grid.x))
    assert np.nanmin(fine) >= values.min() and np.nanmax(fine) <= values.max()
    # still through every grid value
    for iy, ix in itertools.product(range(5), range(5)):
        jy, jx = np.argmin(np.abs(grid.y - X5[iy])), np.argmin(np.abs(grid.x - X5[ix]))
        assert fine[jy, jx] == pytest.approx(values[iy, ix], rel=1e-9)


def test_smoothing_on_a_log_scale_interpolates_the_logarithm(tmp_path):
    # 1 .. 1000 with the median in the middle (no "walls"): only the log scale asks for log
    surface = load_surface(write_surface(tmp_path / "s.h5",
                                         fn=lambda x, y: 10.0 ** (1.5 * (x + 1)) + 0 * y))
    values = surface.grid("train_loss")
    grid, fine, _ = surface_plot.smoothed(surface, values, PlotOptions(smooth=True, log=True))
    # a straight line in log10: its bicubic interpolation is exact
    expected = 1.5 * (grid.x + 1)
    np.testing.assert_allclose(np.log10(fine), np.broadcast_to(expected, fine.shape), atol=1e-9)


# ------------------------------------------------------------------- 4. colour-bar numbers


def _numbers(bar):
    figure = bar.ax.figure
    figure.draw_without_rendering()
    renderer = figure.canvas.get_renderer()
    labels = [t for t in bar.ax.yaxis.get_majorticklabels() if t.get_visible() and t.get_text()]
    return [(t.get_text(), t.get_window_extent(renderer)) for t in labels]


@pytest.mark.parametrize("options", [
    {"vmin": 0.45, "vmax": 150.0},                 # log, just below the 0.5 level
    {"vmin": 0.45, "vmax": 150.0, "log": False},   # linear
    {"vmin": 0.46, "vmax": 499.0, "log": True},
    {"vmin": 0.95, "vmax": 10.0, "log": False},
    {"vmin": 0.5, "vmax": 101.0, "log": True},     # just above the 100 level, at the top
])
@pytest.mark.parametrize("kind", ["contour", "contourf"])
def test_colour_bar_numbers_never_overlap(tmp_path, options, kind):
    surface = load_surface(write_surface(tmp_path / "s.h5"))
    figure = surface_plot.figure_map(surface, kind, PlotOptions(**options))
    bar = figure.axes[-1]
    numbers = _numbers(bar._colorbar)
    texts = [text for text, _ in numbers]
    assert len(numbers) >= 3
    assert texts[-1] == f"{options['vmax']:g}"  # the top level always has its number
    for (a, box_a), (b, box_b) in itertools.combinations(numbers, 2):
        assert not box_a.overlaps(box_b), f"{a!r} is drawn over {b!r}: {texts}"


def test_spaced_labels_keep_the_ends_and_drop_a_crowded_level():
    levels = np.array([0.45, 0.5, 1.0, 2.0, 5.0, 10.0, 100.0, 150.0])
    positions = np.array([0.0, 0.02, 0.14, 0.26, 0.42, 0.53, 0.97, 1.0])
    assert spaced_labels(levels, positions, 0.05).tolist() == [0.45, 1.0, 2.0, 5.0, 10.0, 150.0]


@pytest.mark.parametrize("kind, vmin", [("contour", "-1"), ("contour", "0"), ("1d", "0")])
def test_a_non_positive_vmin_on_a_log_scale_is_one_line_and_exit_2(run, tmp_path, kind, vmin):
    if kind == "1d":
        source = tmp_path / "line.h5"
        with h5py.File(source, "w") as h5:
            h5["xcoordinates"] = X5
            h5["train_loss"] = decades(X5, 0.0)
            h5.attrs.update(ATTRS)
    else:
        source = write_surface(tmp_path / "s.h5")
    result = run("plot", kind, source, "--log", "--vmin", vmin, "--out", tmp_path / "x.png")
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result)
    assert "--log needs a positive --vmin" in line
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------- 5. Hessian figures


def write_hessian_grid(path, hvp=True):
    xx, yy = np.meshgrid(X5, X5)
    with h5py.File(path, "w") as h5:
        h5["xcoordinates"], h5["ycoordinates"] = X5, X5
        h5["max_eig"] = 10.0 + xx**2
        h5["min_eig"] = -0.01 * np.exp(4 * np.abs(xx * yy))
        h5["train_loss"] = 0.1 + xx**2 + yy**2
        if hvp:
            h5["num_hvp"] = np.full(xx.shape, 40.0) + (xx > 0) * 20.0
        done = np.ones(xx.shape, dtype=bool)
        done[-1, -1] = False  # one point not computed: not counted
        h5["done"] = done
        h5.attrs.update(ATTRS, command="hessian")
    return path


def test_hessian_map_says_log_scale_and_its_hessian_vector_products(tmp_path):
    surface = load_surface(write_hessian_grid(tmp_path / "hessian.h5"))
    counts = np.full((5, 5), 40.0) + (np.meshgrid(X5, X5)[0] > 0) * 20.0
    total, mean = counts.sum() - counts[-1, -1], (counts.sum() - counts[-1, -1]) / 24
    for log in (True, False):
        figure = hessian_plot.figure_hessian(surface, PlotOptions(log=log))
        ax, bar = figure.axes[0], figure.axes[-1]
        assert bar.get_ylabel() == "|λmin / λmax|" + (" (log scale)" if log else "")
        title = ax.get_title()
        assert f"{int(total):,} Hessian-vector products ({mean:.3g} per point)" in title


def test_hessian_map_without_counts_says_they_are_not_recorded(tmp_path):
    surface = load_surface(write_hessian_grid(tmp_path / "hessian.h5", hvp=False))
    figure = hessian_plot.figure_hessian(surface, PlotOptions())
    assert "Hessian-vector products not recorded" in figure.axes[0].get_title()


def test_spectrum_reports_its_hessian_vector_products(tmp_path):
    path = tmp_path / "hessian.h5"
    with h5py.File(path, "w") as h5:
        h5["eigenvalues"] = np.array([12.0, 9.5, 7.0])
        h5["density_nodes"] = np.array([[-0.5, 0.1, 3.0, 12.0], [-0.2, 0.0, 2.0, 11.9]])
        h5["density_weights"] = np.array([[0.2, 0.6, 0.15, 0.05], [0.1, 0.7, 0.15, 0.05]])
        h5.attrs.update(ATTRS, command="hessian", lambda_max=12.0, lambda_min=-0.5, trace=40.0,
                        trace_stderr=1.5, num_hvp_extremes=61, num_hvp_top_k=61,
                        shared_krylov=True, num_hvp_trace=200, num_hvp_density=96)
    title = hessian_plot.figure_spectrum(load_hessian_point(path), PlotOptions()).axes[0].get_title()
    assert "357 Hessian-vector products" in title  # top-k shares the extremes' products
    assert "trace 200" in title and "density 96" in title


def test_figures_render_to_files(run, tmp_path):
    """The fixed figures draw real files through the command line."""
    source = write_surface(tmp_path / "surface.h5")
    grid = write_hessian_grid(tmp_path / "grid.h5")
    for args in (("contour", source, "--vmin", "0.45", "--vmax", "150"),
                 ("contour", source, "--smooth", "--linear"),
                 ("hessian", grid, "--log")):
        result = run("plot", *args)
        assert result.returncode == 0, result.stderr
