"""Config composition, grid specs, run directories: what every subcommand relies on."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from llv import config
from llv.config import Axis, GridSpec, compose
from llv.console import LlvError


def _all_group_choices():
    """Every option of the groups of SPEC §2; experiment presets (each meant for some commands
    only) are composed by tests/test_presets.py."""
    for command in config.COMMANDS:
        for group in (g for g in config.command_groups(command) if g != "experiment"):
            for option in config.group_options(group):
                yield command, group, option


@pytest.mark.parametrize(("command", "group", "option"), list(_all_group_choices()))
def test_every_option_of_every_group_composes(command, group, option):
    cfg = compose(command, [f"{group}={option}"])
    assert cfg.command == command
    if group == "model":
        assert cfg.model.name == option
        assert cfg.model.in_channels == cfg.dataset.in_channels
    elif group == "dataset":
        assert cfg.dataset.name == option
    elif group == "norm":
        assert cfg.direction.norm == option
    elif group == "grid":
        assert GridSpec.from_cfg(cfg.grid).ndim in (0, 1, 2)
    elif group == "dist":
        assert cfg.dist.backend == option


def test_every_command_has_the_model_and_dataset_groups():
    for command in config.COMMANDS:
        assert {"model", "dataset"} <= set(config.command_groups(command))
    for command in ("direction", "surface", "interpolate", "hessian", "trajectory"):
        assert {"norm", "grid", "dist"} <= set(config.command_groups(command))


def test_surface_overrides_reach_the_config():
    cfg = compose("surface", ["grid=51x51", "norm=layer", "grid.x=-2:2:11"])
    assert cfg.grid.x == "-2:2:11" and cfg.grid.y == "-1:1:51"
    assert cfg.direction.norm == "layer"


def test_interpolate_defaults_follow_the_paper():
    cfg = compose("interpolate")
    assert cfg.grid.x == "-0.5:1.5:401" and cfg.grid.y is None
    assert cfg.direction.type == "states"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("model=nope", "resnet56_noshort"),
        ("dataset=imagenet", "digits"),
        ("norm=l2", "dfilter"),
        ("grid=9x9", "51x51"),
        ("dist=slurm", "mpi"),
        ("direction.nrm=1", "orthogonalize"),
        ("grid.x=1:2", "min:max:num"),
        ("grid.x=1:-1:5", "greater"),
        ("grid.y=-1:1:0", "at least 1"),
    ],
)
def test_bad_input_is_one_clear_error(override, needle):
    with pytest.raises(LlvError) as info:
        compose("surface", [override])
    assert needle in str(info.value)


def test_grid_coefficients_are_stored_row_major_with_y_slowest():
    grid = GridSpec(Axis(-1, 1, 3), Axis(0, 1, 2))
    assert grid.shape == (2, 3) and grid.num_points == 6
    coefficients = grid.coefficients()
    xs, ys = grid.x.coordinates(), grid.y.coordinates()
    for flat, (alpha, beta) in enumerate(coefficients):
        iy, ix = np.unravel_index(flat, grid.shape)
        assert (alpha, beta) == (xs[ix], ys[iy])


def test_one_dimensional_and_single_point_grids():
    assert GridSpec.from_cfg(OmegaConf.create({"x": "-1:1:51", "y": None})).shape == (51,)
    point = GridSpec.from_cfg(OmegaConf.create({"x": None, "y": None}))
    assert point.shape == () and point.num_points == 1 and point.coefficients().tolist() == [[0, 0]]


def test_run_directory_has_config_and_latest(tmp_path):
    cfg = compose("surface", [f"outputs={tmp_path}", "name=demo", "grid=11x11"])
    first = config.make_run_dir(cfg)
    second = config.make_run_dir(cfg)
    assert first != second and first.name.endswith("_demo")
    assert OmegaConf.load(second / "config.yaml").grid.x == "-1:1:11"
    assert not (tmp_path / "surface" / "latest").exists()  # only a run that succeeded moves it
    from llv.cli import mark_success

    mark_success(cfg, second / "surface.h5")
    assert (tmp_path / "surface" / "latest").resolve() == second.resolve()
    explicit = config.make_run_dir(compose("surface", [f"out={tmp_path / 'mine'}"]))
    assert explicit == tmp_path / "mine" and (explicit / "config.yaml").is_file()
