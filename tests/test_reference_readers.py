"""Other tools read llv's files: the reference implementation's plotting scripts (their reading
logic, re-implemented here from tomgoldstein/loss-landscape's plot_1D.py / plot_2D.py), and
xarray through HDF5 dimension scales."""

import h5py
import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import llv
from llv.storage import projection as projection_file

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402


def reference_plot_1d(surf_file):
    """plot_1D.plot_1d_loss_err: x = f['xcoordinates'], train_loss/train_acc (+ test_*)."""
    with h5py.File(surf_file, "r") as f:
        x = f["xcoordinates"][:]
        assert "train_loss" in f.keys(), "'train_loss' does not exist"
        train_loss, train_acc = f["train_loss"][:], f["train_acc"][:]
        fig, ax1 = plt.subplots()
        ax2 = ax1.twinx()
        ax1.plot(x, train_loss, "b-")
        ax2.plot(x, train_acc, "r-")
        plt.close(fig)
        return x, train_loss


def reference_plot_2d_contour(surf_file, surf_name="train_loss"):
    """plot_2D.plot_2d_contour: meshgrid(x, y) and Z = f[surf_name] drawn as is (so Z must be
    shaped (len(y), len(x)))."""
    with h5py.File(surf_file, "r") as f:
        x = np.array(f["xcoordinates"][:])
        y = np.array(f["ycoordinates"][:])
        X, Y = np.meshgrid(x, y)
        Z = np.array(f[surf_name][:])
    fig = plt.figure()
    plt.contour(X, Y, Z, levels=np.arange(0.1, 10, 0.5))
    plt.contourf(X, Y, Z, levels=np.arange(0.1, 10, 0.5))
    plt.close(fig)
    return X, Y, Z


def reference_contour_trajectory(surf_file, dir_file, proj_file, surf_name="train_loss"):
    """plot_2D.plot_contour_trajectory: the path from proj_file, the PCA ratios as a dataset of
    dir_file."""
    X, Y, Z = reference_plot_2d_contour(surf_file, surf_name)
    with h5py.File(proj_file, "r") as pf:
        path = np.array(pf["proj_xcoord"]), np.array(pf["proj_ycoord"])
    with h5py.File(dir_file, "r") as df:
        ratio = df["explained_variance_ratio_"][0], df["explained_variance_ratio_"][1]
    return path, ratio


def reference_eig_ratio(surf_file, val_1="min_eig", val_2="max_eig"):
    with h5py.File(surf_file, "r") as f:
        x, y = np.array(f["xcoordinates"][:]), np.array(f["ycoordinates"][:])
        return x, y, np.absolute(np.divide(np.array(f[val_1][:]), np.array(f[val_2][:])))


def problem(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    data = (torch.randn(40, 4), torch.randint(0, 3, (40,)))
    return model, data


def test_the_reference_reads_llv_surfaces_interpolations_and_hessian_maps(tmp_path):
    model, data = problem()
    s = llv.surface(model, data, x=(-1, 1, 5), y=(-0.5, 0.5, 3), progress=False)
    s.save(tmp_path / "surface.h5")
    X, Y, Z = reference_plot_2d_contour(tmp_path / "surface.h5")
    assert Z.shape == X.shape == (3, 5)
    np.testing.assert_array_equal(Z, s["train_loss"])
    np.testing.assert_array_equal(X[0], s.x)

    other, _ = problem(1)
    line = llv.interpolate(model, other, data, alphas=(0, 1, 5), progress=False)
    line.save(tmp_path / "interpolation.h5")
    x, loss = reference_plot_1d(tmp_path / "interpolation.h5")  # 'xcoordinates' beside 'alphas'
    np.testing.assert_array_equal(x, line.x)
    np.testing.assert_array_equal(loss, line["train_loss"])
    assert np.array_equal(llv.load(tmp_path / "interpolation.h5").x, line.x)

    hmap = llv.hessian_map(model, data, x=(-1, 1, 3), y=(-1, 1, 3), progress=False,
                           path=tmp_path / "hessian.h5")
    x, y, ratio = reference_eig_ratio(tmp_path / "hessian.h5")
    np.testing.assert_allclose(ratio, np.abs(hmap["min_eig"] / hmap["max_eig"]))


def test_the_reference_reads_llv_trajectory_files(tmp_path):
    model, data = problem()
    paths = []
    for epoch in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p) + 0.02 * epoch)
        paths.append(tmp_path / f"epoch_{epoch:03d}.pt")
        torch.save({"state_dict": model.state_dict(), "epoch": epoch}, paths[-1])
    projection, directions = llv.trajectory(paths, model)
    directions.save(tmp_path / "directions.h5")
    projection_file.write(tmp_path / "projection.h5", projection.coordinates, projection.epochs,
                          projection.lr_drop_epochs, projection.explained_variance_ratio,
                          projection.attrs["singular_values"], False, {})
    s = llv.surface(model, data, x=(-1, 1, 4), y=(-1, 1, 3), directions=directions, progress=False)
    s.save(tmp_path / "surface.h5")
    (xs, ys), ratio = reference_contour_trajectory(tmp_path / "surface.h5", tmp_path / "directions.h5",
                                                   tmp_path / "projection.h5")
    np.testing.assert_array_equal(xs, projection.x)
    assert ratio == pytest.approx(tuple(projection.explained_variance_ratio[:2]))
    back = llv.load(tmp_path / "projection.h5")
    np.testing.assert_array_equal(back.x, projection.x)


def test_xarray_labels_the_axes_through_dimension_scales(tmp_path):
    xr = pytest.importorskip("xarray", reason="xarray is in the test-extra dependencies")
    pytest.importorskip("h5netcdf", reason="h5netcdf is in the test-extra dependencies")
    model, data = problem()
    s = llv.surface(model, data, x=(-1, 1, 5), y=(-0.5, 0.5, 3), progress=False)
    s.save(tmp_path / "surface.h5")
    ds = xr.open_dataset(tmp_path / "surface.h5", engine="h5netcdf", phony_dims="sort")
    loss = ds["train_loss"]
    assert loss.dims == ("ycoordinates", "xcoordinates")
    np.testing.assert_array_equal(loss["xcoordinates"].values, s.x)
    np.testing.assert_array_equal(loss.sel(xcoordinates=0.0, ycoordinates=0.5).values,
                                  s["train_loss"][2, 2])
    line = llv.interpolate(model, problem(1)[0], data, alphas=(0, 1, 5), progress=False)
    line.save(tmp_path / "interpolation.h5")
    ds = xr.open_dataset(tmp_path / "interpolation.h5", engine="h5netcdf", phony_dims="sort")
    assert ds["train_loss"].dims == ("alphas",)
