"""The surface's second-difference curvature beside dᵀHd from one Hessian-vector product."""

import h5py
import pytest
from conftest import save_tiny_checkpoint, tiny_overrides

from llv.config import compose
from llv.tasks import surface as surface_task


def attrs_of(overrides):
    with h5py.File(surface_task.run(compose("surface", overrides)), "r") as f:
        return dict(f.attrs)


def test_quadratic_loss_second_difference_equals_dthd(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="TinyLinear")
    attrs = attrs_of([*tiny_overrides(tmp_path, "TinyLinear"), f"checkpoint={checkpoint}", "loss=mse",
                      "grid=11x11", "eval.precision=fp64", "direction.ignore=none"])
    for axis in "xy":
        estimate, hvp = attrs[f"summary_train_curvature_{axis}"], attrs[f"summary_train_curvature_{axis}_hvp"]
        assert estimate == pytest.approx(hvp, rel=1e-6)
        assert attrs[f"summary_train_curvature_{axis}_reldiff"] < 1e-6
        assert attrs[f"summary_train_curvature_{axis}_error"] < 1e-6 * abs(hvp)
    assert 0 < attrs["summary_cross_check_seconds"] < 60  # what the check cost, stored with it


def test_smooth_net_agrees_within_the_discretization_error(tmp_path):
    checkpoint = save_tiny_checkpoint(tmp_path, net="TinySmoothNet")
    attrs = attrs_of([*tiny_overrides(tmp_path, "TinySmoothNet"), f"checkpoint={checkpoint}",
                      "grid.x=-0.4:0.4:9", "grid.y=-0.4:0.4:9", "eval.precision=fp64"])
    for axis in "xy":
        estimate, hvp = attrs[f"summary_train_curvature_{axis}"], attrs[f"summary_train_curvature_{axis}_hvp"]
        error = attrs[f"summary_train_curvature_{axis}_error"]
        assert abs(estimate - hvp) <= 3 * error + 1e-6 * abs(hvp)
