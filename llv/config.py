"""Configuration: Hydra composition of ``conf/``, grid specifications, run directories.

Nothing here imports torch. Every problem with the user's input becomes an
:class:`~llv.console.LlvError` with one line that names the valid choices.
"""

from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from llv.console import LlvError
from llv.grid import Axis, GridSpec  # noqa: F401  (re-exported: configs name grids)
from llv.schema import conf_dir  # noqa: F401  (one owner: the schema reads conf/ too)
from llv.schema import group_options as _schema_group_options

COMMANDS = ("train", "direction", "surface", "interpolate", "hessian", "trajectory")
GROUPS = ("model", "dataset", "norm", "grid", "dist", "experiment")


def group_options(group: str) -> list[str]:
    """The options of a config group, from the file names in ``conf/<group>/``."""
    return list(_schema_group_options(group))


def command_groups(command: str) -> list[str]:
    """The config groups a subcommand's primary config uses (from its defaults list)."""
    text = (conf_dir() / f"{command}.yaml").read_text()
    return [g for g in GROUPS if re.search(rf"^\s*-\s*{g}\s*:", text, flags=re.M)]


# Hydra's override grammar does not accept ':' in an unquoted value; grid specs are quoted here.
_GRID_VALUE = re.compile(r"^(\+{0,2}grid\.[xy])=(?!['\"])(.*:.*)$")


# Nor does it accept non-ASCII characters unquoted (a path like out=/data/résultats); such
# values are quoted too, unless they are quoted already or hold a quote of their own.
_NON_ASCII_VALUE = re.compile(r"^([+~]{0,2}[\w.@/-]+)=(?!['\"])([^'\"]*[^\x00-\x7f][^'\"]*)$")


def _prepare_overrides(overrides: list[str]) -> list[str]:
    quoted = [_GRID_VALUE.sub(r"\1='\2'", o) for o in overrides]
    return [_NON_ASCII_VALUE.sub(r"\1='\2'", o) for o in quoted]


def _search_dirs(overrides: list[str]) -> list[Path]:
    """Extra config folders from ``hydra.searchpath=[...]`` (``--config-dir``)."""
    found = []
    for override in overrides:
        if override.startswith("hydra.searchpath="):
            found += [Path(p.strip().strip("'\"").removeprefix("file://"))
                      for p in override.partition("=")[2].strip("[]").split(",") if p.strip()]
    return found


def _check_group_choices(command: str, overrides: list[str]) -> None:
    groups = command_groups(command)
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or key not in GROUPS:
            continue
        if key not in groups:
            raise LlvError(f"'llv {command}' has no config group '{key}' (its groups: {', '.join(groups)})")
        options = group_options(key) + sorted(
            p.stem for folder in _search_dirs(overrides) for p in (folder / key).glob("*.yaml"))
        if value not in options and value != "null":
            raise LlvError(f"unknown {key} '{value}'; valid options: {', '.join(options)}")


def compose(command: str, overrides: list[str] | None = None):
    """Compose the config of ``command`` from ``conf/`` with Hydra overrides; validate it.

    >>> cfg = compose("surface", ["grid=51x51", "norm=layer"])
    >>> cfg.grid.x, cfg.direction.norm
    ('-1:1:51', 'layer')
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    if command not in COMMANDS:
        raise LlvError(f"unknown command '{command}'; valid: {', '.join(COMMANDS)}")
    overrides = list(overrides or [])
    _check_group_choices(command, overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = hydra_compose(config_name=command, overrides=_prepare_overrides(overrides))
    except Exception as exc:  # Hydra raises several types; all mean bad overrides here
        raise LlvError(_hydra_message(exc, command, overrides)) from exc
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:
        raise LlvError(f"config does not resolve: {' '.join(str(exc).split())}") from exc
    if "grid" in cfg:
        GridSpec.from_cfg(cfg.grid)
    from llv.schema import validate

    validate(command, cfg, complete=True)  # a required key deleted with ~key is refused here
    _remember_given(cfg, overrides)
    return cfg


# Which keys the user's overrides set, for the config objects compose() returned last: a run
# that continues an earlier one takes every other key from it (llv.tasks.session.reconcile).
_GIVEN: list[tuple[object, frozenset[str]]] = []
_GROUP_PACKAGES = {"norm": "direction.norm"}  # groups whose options land elsewhere (@package)


def _remember_given(cfg, overrides: list[str]) -> None:
    keys = set()
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0].strip()
        keys.add(_GROUP_PACKAGES.get(key, key))
    _GIVEN.append((cfg, frozenset(keys)))
    del _GIVEN[:-32]


def given_keys(cfg) -> frozenset[str] | None:
    """The keys (``direction.seed``; a group's package such as ``model``) that the overrides set
    in this object returned by :func:`compose`; None for a config compose did not make.
    ``experiment`` stands for every key its preset sets."""
    for made, keys in reversed(_GIVEN):
        if made is cfg:
            return keys
    return None


def _hydra_message(exc: Exception, command: str, overrides: list[str]) -> str:
    text = " ".join(str(exc).split())
    unknown = re.search(r"Could not override '([^']+)'", text)
    if not unknown:
        return text
    key = unknown.group(1)
    parent, _, _ = key.rpartition(".")
    group_overrides = [o for o in overrides if o.partition("=")[0] in GROUPS]
    valid = _keys_at(command, group_overrides, parent)
    while parent and not valid:  # the parent itself is unknown: list its own parent's keys
        key, (parent, _, _) = parent, parent.rpartition(".")
        valid = _keys_at(command, group_overrides, parent)
    where = f" under '{parent}'" if parent else ""
    return f"unknown config key '{key}'; valid keys{where}: {', '.join(valid)} (prefix with + to add a new key)"


def _keys_at(command: str, group_overrides: list[str], path: str) -> list[str]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = hydra_compose(config_name=command, overrides=group_overrides)
    finally:
        GlobalHydra.instance().clear()
    node = OmegaConf.select(cfg, path, default=None) if path else cfg
    return sorted(str(k) for k in node.keys()) if OmegaConf.is_dict(node) else []


def to_yaml(cfg) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


# ------------------------------------------------------------------------------ run directories


def make_run_dir(cfg, create: bool = True) -> Path:
    """``outputs/<command>/<YYYY-MM-DD_HH-MM-SS>[_name]`` (or ``cfg.out``), with ``config.yaml``.

    ``config.yaml`` is written atomically. ``outputs/<command>/latest`` is not touched here: it
    moves only once a run has succeeded (:func:`llv.cli.mark_success`), so a failed or refused
    run never re-points it. With ``create=False`` only the path is returned (for ranks other than
    0, which receive it from rank 0, and for a run that takes its folder's lock first).
    """
    if cfg.get("out"):
        run_dir = Path(str(cfg.out))
    else:
        from llv.schema import FolderName

        name = cfg.get("name")
        if name is not None and not FolderName().accepts(name):  # a library caller's config
            raise LlvError(f"name: expected {FolderName().expected}, got {name!r}")
        stamp = _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        suffix = f"_{name}" if name else ""
        base = Path(str(cfg.get("outputs") or "outputs")) / cfg.command
        run_dir = base / f"{stamp}{suffix}"
        n = 1
        while run_dir.exists():  # two runs in one second
            run_dir = base / f"{stamp}{suffix}-{n}"
            n += 1
    if not create:
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir)
    return run_dir


def write_config(cfg, run_dir: Path) -> Path:
    """``run_dir/config.yaml``: the composed config, written atomically (a full disk is one line)."""
    from llv.fsio import atomic_write

    text = to_yaml(cfg)
    return atomic_write(Path(run_dir) / "config.yaml", lambda f: f.write(text), "run config", text=True)
