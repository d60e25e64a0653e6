"""The ``llv`` command line: parse, compose the config, dispatch to one task. No torch here.

Each compute subcommand takes Hydra overrides (``key=value``, ``group=option``) and calls
``llv.tasks.<command>.run(cfg)``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import typer

from llv import config
from llv.console import LlvError, configure, error_line, is_verbose

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="llv: loss-landscape visualizer for PyTorch (Li et al., NeurIPS 2018).",
)

_SUMMARIES = {
    "train": "Train a model, keeping a checkpoint per epoch.",
    "direction": "Make (and save) plot directions.",
    "surface": "1D/2D loss and accuracy surface around a checkpoint.",
    "interpolate": "Loss along (1-a)·θA + a·θB between two checkpoints.",
    "hessian": "Hessian eigenvalues, trace and density at a point, or |λmin/λmax| over a grid.",
    "trajectory": "PCA of a training run's path, the projected path and the surface around it.",
}


def _groups_help(command: str) -> str:
    groups = "\n".join(
        f"  {group}: {', '.join(config.group_options(group)) or '(none yet)'}"
        for group in config.command_groups(command)
    )
    return (
        f"{_SUMMARIES[command]}\n\n"
        "\b\nOverrides are key=value or group=option. Config groups:\n" + groups + "\n\n"
        "\b\nGrid specs: grid.x=min:max:num grid.y=min:max:num (grid.y=null for 1D).\n"
        "--cfg prints the composed config and exits."
    )


@contextlib.contextmanager
def user_errors():
    """User errors become one line and exit 2; anything else one line and exit 1 (``-v``: traceback)."""
    try:
        yield
    except LlvError as exc:
        error_line(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        error_line("interrupted; results computed so far are saved")
        raise typer.Exit(130) from None
    except Exception as exc:
        if is_verbose():
            raise
        error_line(f"{type(exc).__name__}: {exc} (run with -v for the traceback)")
        raise typer.Exit(1) from None


def run_command(command: str, overrides: list[str], print_cfg: bool = False) -> object:
    """Compose ``command``'s config and run its task (errors as :func:`user_errors` says)."""
    with user_errors():
        cfg = config.compose(command, overrides)
        if print_cfg:
            typer.echo(config.to_yaml(cfg), nl=False)
            return None
        task = importlib.import_module(f"llv.tasks.{command}")
        return task.run(cfg)


def _make_command(command: str):
    def handler(
        overrides: list[str] = typer.Argument(None, help="Hydra overrides: key=value, group=option."),
        cfg: bool = typer.Option(False, "--cfg", help="Print the composed config and exit."),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and tracebacks."),
    ) -> None:
        configure(quiet=quiet or None, verbose=verbose or None)
        run_command(command, overrides or [], print_cfg=cfg)

    handler.__name__ = command
    handler.__doc__ = _groups_help(command)
    return handler


for _command in config.COMMANDS:
    app.command(name=_command, help=_groups_help(_command))(_make_command(_command))


PLOT_KINDS = ("1d", "contour", "contourf", "heatmap", "surface3d", "vtk", "trajectory", "hessian",
              "spectrum", "weights", "compare", "sharpness")


@app.command(help="Draw a figure from stored results: llv plot KIND FILE... (kinds: " + ", ".join(PLOT_KINDS) + ").")
def plot(
    kind: str = typer.Argument(..., help="Figure kind: " + ", ".join(PLOT_KINDS)),
    files: list[str] = typer.Argument(..., help="Result files (or train run directories for 'weights')."),
    vmin: float = typer.Option(None, "--vmin", help="Lowest contour level / colour."),
    vmax: float = typer.Option(None, "--vmax", help="Highest contour level / colour."),
    vlevel: float = typer.Option(None, "--vlevel", help="Spacing of contour levels."),
    log: bool = typer.Option(False, "--log", help="Logarithmic loss axis / colour scale."),
    out: str = typer.Option(None, "--out", help="Output file (default: next to the first input)."),
    fmt: str = typer.Option("png", "--format", help="png | pdf | svg | html"),
    quiet: bool = typer.Option(False, "-q", "--quiet"),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    configure(quiet=quiet or None, verbose=verbose or None)
    with user_errors():
        if kind not in PLOT_KINDS:
            raise LlvError(f"unknown plot kind '{kind}'; valid: {', '.join(PLOT_KINDS)}")
        if fmt not in ("png", "pdf", "svg", "html"):
            raise LlvError(f"unknown format '{fmt}'; valid: png, pdf, svg, html")
        from llv.plot import make_plot

        make_plot(kind, files, vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, out=out, fmt=fmt)


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and tracebacks."),
) -> None:
    configure(quiet=quiet, verbose=verbose)


def main() -> None:
    """Console-script entry point."""
    # OpenMP threads that spin while waiting make torch many times slower on a shared machine
    # (measured 7-15x on 2 loaded cores); sleeping waiters cost little when cores are idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app(prog_name="llv")


if __name__ == "__main__":
    main()
    sys.exit(0)
