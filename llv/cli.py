"""The ``llv`` command line: parse, compose the config, dispatch to one task. No torch here.

Each compute subcommand takes Hydra overrides (``key=value``, ``group=option``) and calls
``llv.tasks.<command>.run(cfg)``. The Hydra app conventions work as in any ``@hydra.main`` app:
``--cfg job|hydra|all``, ``--resolve``, ``--info``, ``-cd/--config-dir`` and ``-m/--multirun``
sweeps, which run through Hydra's own sweeper and launcher (docs/sweeps.md).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.core import TyperCommand

from llv import config
from llv.console import LlvError, configure, error_line, is_verbose, link_latest, log, print_table

app = typer.Typer(
    add_completion=True,
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

CFG_PARTS = ("job", "hydra", "all")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _groups_help(command: str) -> str:
    groups = "\n".join(
        f"  {group}: {', '.join(config.group_options(group)) or '(none yet)'}"
        for group in config.command_groups(command)
    )
    return (
        f"{_SUMMARIES[command]}\n\n"
        "\b\nOverrides are key=value or group=option. Config groups:\n" + groups + "\n\n"
        "\b\nGrid specs: grid.x=min:max:num grid.y=min:max:num (grid.y=null for 1D);\n"
        "grid.x=auto or auto:num: the range where the loss first doubles (grid.auto_*; surface, hessian).\n"
        f"Sweeps: llv {command} -m key=a,b,c (docs/sweeps.md). Every config key is listed below."
    )


# ------------------------------------------------------------------------- --version (no torch)


def version_text() -> str:
    """llv's version, torch's, and whether CUDA is usable: read from package metadata and the CUDA
    driver, without importing torch (``llv --version`` answers at once)."""
    from importlib import metadata

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    lines = [f"llv {installed('llv') or 'unknown (not installed)'}"]
    torch_version = installed("torch")
    if torch_version is None:
        return "\n".join(lines + ["torch not installed"])
    build = _torch_cuda_build()
    lines.append(f"torch {torch_version} ({'CUDA ' + build if build else 'CPU-only'} build)")
    devices = _cuda_device_count() if build else 0
    if devices:
        lines.append(f"CUDA available: yes, {devices} device(s), CUDA {build}")
    else:
        why = "torch has no CUDA" if not build else "no usable GPU or driver"
        lines.append(f"CUDA available: no ({why})")
    return "\n".join(lines)


def _torch_cuda_build() -> str | None:
    """The CUDA version torch was built with, from ``torch/version.py`` (not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
    except OSError:
        return None
    found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, flags=re.M)
    return found.group(1) if found else None


def _cuda_device_count() -> int:
    """GPUs the CUDA driver offers this process (CUDA_VISIBLE_DEVICES applies), as torch sees them."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(0)


# ------------------------------------------------------------ config keys: --help and completion


def _conf_files(command: str) -> list[tuple[Path, str]]:
    """``(file, package)`` of the config files a command composes by default, in order."""
    from omegaconf import OmegaConf

    root, files, seen = config.conf_dir(), [], set()

    def visit(path: Path, package: str) -> None:
        if path in seen or not path.is_file():
            return
        seen.add(path)
        first = path.read_text().splitlines()[:3]
        declared = [line.split("@package", 1)[1].strip() for line in first if "@package" in line]
        if declared:
            package = "" if declared[0] == "_global_" else declared[0]
        files.append((path, package))
        for entry in OmegaConf.load(path).get("defaults", []) or []:
            if isinstance(entry, str) and entry != "_self_":
                visit(root / f"{entry}.yaml", package)
            elif not isinstance(entry, str):
                for group, option in dict(entry).items():
                    if option is not None and "/" not in str(group):
                        visit(root / str(group) / f"{option}.yaml", str(group))

    visit(root / f"{command}.yaml", "")
    return files


_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*?)(?:\s+#\s?(?P<doc>.*))?$")


def _yaml_docs(path: Path, package: str) -> dict[str, str]:
    """``dotted.key -> comment`` of one config file (the ``# ...`` after each key)."""
    docs, stack = {}, []  # stack of (indent, key)
    in_defaults = False
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        found = _KEY_LINE.match(line)
        if not found:
            continue
        indent = len(found["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if indent == 0:
            in_defaults = found["key"] == "defaults"
        if in_defaults:
            continue
        stack.append((indent, found["key"]))
        key = ".".join(([package] if package else []) + [k for _, k in stack])
        if found["doc"] and key not in docs:
            docs[key] = found["doc"].strip()
    return docs


def _schema_docs(command: str) -> dict[str, str]:
    """Docs from ``llv.schema.describe(command)`` where it exists (key -> doc, or rows)."""
    try:
        from llv import schema

        describe = getattr(schema, "describe", None)
        described = describe(command) if describe is not None else None
    except Exception:  # the schema is optional here: the config files' comments remain
        return {}
    if not described:
        return {}
    items = described.items() if hasattr(described, "items") else [
        (row[0], row[-1]) if isinstance(row, (tuple, list)) else
        (getattr(row, "key", getattr(row, "name", None)), row) for row in described]
    docs = {}
    for key, value in items:
        doc = value
        if not isinstance(value, str):
            doc = (getattr(value, "doc", None) or getattr(value, "help", None)
                   or (value.get("doc") if isinstance(value, dict) else None)
                   or (value[-1] if isinstance(value, (tuple, list)) and value else None))
        if key and isinstance(doc, str) and doc.strip():
            docs[str(key)] = " ".join(doc.split())
    return docs


def config_keys(command: str, composed: bool = True) -> list[tuple[str, str, str]]:
    """Every config key of ``command`` as ``(dotted key, default, one line of doc)``.

    Defaults come from the composed config (``composed=False``: the raw values in the files,
    much faster, for completion); docs from ``llv.schema.describe`` where it has them, else
    the comment after the key in ``conf/``.
    """
    from omegaconf import OmegaConf

    files = _conf_files(command)
    docs: dict[str, str] = {}
    for path, package in files:
        for key, doc in _yaml_docs(path, package).items():
            docs.setdefault(key, doc)
    docs.update(_schema_docs(command))
    if composed:
        cfg = config.compose(command, [])
    else:
        cfg = OmegaConf.create()
        for path, package in reversed(files):
            node = OmegaConf.load(path)
            if "defaults" in node:
                node.pop("defaults")
            for part in reversed(package.split(".") if package else []):
                node = OmegaConf.create({part: node})
            cfg = OmegaConf.merge(node, cfg)
    rows = []

    def walk(node, prefix: str) -> None:
        for key in node.keys():
            dotted = f"{prefix}{key}"
            value = node._get_node(key)
            if OmegaConf.is_dict(value) and len(value):
                walk(value, dotted + ".")
                continue
            text = _value_text(value)
            rows.append((dotted, text, docs.get(dotted, "")))

    walk(cfg, "")
    return [row for row in rows if row[0] != "command"]  # fixed by the subcommand itself


def _value_text(node) -> str:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        return OmegaConf.to_yaml(node).strip().replace("\n", " ") if len(node) else "[]"
    value = node._value() if hasattr(node, "_value") else node
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


class _ComputeCommand(TyperCommand):
    """A compute subcommand whose ``--help`` ends with every config key, its default and its doc
    (composed only when help is asked for, so ``llv --help`` stays instant)."""

    def format_epilog(self, ctx, formatter) -> None:
        try:
            rows = config_keys(self.name)
        except Exception as exc:  # help must not fail: say why the list is missing
            formatter.write_paragraph()
            formatter.write_text(f"(config keys unavailable: {' '.join(str(exc).split())})")
            return
        with formatter.section("Config keys (key = default: doc)"):
            formatter.write_dl([(f"{key} = {default}", doc) for key, default, doc in rows])
        super().format_epilog(ctx, formatter)


def _completions(command: str, args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """Completions of one override: ``group=`` and ``key=`` names, then a group's options."""
    groups = config.command_groups(command)
    if incomplete.endswith("=") or "=" in incomplete or (args and args[-1] == "="):
        # bash splits 'model=res' into 'model', '=', 'res' (COMP_WORDBREAKS); other shells don't
        if "=" in incomplete:
            key, _, start = incomplete.partition("=")
            prefix = f"{key}="
        else:
            key, start, prefix = args[-2] if len(args) > 1 else "", incomplete, ""
        key = key.lstrip("+~")
        if key in groups:
            return [(f"{prefix}{option}", key) for option in config.group_options(key)
                    if option.startswith(start)]
        return []
    items = [(f"{group}=", "config group: " + ", ".join(config.group_options(group)[:6]))
             for group in groups]
    try:
        items += [(f"{key}=", doc or f"default {default}")
                  for key, default, doc in config_keys(command, composed=False) if key != "command"]
    except Exception:  # completion never raises; groups alone still help
        pass
    return [(name, doc) for name, doc in items if name.startswith(incomplete)]


# ---------------------------------------------------------------------------------- running


@contextlib.contextmanager
def user_errors():
    """User errors become one line and exit 2; a stop (Ctrl-C 130, SIGTERM 143, SIGHUP 129) one
    line; anything else is a bug: one line that says so and exit 1 (``-v``: the traceback)."""
    from llv.runlock import exit_code, signal_name

    try:
        yield
    except LlvError as exc:
        error_line(str(exc))
        raise typer.Exit(2) from None
    except KeyboardInterrupt as exc:
        saved = getattr(exc, "llv_saved", True)  # set where a run knows (session.report_stop)
        error_line(f"stopped by {signal_name(exc)}; " + ("results computed so far are saved" if saved
                                                          else "nothing was computed yet, nothing is lost"))
        raise typer.Exit(exit_code(exc)) from None
    except Exception as exc:
        if is_verbose():
            raise
        error_line(f"internal error (a bug in llv, please report it): {type(exc).__name__}: {exc} "
                   "(run with -v for the traceback)")
        raise typer.Exit(1) from None


def run_task(command: str, overrides: list[str]) -> object:
    """Compose ``command``'s config, run its task, and on success point ``latest`` at the run."""
    cfg = config.compose(command, overrides)
    result = load_task(command).run(cfg)
    mark_success(cfg, result)
    return result


def load_task(command: str):
    """The module whose ``run(cfg)`` does ``command`` (``llv.tasks.<command>``)."""
    return importlib.import_module(f"llv.tasks.{command}")


def mark_success(cfg, result) -> Path | None:
    """Called once a run has succeeded: ``<outputs>/<command>/latest`` -> its run directory, where
    that directory lies directly inside ``<outputs>/<command>/`` (see :func:`llv.console.link_latest`)."""
    if result is None:
        return None
    path = Path(str(result))
    run_dir = path if path.is_dir() else path.parent
    return link_latest(run_dir, str(cfg.get("outputs") or "outputs"), str(cfg.command))


def run_command(command: str, overrides: list[str], print_cfg: bool = False) -> object:
    """Compose ``command``'s config and run its task (errors as :func:`user_errors` says)."""
    with user_errors():
        if print_cfg:
            typer.echo(config.to_yaml(config.compose(command, overrides)), nl=False)
            return None
        return run_task(command, overrides)


# Hydra keys llv honours; every other ``hydra.*`` override is refused (never silently ignored).
_HYDRA_RUN_DIR = "hydra.run.dir"
_HYDRA_SWEEP_KEYS = ("hydra.sweep.dir", "hydra.sweep.subdir")
_HYDRA_SWEEP_GROUPS = ("hydra/launcher", "hydra/sweeper", "hydra.launcher", "hydra.sweeper")


def _parse(overrides: list[str], config_loader=None):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parser = OverridesParser.create(config_loader=config_loader)
        return parser.parse_overrides(config._prepare_overrides(overrides))
    except Exception as exc:
        raise LlvError(" ".join(str(exc).split())) from None


def split_overrides(command: str, overrides: list[str], multirun: bool) -> tuple[list[str], list[str]]:
    """``(llv overrides, hydra overrides)``; ``hydra.run.dir=D`` becomes ``out=D``.

    Raises a one-line LlvError for a sweep without ``-m``, ``hydra.job.chdir`` (llv never
    changes directory: relative paths in overrides stay relative to where you are) and any
    ``hydra.*`` key llv does not use.
    """
    ours, hydra = [], []
    for original, parsed in zip(overrides, _parse(overrides)):
        key = parsed.key_or_group.lstrip("+~")
        if not parsed.is_hydra_override():
            if parsed.is_sweep_override() and not multirun:
                raise LlvError(f"'{original}' is a sweep (one run per value): add -m/--multirun, "
                               f"e.g. llv {command} -m {original}")
            ours.append(original)
        elif key == _HYDRA_RUN_DIR:
            if multirun:
                raise LlvError("hydra.run.dir names one run; a sweep (-m) takes hydra.sweep.dir=DIR")
            ours.append(f"out={parsed.value()}")
        elif key == "hydra.job.chdir":
            if str(parsed.value()).lower() != "false":  # false is what llv does anyway
                raise LlvError("hydra.job.chdir=true is not supported: llv never changes directory; "
                               "its run directory is out=DIR (or hydra.run.dir=DIR)")
        elif key in _HYDRA_SWEEP_KEYS or key.startswith(_HYDRA_SWEEP_GROUPS):
            if not multirun:
                raise LlvError(f"'{original}' configures sweeps: add -m/--multirun")
            hydra.append(original)
        else:
            raise LlvError(f"'{original}': llv honours hydra.run.dir, hydra.sweep.dir, "
                           "hydra.sweep.subdir, hydra/launcher and hydra.launcher.* only")
    return ours, hydra


def _search_path(config_dir: str | None) -> list[str]:
    if config_dir is None:
        return []
    folder = Path(config_dir).expanduser().resolve()
    if not folder.is_dir():
        raise LlvError(f"--config-dir {config_dir}: no such directory")
    return [f"hydra.searchpath=[file://{folder}]"]


def _hydra_app(command: str):
    """Hydra's own app object over llv's config tree (what ``@hydra.main`` would build)."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    version.setbase("1.3")  # no change of directory at job time, whatever else composed before
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(command, create_config_search_path(f"file://{config.conf_dir()}"))


def _hydra_dirs(command: str, job, hydra_overrides: list[str]) -> list[str]:
    """llv's run and sweep directories in Hydra's terms (where the user did not set them):
    ``hydra.run.dir`` = ``out`` or ``<outputs>/<command>/<stamp>``, ``hydra.sweep.dir`` =
    ``<outputs>/<command>/multirun/<stamp>``."""
    base = f"{job.get('outputs') or 'outputs'}/{command}"
    given = {o.partition("=")[0] for o in hydra_overrides}
    dirs = [f"hydra.run.dir={job.out if job.get('out') else base + '/${now:%Y-%m-%d_%H-%M-%S}'}"]
    if "hydra.sweep.dir" not in given:
        dirs.append(f"hydra.sweep.dir={base}/multirun/${{now:%Y-%m-%d_%H-%M-%S}}")
    return dirs


def print_config(command: str, overrides: list[str], part: str, resolve: bool = False,
                 hydra_overrides: list[str] | None = None, multirun: bool = False) -> str:
    """The text ``--cfg job|hydra|all`` prints; llv's job config is always resolved.

    With ``-m`` the job part is the sweep's first job, and the hydra part is composed as for a
    sweep (``hydra/launcher=...`` and ``hydra.launcher.*`` show there).
    """
    from omegaconf import OmegaConf, open_dict

    if part not in CFG_PARTS:
        raise LlvError(f"--cfg takes {', '.join(CFG_PARTS)}, not '{part}'")
    hydra_overrides = list(hydra_overrides or [])
    search = [o for o in overrides if o.startswith("hydra.searchpath=")]
    first = (expand_sweep(overrides, command)[0] + search) if multirun else overrides
    job = config.compose(command, first)
    if part == "job":
        return config.to_yaml(job)
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    hydra = _hydra_app(command)
    try:
        full = hydra.compose_config(
            command, config._prepare_overrides(first) + hydra_overrides + _hydra_dirs(command, job, hydra_overrides),
            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN, with_log_configuration=False)
    except Exception as exc:
        raise LlvError(" ".join(str(exc).split())) from None
    finally:
        GlobalHydra.instance().clear()
    node = hydra.get_sanitized_hydra_cfg(full)
    if resolve:
        with open_dict(node):
            node.hydra.job.num, node.hydra.job.id = 0, "0"
            node.hydra.runtime.output_dir = str(job.get("out") or "")
        try:
            OmegaConf.resolve(node)
        except Exception as exc:
            raise LlvError(f"the hydra config does not resolve: {' '.join(str(exc).split())}") from None
    text = OmegaConf.to_yaml(node)
    return text if part == "hydra" else config.to_yaml(job) + text


def show_info(command: str, overrides: list[str], topic: str) -> None:
    """``--info``: Hydra's report of the search path, defaults tree, config and plugins."""
    if topic not in INFO_TOPICS:
        raise LlvError(f"--info takes {', '.join(INFO_TOPICS)}, not '{topic}'")
    config.compose(command, overrides)  # llv's checks first: one line for a bad override
    hydra = _hydra_app(command)
    try:
        hydra.show_info(topic, command, config._prepare_overrides(overrides))
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()


# ------------------------------------------------------------------------------------ sweeps


class SweepJob:
    """The task function Hydra's launcher calls once per job (picklable, for remote launchers).

    It composes the job's overrides through :func:`llv.config.compose` (llv's own checks), with
    ``out=`` the job directory Hydra chose (``hydra.sweep.dir/hydra.sweep.subdir``), and runs
    the command's task. A failure is returned, not raised, so that one failed job neither hides
    the others' results nor stops Hydra's sweeper: ``{"result": path}`` or ``{"error": line}``.
    """

    def __init__(self, command: str, quiet: bool = False, verbose: bool = False):
        self.command, self.quiet, self.verbose = command, quiet, verbose

    def __call__(self, cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig

        configure(quiet=self.quiet or None, verbose=self.verbose or None)
        job = HydraConfig.get()
        overrides = list(job.overrides.task)
        overrides += [o for o in job.overrides.hydra if o.startswith("hydra.searchpath=")]
        overrides.append(f"out={job.runtime.output_dir}")
        try:
            result = run_task(self.command, overrides)
        except LlvError as exc:
            return {"error": " ".join(str(exc).split())}
        except Exception as exc:
            if self.verbose:
                import traceback

                traceback.print_exc()
            return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
        return {"result": str(result) if result is not None else ""}


def expand_sweep(overrides: list[str], command: str = "surface") -> list[list[str]]:
    """The jobs of a basic sweep, as Hydra's BasicSweeper makes them: the cartesian product of
    every ``a,b,c`` / ``range()`` / ``choice()`` value (``glob()`` over ``command``'s group
    options), in Hydra's order.

    >>> expand_sweep(["direction.seed=0,1", "norm=filter,layer"])
    [['direction.seed=0', 'norm=filter'], ['direction.seed=0', 'norm=layer'], ['direction.seed=1', 'norm=filter'], ['direction.seed=1', 'norm=layer']]
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra

    loader = _hydra_app(command).config_loader
    try:
        parsed = [p for p in _parse(overrides, loader) if not p.is_hydra_override()]
        (jobs,) = BasicSweeper.split_arguments(parsed, None) or [[[]]]
    except LlvError:
        raise
    except Exception as exc:
        raise LlvError(" ".join(str(exc).split())) from None
    finally:
        GlobalHydra.instance().clear()
    return [list(job) for job in jobs]


def sweep_dir_default(outputs: str, command: str) -> str:
    """``<outputs>/<command>/multirun/<YYYY-MM-DD_HH-MM-SS>``."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return str(Path(outputs) / command / "multirun" / stamp)


def run_sweep(command: str, overrides: list[str], hydra_overrides: list[str], quiet: bool = False,
              verbose: bool = False) -> Path:
    """``-m``: run one job per combination through Hydra's sweeper and launcher (basic: one after
    another in this process; ``hydra/launcher=submitit_slurm``: a SLURM job array), then write
    and print the sweep summary (``sweep.csv`` in the sweep directory). Returns the sweep dir."""
    if any(o.lstrip("+").startswith("out=") for o in overrides):
        raise LlvError("out= names one run directory; a sweep (-m) writes one per job under "
                       "hydra.sweep.dir=DIR")
    basic = not any(o.startswith(("hydra/sweeper", "hydra.sweeper")) for o in hydra_overrides)
    jobs = expand_sweep(overrides, command) if basic else []
    search = [o for o in overrides if o.startswith("hydra.searchpath=")]
    for job in jobs:  # every job's config is checked before the first one runs
        config.compose(command, job + search)
    first = config.compose(command, (jobs[0] if jobs else []) + search)
    sweep_dir = next((o.partition("=")[2] for o in hydra_overrides if o.startswith("hydra.sweep.dir=")), None)
    extra = ["hydra.job.chdir=false", "hydra/job_logging=none"]
    if quiet:  # 'none', not Hydra's 'disabled', which would disable every other logger too
        extra.append("hydra/hydra_logging=none")
    if sweep_dir is None:
        sweep_dir = sweep_dir_default(str(first.get("outputs") or "outputs"), command)
        extra.append(f"hydra.sweep.dir={sweep_dir}")
    hydra = _hydra_app(command)
    try:
        returns = hydra.multirun(config_name=command, task_function=SweepJob(command, quiet, verbose),
                                 overrides=config._prepare_overrides(overrides) + hydra_overrides + extra)
    except LlvError:
        raise
    except Exception as exc:  # a launcher plugin that is missing or misconfigured
        raise LlvError(f"the sweep failed in Hydra: {' '.join(str(exc).split())}") from None
    finally:
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
    flat = [r for batch in (returns or []) for r in batch]
    report_sweep(Path(sweep_dir), flat)
    return Path(sweep_dir)


_POINT_FIGURES = ("lambda_", "trace", "sharpness", "ratio")


def job_summary(result: str | None) -> dict[str, float]:
    """The key numbers of one job's result: a result file's ``summary_*`` attrs (a Hessian point
    file, which has none, gives its eigenvalue, trace and sharpness attrs); a train run directory
    the last row of its ``metrics.csv`` as ``final_*``. Numbers only; nothing for a missing file."""
    if not result:
        return {}
    path = Path(result)
    if path.is_dir():
        return _final_metrics(path / "metrics.csv")
    if path.suffix != ".h5" or not path.is_file():
        return {}
    import h5py
    import numpy as np

    numbers = {}
    with h5py.File(path, "r") as handle:
        for name, value in handle.attrs.items():
            if np.ndim(value) != 0 or isinstance(value, (str, bytes)):
                continue
            try:
                numbers[name] = float(value)
            except (TypeError, ValueError):
                continue
    summary = {k[len("summary_"):]: v for k, v in numbers.items() if k.startswith("summary_")}
    return summary or {k: v for k, v in numbers.items() if k.startswith(_POINT_FIGURES)}


def _final_metrics(path: Path) -> dict[str, float]:
    import csv

    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for key, value in (rows[-1] if rows else {}).items():
        try:
            out[f"final_{key}"] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path) if path else ""
    except ValueError:  # another drive
        return path


_KEY_SUMMARIES = ("centre_loss", "centre_acc", "min_loss", "curvature_x", "flatness_radius_x",
                  "lambda_max", "lambda_min", "trace", "final_train_loss", "final_test_loss",
                  "final_test_acc")


def report_sweep(sweep_dir: Path, returns) -> list[dict]:
    """Write ``sweep.csv`` (job, status, overrides, result, every summary number) and print the
    key numbers; one error line per failed job. Raises LlvError when any job failed."""
    import csv

    from hydra.core.utils import JobStatus

    rows, failures = [], []
    for n, ret in enumerate(returns):
        num = ret.hydra_cfg.hydra.job.num if ret.hydra_cfg is not None else n
        overrides = " ".join(o for o in ret.overrides if not o.startswith("hydra."))
        value = ret._return_value if ret.status == JobStatus.COMPLETED else {"error": str(ret._return_value)}
        if isinstance(value, dict) and "error" not in value:
            result = value.get("result") or ""
            rows.append({"job": num, "status": "ok", "overrides": overrides, "result": result,
                         **job_summary(result)})
        else:
            failures.append(f"sweep job #{num} ({overrides}) failed: {value.get('error') if isinstance(value, dict) else value}")
            rows.append({"job": num, "status": "failed", "overrides": overrides, "result": ""})
    columns = list(dict.fromkeys(k for row in rows for k in row))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / "sweep.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    def rank(column: str) -> int:
        ends = [i for i, key in enumerate(_KEY_SUMMARIES) if column == key or column.endswith("_" + key)]
        return ends[0] if ends else len(_KEY_SUMMARIES)

    numbers = sorted(columns[4:], key=rank)[:5]
    shown = ["job", "status", "overrides", "result", *numbers]
    print_table(f"sweep {sweep_dir} ({len(rows)} jobs; every number in sweep.csv)", shown,
                [[_relative(row.get(c, "")) if c == "result" else row.get(c, "") for c in shown]
                 for row in rows])
    log.info(f"wrote {sweep_dir / 'sweep.csv'}")
    for line in failures:
        error_line(line)
    if failures:
        raise LlvError(f"{len(failures)} of {len(rows)} sweep jobs failed (the others' results "
                       f"are in {sweep_dir})")
    return rows


# ------------------------------------------------------------------------------ subcommands


def _make_command(command: str):
    def complete(ctx: typer.Context, incomplete: str):
        return _completions(command, list(ctx.params.get("overrides") or []), incomplete)

    def handler(
        overrides: list[str] = typer.Argument(None, help="Hydra overrides: key=value, group=option.",
                                              autocompletion=complete, show_default=False),
        cfg: str = typer.Option(None, "--cfg", "-c", metavar="[job|hydra|all]",
                                help="Print the composed config and exit: job (default), hydra or all."),
        resolve: bool = typer.Option(False, "--resolve", help="With --cfg hydra|all: resolve "
                                     "interpolations (the job config always is)."),
        multirun: bool = typer.Option(False, "-m", "--multirun", help="Sweep: one run per "
                                      "combination of a,b,c values (docs/sweeps.md)."),
        info: str = typer.Option(None, "--info", "-i", metavar="[" + "|".join(INFO_TOPICS) + "]",
                                 help="Hydra's information: search path, defaults tree, config, plugins."),
        config_dir: str = typer.Option(None, "--config-dir", "-cd", help="Also look for config "
                                       "group options (your presets) in DIR."),
        config_name: str = typer.Option(None, "--config-name", "-cn", hidden=True),
        config_path: str = typer.Option(None, "--config-path", "-cp", hidden=True),
        quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors."),
        verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and tracebacks."),
    ) -> None:
        configure(quiet=quiet or None, verbose=verbose or None)
        overrides = list(overrides or [])
        with user_errors():
            if config_name is not None or config_path is not None:
                raise LlvError(f"-cn/--config-name and -cp/--config-path are not supported: "
                               f"'llv {command}' composes {command}.yaml; use experiment=NAME for a "
                               "preset, and --config-dir DIR for your own presets")
            if cfg is not None and cfg not in CFG_PARTS:
                raise LlvError(f"--cfg takes {', '.join(CFG_PARTS)}, not '{cfg}'")
            ours, hydra = split_overrides(command, overrides, multirun)
            ours += _search_path(config_dir)
            if cfg is not None:
                typer.echo(print_config(command, ours, cfg, resolve, hydra, multirun), nl=False)
                return
            if info is not None:
                show_info(command, ours, info)
                return
            if multirun:
                run_sweep(command, ours, hydra, quiet=quiet, verbose=verbose)
                return
            run_task(command, ours)

    handler.__name__ = command
    handler.__doc__ = _groups_help(command)
    return handler


for _command in config.COMMANDS:
    app.command(name=_command, help=_groups_help(_command), cls=_ComputeCommand)(_make_command(_command))


PLOT_KINDS = ("1d", "contour", "contourf", "heatmap", "surface3d", "vtk", "trajectory", "hessian",
              "spectrum", "weights", "compare", "sharpness")


def _complete_kind(incomplete: str) -> list[str]:
    return [kind for kind in PLOT_KINDS if kind.startswith(incomplete)]


@app.command(help="Draw a figure from stored results: llv plot KIND FILE... (kinds: " + ", ".join(PLOT_KINDS) + ").")
def plot(
    kind: str = typer.Argument(..., help="Figure kind: " + ", ".join(PLOT_KINDS),
                               autocompletion=_complete_kind),
    files: list[str] = typer.Argument(..., help="Result files (or train run directories for 'weights')."),
    vmin: float = typer.Option(None, "--vmin", help="Lowest contour level / colour."),
    vmax: float = typer.Option(None, "--vmax", help="Highest contour level / colour."),
    vlevel: float = typer.Option(None, "--vlevel", help="Spacing of contour levels."),
    log: bool = typer.Option(None, "--log/--linear", show_default=False,
                             help="Logarithmic or linear loss axis / colour scale (default: log "
                                  "where the loss spans more than two decades)."),
    smooth: bool = typer.Option(False, "--smooth", help="surface3d: upsample the grid by cubic "
                                "interpolation (labelled as interpolated)."),
    out: str = typer.Option(None, "--out", help="Output file (default: next to the first input)."),
    fmt: str = typer.Option("png", "--format", help="png | pdf | svg | html"),
    metric: str = typer.Option(None, "--metric", help="What the height/colour shows, e.g. "
                               "test_loss, train_acc (default: the first loss; vtk writes all)."),
    plotly: str = typer.Option("cdn", "--plotly", help="--format html: cdn (small file, needs "
                               "the internet) | inline (plotly.js in the page, works offline)."),
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

        extra = {}
        if metric is not None:
            extra["metric"] = metric
        if plotly != "cdn":
            extra["plotly"] = plotly
        if smooth:
            extra["smooth"] = True
        make_plot(kind, files, vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, out=out, fmt=fmt, **extra)


@app.callback()
def _main(
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging and tracebacks."),
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="llv's version, torch's, and whether CUDA is available."),
) -> None:
    configure(quiet=quiet, verbose=verbose)


# Options whose value may be left out, as in Hydra: '--cfg' means '--cfg job', '--info' '--info all'.
_OPTIONAL_VALUES = {"--cfg": ("job", CFG_PARTS), "-c": ("job", CFG_PARTS),
                    "--info": ("all", INFO_TOPICS), "-i": ("all", INFO_TOPICS)}


def hydra_style_args(args: list[str]) -> list[str]:
    """Fill in the implied value of ``--cfg`` / ``--info`` after a compute command.

    >>> hydra_style_args(["surface", "--cfg", "grid=51x51"])
    ['surface', '--cfg', 'job', 'grid=51x51']
    >>> hydra_style_args(["surface", "--cfg", "hydra", "--info"])
    ['surface', '--cfg', 'hydra', '--info', 'all']
    """
    if not args or args[0] not in config.COMMANDS:
        return list(args)
    out = [args[0]]
    for i, token in enumerate(args[1:], start=1):
        out.append(token)
        if token in _OPTIONAL_VALUES:
            implied, valid = _OPTIONAL_VALUES[token]
            following = args[i + 1] if i + 1 < len(args) else None
            if following not in valid:
                out.append(implied)
    return out


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    # OpenMP threads that spin while waiting make torch many times slower on a shared machine
    # (measured 7-15x on 2 loaded cores); sleeping waiters cost little when cores are idle.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if args is None else args)
    with _named_completion_shell(args):
        app(args=hydra_style_args(args), prog_name="llv")


_COMPLETION_FLAGS = ("--show-completion", "--install-completion")
_SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


@contextlib.contextmanager
def _named_completion_shell(args: list[str]) -> Iterator[None]:
    """``llv --install-completion bash`` uses bash, not the shell Typer detects.

    Typer's flags detect the shell from the process tree and ignore a name after them (so
    the name was dropped: zsh got installed from a zsh session, and with no shell above the
    process, e.g. under nohup or CI, it failed with "Shell  not supported"). Typer's own
    switch for naming the shell is the environment variable below; set it only when a shell
    is named.
    """
    key = "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION"
    named = any(flag in _COMPLETION_FLAGS and name in _SHELLS for flag, name in zip(args, args[1:]))
    before = os.environ.get(key)
    if named:
        os.environ[key] = "1"
    try:
        yield
    finally:
        if named and before is None:
            os.environ.pop(key, None)


if __name__ == "__main__":
    main()
    sys.exit(0)
