"""The command line as a user meets it: help, --cfg, one-line errors with exit status 2."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def llv(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llv", *args], capture_output=True, text=True, cwd=cwd)


def test_importing_the_cli_leaves_heavy_modules_out():
    code = "import sys, llv.cli; print(sorted(m for m in ('torch', 'matplotlib', 'h5py') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_subcommand_and_every_group_option():
    top = llv("--help")
    for command in ("train", "direction", "surface", "interpolate", "hessian", "trajectory", "plot"):
        assert command in top.stdout
    surface = llv("surface", "--help").stdout
    for needle in ("model:", "resnet56_noshort", "dataset:", "digits", "norm:", "dfilter", "grid:", "51x51", "dist:"):
        assert needle in surface


def test_cfg_prints_the_composed_config():
    result = llv("surface", "--cfg", "grid=51x51", "norm=filter")
    assert result.returncode == 0
    assert "x: '-1:1:51'" in result.stdout and "norm: filter" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["surface", "model=nope"], "valid options: custom"),
        (["surface", "nokey=1"], "unknown config key 'nokey'"),
        (["surface", "grid.x=a:b:c"], "bad grid spec"),
        (["hessian", "grid=5x5"], "unknown grid"),
        (["plot", "nonsense", "x.h5"], "unknown plot kind"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_traceback(args, needle):
    result = llv(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_wheel_ships_the_config_files(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("llv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needle in ("llv/conf/surface.yaml", "llv/conf/model/resnet56.yaml", "llv/conf/grid/51x51.yaml",
                   "llv/conf/dataset/digits.yaml", "llv/conf/norm/filter.yaml", "llv/conf/dist/mpi.yaml"):
        assert needle in names


def test_top_level_help_offers_version_and_completion():
    text = llv("--help").stdout
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in text


def test_plot_kinds_complete():
    import os

    env = {**os.environ, "_LLV_COMPLETE": "complete_bash", "COMP_WORDS": "llv plot co", "COMP_CWORD": "2"}
    result = subprocess.run([sys.executable, "-m", "llv"], capture_output=True, text=True, env=env)
    assert result.stdout.split() == ["contour", "contourf", "compare"]


@pytest.mark.parametrize(("flags", "expected"), [
    ([], {"log": None}),  # automatic, as the end-of-run figure
    (["--log"], {"log": True}),
    (["--linear"], {"log": False}),
    (["--metric", "test_loss", "--plotly", "inline", "--format", "html"],
     {"log": None, "metric": "test_loss", "plotly": "inline", "fmt": "html"}),
])
def test_plot_options_reach_make_plot(monkeypatch, flags, expected):
    import llv.plot
    from llv import cli

    calls = []
    monkeypatch.setattr(llv.plot, "make_plot", lambda kind, files, **kw: calls.append((kind, files, kw)))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["plot", "contour", "a.h5", *flags])
    assert exit_info.value.code == 0
    ((kind, files, kwargs),) = calls
    assert (kind, files) == ("contour", ["a.h5"])
    assert {k: kwargs[k] for k in expected} == expected
