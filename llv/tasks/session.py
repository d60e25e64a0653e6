"""What every grid-evaluating task sets up once: checks, the run folder's lock, model, data.

:func:`start` (or :func:`running`, which adds stop signals) does, in this order, before any
model is built or any data are read (docs/reliability.md):

1. find the run folder (``resume=FILE``, ``out=DIR`` or a new ``outputs/<command>/<stamp>``) and
   check that it can be written;
2. take its writer lock (:class:`llv.runlock.RunLock`, rank 0 only) and remove temporaries that
   killed runs left there;
3. refuse a folder that holds another command's run;
4. read what an earlier run of this folder recorded (the result file's ``config`` attr, else
   ``config.yaml``) and take every key the user did not set from it, refusing a key set to
   something else (:func:`reconcile`): ``llv surface resume=FILE`` needs no other argument.
   Every path key (:data:`PATH_KEYS`) is resolved to an absolute path, so a run records no
   path relative to the directory it was started in; a recorded checkpoint or direction file
   that is gone (the run folder moved) is taken from beside the result when its SHA-256 is
   the recorded one (:func:`_relocate_recorded`, :func:`_resumed_directions`);
5. the task's own checks (``prepare``), then the checkpoint: it exists and is a file, it is the
   one the earlier run used (SHA-256), and its recorded model config gives ``model`` when none
   was given.

Then every rank builds the model and loads the checkpoint; non-finite weights are refused unless
``strict=false``. Only then does rank 0 write the run's first file, ``config.yaml``: a refused
run leaves nothing behind. Rank 0 holds the lock until :meth:`Session.close`.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from llv import distributed
from llv.checkpoint import load_into, sha256
from llv.console import LlvError, configure, log
from llv.device import resolve_device

RESULT_COMMANDS = ("surface", "interpolate", "hessian", "trajectory")

#: Keys that say how a run computes, not what: a resumed run takes the user's value without
#: complaint (the earlier run's when not given). Every other key defines the result. The rule
#: (docs/reliability.md): a key is a control key when changing it changes no stored value beyond
#: float32 rounding of the same arithmetic done in another order or fused (batch sizes, points
#: per pass, the device, channels-last, BatchNorm folding, torch.compile, CPU streams), or changes nothing
#: stored at all (figures, the probe, the summary). ``eval.precision``, ``eval.bn`` and
#: ``eval.approx*`` change values beyond that: they define the result. A checkpoint is compared
#: by content (SHA-256), not by path: a moved file is the same one (:func:`_prepare_run`).
CONTROL_KEYS = frozenset({"checkpoint",
    "name", "outputs", "device", "dist", "plot", "probe", "strict", "paths", "summary",
    "eval.batch_size", "eval.points_per_batch", "eval.chunk_points", "eval.channels_last",
    "eval.fold", "eval.compile", "eval.streams",
    "hessian.batch_size", "trajectory.memory_mb",
})
#: Commands whose directions come from ``dir_file=`` or are made from ``direction.target``,
#: ``checkpoint2`` and ``checkpoint3``: those files are read, and checked, before any work.
SECONDARY_INPUT_COMMANDS = ("direction", "surface", "interpolate", "hessian")
#: Keys that belong to one invocation and are never taken from an earlier run.
NOT_INHERITED = frozenset({"command", "out", "resume", "stop_after_points", "overwrite"})
#: Keys that name a file or folder: a run records them resolved to absolute paths (from the
#: working directory it was started in), so ``resume=FILE`` needs nothing else from any
#: directory. ``out`` and ``resume`` belong to one invocation and ``name`` is a suffix, not a
#: path. (tests/test_resume_paths.py checks that every path key of llv.schema is listed here.)
PATH_KEYS = ("checkpoint", "checkpoint2", "checkpoint3", "dir_file", "direction.target", "run",
             "outputs", "dataset.root", "dataset.path")
#: Mappings whose values are paths (a preset's run directories).
PATH_MAPS = ("paths",)
#: Path keys inside a config group: choosing the group (``dataset=cifar10``) does not give them.
GROUP_PATH_KEYS = frozenset({"dataset.root", "dataset.path"})


@dataclass
class Session:
    cfg: object
    comm: distributed.Comm
    device: torch.device
    model: torch.nn.Module
    checkpoint: Path
    checkpoint_sha256: str
    checkpoint_meta: dict
    run_dir: Path
    existing: Path | None = None  # a result file this run resumes
    lock: object = None  # rank 0's RunLock, held until close()
    dir_file: Path | None = None  # the directions the resumed file records, where they are now
    _data: dict = field(default_factory=dict)

    @property
    def is_root(self) -> bool:
        return self.comm.is_root

    def data(self, split: str, max_samples=None):
        """A split as tensors on the device (loaded once per process)."""
        from llv.data import load_eval_data

        key = (split, max_samples)
        if key not in self._data:
            self._data[key] = load_eval_data(self.cfg.dataset, split, max_samples=max_samples,
                                             seed=int(self.cfg.seed), device=self.device)
        return self._data[key]

    def eval_data(self) -> dict:
        """``split -> EvalData`` for ``eval.splits`` with ``eval.max_samples``."""
        splits = list(self.cfg.eval.splits)
        if not splits:
            raise LlvError("eval.splits is empty; use [train], [test] or [train, test]")
        return {s: self.data(s, self.cfg.eval.max_samples) for s in splits}

    def batches(self, split: str, max_samples=None, batch_size="auto", **options):
        """A split as :class:`llv.batches.Batches` of ``batch_size`` (``auto``: see
        :func:`llv.batches.auto_batch_size`)."""
        from llv.batches import as_batches

        data = self.data(split, max_samples)
        return as_batches((data.inputs, data.targets), batch_size=batch_size, device=self.device,
                          **options)

    def eval_batches(self, **options) -> dict:
        """``split -> Batches`` for ``eval.splits`` (``eval.max_samples``, ``eval.batch_size``)."""
        e = self.cfg.eval
        return {split: self.batches(split, e.max_samples, e.batch_size, **options)
                for split in self.eval_data()}

    def close(self) -> None:
        try:
            self.comm.close()
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None


#: ``prepare(cfg, run_dir) -> checkpoint or None``: a task's own checks on the resolved config
#: (rank 0, under the lock, before anything is built or read); may set config keys.
Prepare = Callable[[object, Path], object]


@contextlib.contextmanager
def running(cfg, result_name: str | None = None, checkpoint=None,
            prepare: Prepare | None = None, inherit: bool = True) -> Iterator[Session]:
    """:func:`start`, the task's block, :meth:`Session.close`; SIGTERM/SIGHUP stop it like Ctrl-C.

    A stop saves what the engine computed (it flushes in a ``finally``), releases the lock,
    prints the one-line command that continues the run, and propagates (exit status 130, 143 or
    129 on the command line).
    """
    from llv.runlock import stop_signals

    with stop_signals():
        session = start(cfg, result_name, checkpoint, prepare, inherit)
        try:
            yield session
        except KeyboardInterrupt as stop:
            report_stop(session, stop, result_name)
            raise
        finally:
            session.close()


def start(cfg, result_name: str | None = None, checkpoint=None, prepare: Prepare | None = None,
          inherit: bool = True) -> Session:
    """Check, lock and resolve the run (module docstring), then build the model at the checkpoint.

    Args:
        cfg: The composed config; the session's ``cfg`` is the resolved one (keys taken from an
            earlier run of the folder, the checkpoint's model).
        result_name: The result file of the command (``surface.h5``); with ``resume=PATH`` or
            an ``out=`` that holds it, the run continues that file.
        checkpoint: The checkpoint when the task fixes it (default ``checkpoint=``, else the
            latest training run's ``final.pt``).
        prepare: The task's own checks (see :data:`Prepare`).
        inherit: Take the keys the user did not set from the folder's earlier run (False for
            ``llv direction``, which makes something new each time).
    """
    backend = str(cfg.dist.backend) if "dist" in cfg else "none"
    wants_cuda = str(cfg.device).startswith("cuda") or (str(cfg.device) == "auto" and torch.cuda.is_available())
    comm = distributed.init(backend, use_cuda=wants_cuda, timeout_s=float(cfg.dist.get("timeout_s", 600)))
    configure(rank=comm.rank)
    lock = None
    try:
        plan, error = None, None
        if comm.is_root:
            try:
                plan, lock = _prepare_run(cfg, result_name, checkpoint, prepare, inherit)
            except Exception as exc:
                error = exc
        comm.agree(error)
        plan = comm.bcast(plan)
        # a checkpoint given on the command line may be node-local (``${oc.env:PMI_RANK}`` in
        # its path): every rank reads its own, the others rank 0's choice
        own = checkpoint if checkpoint is not None else cfg.get("checkpoint")
        cfg = _as_config(plan["config"])
        path = Path(str(own)) if own and not comm.is_root else Path(plan["checkpoint"])
        # every rank builds the model and reads the checkpoint; a failure on any rank (a path
        # missing on one node, say) is raised on all of them instead of leaving them waiting
        error, device, model, meta = None, None, None, None
        try:
            device = resolve_device(cfg.device)
            if device.type == "cuda" and comm.size > 1:
                device = torch.device("cuda", comm.local_rank % torch.cuda.device_count())
            from llv.models import build_model

            torch.manual_seed(int(cfg.seed))
            model = build_model(cfg.model)
            meta = load_into(model, path, str(cfg.model.name))
            _check_weights(model, path, bool(cfg.get("strict", True)), comm.is_root)
            if comm.is_root:  # what the run reads besides the checkpoint, before anything is written
                check_secondary_inputs(cfg, model, plan)
                check_settings_against(cfg, model)
            model.to(device).eval()
        except Exception as exc:
            error = exc
        comm.agree(error)
        from llv.config import write_config

        comm.root_call(write_config, cfg, Path(plan["run_dir"]))  # accepted: the run's first file
    except BaseException:
        if lock is not None:
            lock.release()
        comm.close()  # stops every rank if this one fails alone
        raise
    log.info(f"{cfg.command}: model {cfg.model.name} on {cfg.dataset.name}, checkpoint {path}, "
             f"device {device}, {comm.size} rank(s) [{comm.backend}]")
    existing, dir_file = plan["existing"], plan.get("dir_file")
    return Session(cfg, comm, device, model, path, plan["sha256"], meta, Path(plan["run_dir"]),
                   Path(existing) if existing else None, lock,
                   dir_file=Path(dir_file) if dir_file else None)


def _check_weights(model: torch.nn.Module, path: Path, strict: bool, is_root: bool) -> None:
    """Refuse non-finite weights (naming the tensor) unless ``strict=false``, then warn once."""
    from llv.checkpoint import check_finite

    try:
        check_finite(model.state_dict(), path)
    except LlvError as exc:
        if strict:
            raise
        if is_root:
            log.warning(f"{exc}; strict=false: evaluating it, its points will be NaN")


def report_stop(session: Session, stop: KeyboardInterrupt, result_name: str | None) -> None:
    """Say what is saved and print the command that continues the run (a line of its own)."""
    from llv.runlock import signal_name

    if not session.is_root:
        return
    command = str(session.cfg.command)
    result = session.run_dir / result_name if result_name else None
    stop.llv_saved = result is not None and result.is_file()  # the last line says the same
    if stop.llv_saved:
        log.warning(f"{signal_name(stop)} stopped llv {command}; the points computed so far are in {result}")
        line = ["llv", command, f"resume={result.resolve()}"]
    else:
        log.warning(f"{signal_name(stop)} stopped llv {command} before any point was computed: "
                    "no result to save, nothing is lost")
        line = ["llv", command, f"out={session.run_dir.resolve()}"]
    print(f"llv: continue with: {shlex.join(line)}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------- rank 0: before any work


def _prepare_run(cfg, result_name, checkpoint, prepare, inherit) -> tuple[dict, object]:
    """Steps 1-5 of the module docstring; returns the plan every rank needs, and the lock."""
    from llv.fsio import check_output_dir, clean_stale_temps
    from llv.runlock import RunLock

    if cfg.get("out"):
        check_output_dir(str(cfg.out))
    run_dir, existing = _locate(cfg, result_name)
    check_output_dir(run_dir, "out" if cfg.get("out") else "resume" if cfg.get("resume") else "outputs")
    lock = RunLock(run_dir)
    lock.acquire()
    try:
        for stale in clean_stale_temps(run_dir):
            log.info(f"removed {stale} (left by a run that was killed while writing)")
        _refuse_other_command(run_dir, str(cfg.command))
        attrs = None
        if existing is not None:
            attrs = _result_attrs(existing, str(cfg.command))
        plain = absolute_paths(_plain(cfg))
        explicit = explicit_keys(cfg)
        stored, source = _stored_config(run_dir, existing, attrs, str(cfg.command)) if inherit else (None, None)
        if stored is not None:
            stored = absolute_paths(stored)  # a file of an older llv may hold relative ones
            plain = reconcile(plain, absolute_paths(default_config(str(cfg.command))), stored, source,
                              explicit)
            _relocate_recorded(plain, stored, run_dir, existing, attrs)
        dir_file = _resumed_directions(plain, run_dir, existing, attrs)
        model_given = _model_given(plain, explicit, stored is not None)
        cfg = _as_config(plain)
        given = prepare(cfg, run_dir) if prepare is not None else None
        path = _checkpoint_path(cfg, given if given is not None else checkpoint, model_given)
        path = Path(_absolute(path))
        _take_model_of(cfg, path, model_given)
        digest = sha256(path)
        recorded = (attrs or {}).get("checkpoint_sha256")
        if recorded and recorded != digest:
            raise LlvError(f"cannot resume {existing}: its checkpoint sha256 differs from {path}'s "
                           "(another checkpoint, or the file changed): pass the checkpoint it was "
                           "computed at, or another out= for a new run")
        if not recorded and inherit:
            _refuse_other_checkpoint(cfg, run_dir, result_name, stored, source, path, digest)
        _check_run_directions(cfg, run_dir, existing, stored is not None, digest)
        if cfg.get("checkpoint") is None and given is None:
            cfg.checkpoint = str(path)  # where latest pointed, for a later resume
        plan = {"config": absolute_paths(_plain(cfg)), "checkpoint": str(path), "sha256": digest,
                "run_dir": str(run_dir), "existing": str(existing) if existing else None,
                "dir_file": str(dir_file) if dir_file else None,
                "direction_sha256": (attrs or {}).get("direction_sha256")}
        return plan, lock
    except BaseException:
        lock.release()
        raise


def _locate(cfg, result_name: str | None) -> tuple[Path, Path | None]:
    """The run folder and the result file this run continues (None: a new one)."""
    from llv.config import make_run_dir

    resume = cfg.get("resume")
    if resume:
        target = Path(str(resume))
        if target.is_dir() and result_name:
            if not (target / result_name).exists():
                raise LlvError(f"resume={resume} is a folder without {result_name}")
            target = target / result_name
        if not target.exists():
            raise LlvError(f"resume={resume}: no such file")
        if not target.is_file():
            raise LlvError(f"resume={resume} is a folder without {result_name or 'a result file'}")
        out = cfg.get("out")
        if out and Path(str(out)).resolve() != target.parent.resolve():
            raise LlvError(f"resume={resume} lies outside out={out}: pass one of them")
        return target.parent, target
    if cfg.get("out"):
        run_dir = Path(str(cfg.out))
        candidate = run_dir / result_name if result_name else None
        if candidate is not None and candidate.is_file() and _is_grid_result(candidate):
            return run_dir, candidate
        return run_dir, None
    return make_run_dir(cfg, create=False), None


def _is_grid_result(path: Path) -> bool:
    """A result file with a ``done`` mask (a Hessian point file has none: it is recomputed)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "done" in f
    except OSError:
        return True  # not HDF5 at all: _result_attrs says so in one line


def _result_attrs(path: Path, command: str) -> dict:
    """The attrs of the result file to continue; refused when it is not llv's or not this command's."""
    from llv.storage.surface import SurfaceFile

    attrs = SurfaceFile.open(path).attrs
    made_by = attrs.get("command")
    if made_by and made_by != command:
        raise LlvError(f"{path} is a result of `llv {made_by}`: continue it with "
                       f"`llv {made_by} resume={path}`")
    return attrs


def _refuse_other_command(run_dir: Path, command: str) -> None:
    """``out=`` must not be another command's run: its files (``config.yaml`` first) are its own."""
    saved = _load_yaml(run_dir / "config.yaml")
    other = saved.get("command") if isinstance(saved, dict) else None
    if other and other != command:
        raise LlvError(f"{run_dir} holds a `llv {other}` run: pass another out= for llv {command} "
                       f"(its files would be mixed with that run's)")


def _stored_config(run_dir: Path, existing: Path | None, attrs: dict | None,
                   command: str) -> tuple[dict | None, str | None]:
    """The config an earlier run of this folder recorded, and where (for messages)."""
    if attrs is not None and attrs.get("config"):
        import yaml

        try:
            stored = yaml.safe_load(str(attrs["config"]))
        except yaml.YAMLError:
            stored = None
        if isinstance(stored, dict):
            if not stored.get("checkpoint") and attrs.get("checkpoint"):
                stored["checkpoint"] = str(attrs["checkpoint"])  # the default it used, made explicit
            return stored, str(existing)
    if command not in RESULT_COMMANDS:
        return None, None
    saved = _load_yaml(run_dir / "config.yaml")
    if isinstance(saved, dict) and saved.get("command") == command:
        return saved, str(run_dir / "config.yaml")
    return None, None


def _load_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


_ABSENT = object()


def reconcile(given: Mapping, default: Mapping, stored: Mapping, source: str,
              explicit: Callable[[str], bool] | None = None, prefix: str = "") -> dict:
    """``given`` with every key the user did not set taken from ``stored``.

    A key the user set to something other than the stored value is refused, naming it, unless
    it only controls how the run computes (:data:`CONTROL_KEYS`: the user's value wins). Keys of
    :data:`NOT_INHERITED` stay as given. ``explicit(path)`` says whether the user set a key
    (:func:`llv.config.given_keys`); without it, a key set is one that differs from ``default``.

    >>> reconcile({"seed": 0, "device": "cpu"}, {"seed": 0, "device": "auto"},
    ...           {"seed": 3, "device": "cuda"}, "old.h5")
    {'seed': 3, 'device': 'cpu'}
    >>> reconcile({"seed": 1}, {"seed": 0}, {"seed": 3}, "old.h5")
    Traceback (most recent call last):
    ...
    llv.errors.LlvError: seed=1 contradicts old.h5, which was made with seed=3: leave seed out to continue that run, or pass another out=
    """
    out = dict(given)
    for key, kept in stored.items():
        path = f"{prefix}{key}"
        if path in NOT_INHERITED:
            continue
        mine = given.get(key, _ABSENT)
        base = default.get(key, _ABSENT) if isinstance(default, Mapping) else _ABSENT
        was_given = (not _same(mine, base)) if explicit is None else explicit(path)
        if mine is _ABSENT or not was_given:
            out[key] = kept
        elif _same(mine, kept) or _is_control(path):
            continue
        elif isinstance(mine, Mapping) and isinstance(kept, Mapping):
            out[key] = reconcile(mine, base if isinstance(base, Mapping) else {}, kept, source,
                                 explicit, f"{path}.")
        else:
            raise LlvError(f"{path}={_show(mine)} contradicts {source}, which was made with "
                           f"{path}={_show(kept)}{_what_it_holds(path, mine, kept)}: leave {path} "
                           "out to continue that run, or pass another out=")
    return out


def _what_it_holds(path: str, mine, kept) -> str:
    """For ``eval.splits``: the metrics the file has and this run would need."""
    if path != "eval.splits" or not isinstance(mine, list) or not isinstance(kept, list):
        return ""
    missing = [f"{s}_loss" for s in mine if s not in kept]
    return f" (it has {', '.join(f'{s}_loss' for s in kept)}, no {', '.join(missing)})" if missing else ""


def explicit_keys(cfg) -> Callable[[str], bool] | None:
    """``path -> whether the user's overrides set it`` (or a key inside or around it), from
    :func:`llv.config.given_keys`; None when unknown (then a key differing from the default
    counts as set). An ``experiment=`` preset sets what it changes from the default."""
    from llv.config import given_keys

    keys = given_keys(cfg)
    if keys is None:
        return None
    default = absolute_paths(default_config(str(cfg.command)))
    plain = absolute_paths(_plain(cfg))

    def explicit(path: str) -> bool:
        if path in GROUP_PATH_KEYS:  # dataset=cifar10 chooses the data set, not where it lies
            if any(k == path for k in keys):
                return True
        elif any(k == path or k.startswith(path + ".") or path.startswith(k + ".") for k in keys):
            return True
        if "experiment" in keys:
            return not _same(_lookup(plain, path), _lookup(default, path))
        return False

    return explicit


def _lookup(tree, path: str):
    for part in path.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return _ABSENT
        tree = tree[part]
    return tree


def _same(a, b) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _is_control(path: str) -> bool:
    return any(path == k or path.startswith(k + ".") for k in CONTROL_KEYS)


def _show(value) -> str:
    from llv.schema import _show as show

    if isinstance(value, Mapping) and "name" in value:
        return str(value["name"])
    return show(value).strip("'")


@cache
def _default_plain(command: str) -> str:
    from llv.config import compose, to_yaml

    return to_yaml(compose(command, []))


def default_config(command: str) -> dict:
    """The command's config with no overrides (what "not given" means), as plain dicts."""
    import yaml

    return yaml.safe_load(_default_plain(command))


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg)


def _as_config(plain: Mapping):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(dict(plain))
    OmegaConf.set_struct(cfg, True)
    return cfg


# ------------------------------------------------------------------- paths a run records


def _absolute(value) -> str:
    """``value`` as an absolute path (``~`` expanded, symbolic links resolved: a checkpoint
    given as ``outputs/train/latest/final.pt`` stays the one it was when ``latest`` moves)."""
    return str(Path(str(value)).expanduser().resolve())


def _is_path_value(value) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value) != ""


def absolute_paths(plain: Mapping) -> dict:
    """A copy of the plain config ``plain`` with every path key (:data:`PATH_KEYS`,
    :data:`PATH_MAPS`) resolved from the working directory; keys it lacks stay absent.

    >>> absolute_paths({"checkpoint": "/a/../b.pt", "dir_file": None, "seed": 0})
    {'checkpoint': '/b.pt', 'dir_file': None, 'seed': 0}
    """
    import copy

    out = copy.deepcopy(dict(plain))
    for key in PATH_KEYS:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and _is_path_value(node.get(leaf)):
            node[leaf] = _absolute(node[leaf])
    for key in PATH_MAPS:
        mapping = out.get(key)
        if isinstance(mapping, dict):
            out[key] = {k: _absolute(v) if _is_path_value(v) else v for k, v in mapping.items()}
    return out


def _relocate_recorded(plain: dict, stored: Mapping, run_dir: Path, existing: Path | None,
                       attrs: dict | None) -> None:
    """A recorded ``checkpoint`` or ``dir_file`` that is gone (the run folder moved, say) is taken
    from beside the result, by name, when its SHA-256 is the one the run recorded; else one line
    naming both places. Only a value taken from the earlier run (not another one given now)."""
    attrs = attrs or {}
    checks = {"checkpoint": ("checkpoint_sha256", _file_digests),
              "dir_file": ("direction_sha256", _direction_digests)}
    for key, (digest_key, digests_of) in checks.items():
        value = plain.get(key)
        if not value or not _same(value, stored.get(key)) or Path(str(value)).exists():
            continue
        expected = attrs.get(digest_key)
        if not expected and key == "checkpoint":
            expected = _run_directions_checkpoint(run_dir)
        plain[key] = str(_beside(Path(str(value)), key, run_dir, existing, expected, digests_of))


def _resumed_directions(plain: Mapping, run_dir: Path, existing: Path | None,
                        attrs: dict | None) -> Path | None:
    """Where the directions of the resumed result are now: its ``dir_file`` as recorded (a
    relative one from the working directory or the run folder, as older files hold), else the
    file of that name beside the result when its SHA-256 is the result's ``direction_sha256``.
    None when ``dir_file=`` is given (or inherited) or there is no result to continue."""
    recorded = (attrs or {}).get("dir_file")
    if existing is None or not recorded or plain.get("dir_file"):
        return None
    path = Path(str(recorded))
    for candidate in (path, run_dir / path):
        if candidate.exists():
            return Path(_absolute(candidate))
    return _beside(Path(_absolute(path)), "dir_file", run_dir, existing,
                   (attrs or {}).get("direction_sha256"), _direction_digests)


def _beside(recorded: Path, key: str, run_dir: Path, existing: Path | None, expected,
            digests_of) -> Path:
    """The file named like ``recorded`` in the run folder, if its SHA-256 is ``expected``."""
    candidate = Path(_absolute(run_dir)) / recorded.name
    what = existing or run_dir / "config.yaml"
    tried = f"{key} {recorded} recorded by {what} does not exist"
    # a checkpoint is compared by SHA-256 whatever its path; a dir_file= other than the
    # recorded one contradicts the run (reconcile): its file must be put back
    fix = ("pass checkpoint=PATH of the file it was computed at" if key == "checkpoint" else
           "put the direction file it was computed along back at either place")
    if not candidate.is_file():
        raise LlvError(f"{tried}, nor does {candidate} beside it: {fix}")
    if not expected:
        raise LlvError(f"{tried}, and {candidate} beside it cannot be checked (no SHA-256 was "
                       f"recorded for it): {fix}")
    if str(expected) not in digests_of(candidate):
        raise LlvError(f"{tried}, and {candidate} beside it is another file (its SHA-256 differs "
                       f"from the recorded one): {fix}")
    log.info(f"{key} {recorded} is gone: using {candidate} beside {what} (the same SHA-256)")
    return candidate


def _file_digests(path: Path) -> set[str]:
    try:
        return {sha256(path)}
    except OSError:
        return set()


def _direction_digests(path: Path) -> set[str]:
    """The SHA-256 of the directions in a direction file, computed from its values (a file whose
    values changed fails however its attrs read): of every axis, and of the x axes alone (a 1D
    grid along a 2D file)."""
    from llv.direction import Directions, load_file

    try:
        whole = load_file(path)
    except Exception:  # not a direction file: no digest matches
        return set()
    digests = {whole.digest()}
    if whole.ndim > 1:
        digests.add(Directions(whole.space, whole.axes[::whole.ndim], 1).digest())
    return digests


def _run_directions_checkpoint(run_dir: Path) -> str | None:
    """The checkpoint SHA-256 the run folder's own ``directions.h5`` records (a run stopped
    before its first result: only its ``config.yaml`` and directions are there)."""
    from llv.storage.directions import FILE

    found = run_dir / FILE
    return _recorded_checkpoint(found) if found.is_file() else None


# --------------------------------------------------------------------------- the checkpoint


def _checkpoint_path(cfg, given, model_given: bool) -> Path:
    """The checkpoint file: given, ``checkpoint=``, else the latest training run's ``final.pt``
    (for any model when none was given: the checkpoint then says which)."""
    from llv.checkpoint import latest_trained

    if given is None and cfg.get("checkpoint"):
        given = cfg.checkpoint
    if given is None:
        model = str(cfg.model.name) if model_given else None
        return latest_trained(cfg.get("outputs"), model, str(cfg.dataset.name))
    return check_file(given, "checkpoint")


def check_file(path, key: str) -> Path:
    """``path`` when it is an existing file; one line naming ``key`` otherwise."""
    path = Path(str(path))
    if path.is_dir():
        raise LlvError(f"{key}={path} is a folder, not a file")
    if not path.exists():
        raise LlvError(f"{key}={path} does not exist")
    return path


def _model_given(plain: Mapping, explicit, inherited: bool) -> bool:
    """Whether ``model`` was chosen (by the user, or by the earlier run it continues)."""
    if inherited:
        return True
    if explicit is not None:
        return explicit("model")
    return not _same(plain.get("model"), default_config(str(plain["command"])).get("model"))


def _take_model_of(cfg, path: Path, model_given: bool) -> None:
    """``model`` from the checkpoint's recorded config when none was given. A given ``model=``
    that names another model than the checkpoint records is refused; the rest of a given model
    node is the user's (a subclass with the same weights, say): a checkpoint that does not fit
    it is one line when it is loaded."""
    from llv.checkpoint import model_config_of

    recorded = model_config_of(path)
    if not recorded:
        return
    if not model_given:
        cfg.model = recorded
        return
    trained = recorded.get("name")
    if trained and str(cfg.model.name) != str(trained):
        raise LlvError(f"model={cfg.model.name} contradicts checkpoint {path}, which records "
                       f"model={trained}: leave model out to use the checkpoint's")


def _recorded_checkpoint(path: Path) -> str | None:
    """The ``checkpoint_sha256`` an HDF5 file (a result, a direction file) records (None: none,
    or not HDF5)."""
    from llv.h5 import open_h5, read_attrs

    try:
        with open_h5(path, "an HDF5 file") as f:
            recorded = read_attrs(f).get("checkpoint_sha256")
    except (LlvError, OSError):
        return None
    return str(recorded) if recorded else None


#: Result files a command writes whole, without a ``done`` mask to resume (recomputed when the
#: run is repeated): ``hessian.h5`` of a point, a curve's ``curve.h5``.
WHOLE_RESULTS = {"hessian": ("hessian.h5",), "interpolate": ("curve.h5",)}


def _refuse_other_checkpoint(cfg, run_dir: Path, result_name: str | None, stored: Mapping | None,
                             source: str | None, path: Path, digest: str) -> None:
    """A folder whose result (a Hessian point, a curve) or earlier run was computed at another
    checkpoint than ``path`` is refused: repeating the run there would replace that result.

    A resumable result's checkpoint is checked by its own ``checkpoint_sha256`` (:func:`_prepare_run`);
    here, the files a command writes whole, and the checkpoint the folder's ``config.yaml`` names
    (when it still exists: a moved one cannot be compared, and nothing was computed with it)."""
    names = {*WHOLE_RESULTS.get(str(cfg.command), ()), *([result_name] if result_name else [])}
    for name in sorted(names):
        found = run_dir / name
        made_at = _recorded_checkpoint(found) if found.is_file() else None
        if made_at and made_at != digest:
            raise LlvError(f"{found} was computed at another checkpoint than {path} (its checkpoint "
                           "sha256 differs): repeating the run would replace it; pass the checkpoint "
                           "it was computed at, or another out=")
    before = (stored or {}).get("checkpoint")
    if not before or _absolute(before) == str(path) or not Path(str(before)).is_file():
        return
    if _file_digests(Path(str(before))) != {digest}:
        raise LlvError(f"checkpoint={path} contradicts {source}, which was made with checkpoint={before} "
                       "(another file: its sha256 differs): leave checkpoint out to continue that run, "
                       "or pass another out=")


def check_settings_against(cfg, model: torch.nn.Module) -> None:
    """Settings that only the data set's size or the model's can refute, checked before anything
    is written: the data set's split bounds (``dataset.test_fraction``), and ``hessian.top_k``
    against the parameter count (a point's top-k asks for at most one eigenvalue per parameter)."""
    if "dataset" in cfg:
        from llv.data.loading import check_config

        check_config(cfg.dataset)
    hessian = cfg.get("hessian") if str(cfg.command) == "hessian" else None
    if hessian is not None and "top_k" in (hessian.get("compute") or ()):
        from llv.spectrum import check_top_k

        check_top_k(hessian.top_k, sum(p.numel() for p in model.parameters()))


def check_secondary_inputs(cfg, model: torch.nn.Module, plan: Mapping) -> None:
    """The files a run reads besides its checkpoint, read now and checked against the model (rank
    0, after the model is built, before ``config.yaml``): a ``dir_file`` (resumed or given) is a
    direction file of this model's tensors with the grid's number of axes, and the directions a
    resumed result was computed along (its ``direction_sha256``); ``checkpoint2`` of ``llv
    interpolate``, ``direction.target`` (or ``checkpoint2``) of ``direction.kind=target`` and the
    vertices of ``kind=plane`` are checkpoints of this model. A wrong file is one line before
    anything is written or computed (and leaves no ``config.yaml`` that a rerun would inherit)."""
    command = str(cfg.command)
    if command not in SECONDARY_INPUT_COMMANDS:
        return
    from llv.grid import GridSpec

    ndim = GridSpec.from_cfg(cfg.grid).ndim
    dir_file = cfg.get("dir_file") or plan.get("dir_file")
    if dir_file and command != "direction" and ndim:
        _check_direction_file(cfg, model, Path(str(dir_file)), ndim, plan)
    checkpoints = []
    if command == "interpolate":
        checkpoints.append(("checkpoint2", cfg.get("checkpoint2")))
    if not dir_file and (command == "direction" or ndim) and "direction" in cfg and not (
            command != "direction" and (Path(str(plan["run_dir"])) / "directions.h5").is_file()):
        kind = str(cfg.direction.kind)
        if kind == "target":
            target = cfg.direction.get("target")
            checkpoints.append(("direction.target", target) if target else
                               ("checkpoint2", cfg.get("checkpoint2")))
        elif kind == "plane":
            checkpoints += [("checkpoint2", cfg.get("checkpoint2")), ("checkpoint3", cfg.get("checkpoint3"))]
    seen = set()
    for key, value in checkpoints:
        if value and str(value) not in seen:
            seen.add(str(value))
            _check_fits(model, Path(str(value)), key, str(cfg.model.name))


def _check_direction_file(cfg, model, path: Path, ndim: int, plan: Mapping) -> None:
    from llv import direction as dirs
    from llv.params import ParameterSpace

    path = check_file(path, "dir_file")
    space = ParameterSpace.of(model, str(cfg.direction.type))
    try:
        loaded = dirs.load(path, space, ndim)
    except LlvError as exc:
        text = str(exc)
        raise LlvError(text if str(path) in text else f"dir_file={path}: {text}") from None
    except Exception as exc:  # h5py's own errors: a file of another layout
        raise LlvError(f"dir_file={path} is not a direction file llv can read "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    expected = plan.get("direction_sha256")
    if plan.get("existing") and expected and loaded.digest() != str(expected):
        raise LlvError(f"cannot resume {plan['existing']}: its direction sha256 differs from {path}'s "
                       "(the file changed since, or another file): put back the directions it was "
                       "computed along, or pass another out= for a new run")


def _check_fits(model: torch.nn.Module, path: Path, key: str, model_name: str) -> None:
    """``path`` is a checkpoint that loads into ``model`` (as :func:`llv.checkpoint.load_into`
    would), read without touching the model."""
    from llv.checkpoint import fitted_state

    path = check_file(path, key)
    try:
        _, _, problem = fitted_state(model, path)
    except LlvError as exc:
        text = str(exc)
        raise LlvError(text if str(path) in text else f"{key}={path}: {text}") from None
    if problem:
        raise LlvError(f"{key}={path} does not fit model {model_name}: {problem}")


def _check_run_directions(cfg, run_dir: Path, existing: Path | None, same_run: bool,
                          digest: str) -> None:
    """A ``directions.h5`` already in the folder is this run's own (then reused) or refused:
    making new directions would overwrite it."""
    from llv.storage.directions import FILE

    found = run_dir / FILE
    if (str(cfg.command) not in ("surface", "interpolate", "hessian") or cfg.get("dir_file")
            or existing is not None or not found.is_file()):
        return
    if not same_run:
        raise LlvError(f"{run_dir} already holds {FILE} of another run: use it with "
                       f"dir_file={found}, or pass another out=")
    from llv.h5 import open_h5, read_attrs

    with open_h5(found, "a direction file") as f:
        made_at = read_attrs(f).get("checkpoint_sha256")
    if made_at and made_at != digest:
        raise LlvError(f"{found} was made at another checkpoint than {cfg.checkpoint or 'this run'}'s: "
                       "pass another out=")
