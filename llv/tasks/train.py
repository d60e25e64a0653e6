"""``llv train``: train a model, keeping a checkpoint per epoch, a metrics table and ``final.pt``.

The run directory holds ``checkpoints/epoch_NNN.pt`` (epoch 0 before training, then every
``train.save_every`` epochs and the last), ``metrics.csv`` (one row per epoch, epoch 0 included)
and ``final.pt``. Epoch checkpoints also store the optimizer, scheduler and random-number
states, so ``train.resume=true out=RUN_DIR`` (default: the newest run) continues a stopped run
and ends with the same weights as an uninterrupted one (bit-identical on the CPU).

Reliability (docs/reliability.md): the run holds the run folder's lock from start to end; every
file is written atomically, so a ``kill -9`` at any moment leaves complete files and a stale
temporary that the next run removes; Ctrl-C and SIGTERM stop with exit status 130 and 143 and
print the one-line command that continues the run; a full disk is one line and exit status 2.

Resuming (``train.resume=true``) continues the run in ``out=`` (or the newest run): a path that
holds no training run (no ``config.yaml``, no epoch checkpoint) is refused, never trained from
scratch. The run keeps every setting that defines it, as its ``config.yaml`` (else its newest
checkpoint) records it: model, data set and its split, ``seed``, optimizer, learning rate,
momentum, Nesterov, weight decay, batch size, milestones and gamma, augmentation, SAM settings,
and every other key except those of :data:`RESUME_FREE`. A value that differs is refused in one
line naming the first such key with both values, before any data are read and with nothing
written. Free to change: ``train.epochs`` (it may grow; it may not fall below the epochs already
trained), and what only says how or where the run computes and reports: ``device``,
``train.num_workers``, ``train.save_every`` (which epochs keep a checkpoint; the weights do not
depend on it), ``eval.batch_size``, ``dist``, ``dataset.root`` and ``dataset.download`` (where
the same data lie), ``name``, ``outputs``, ``paths``, ``out``. ``config.yaml`` is rewritten
only after this check, so it never contradicts the epochs already trained.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import shlex
import sys
import time
from pathlib import Path

from llv.console import LlvError, log, progress
from llv.storage.trainrun import (
    CHECKPOINTS,
    FINAL,
    METRICS,
    epoch_checkpoint,
    last_checkpoint,
    read_metrics,
)

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")

#: Keys (and the keys under them) a resumed run may change: they say how or where it computes,
#: not what it trains. ``train.epochs`` is checked on its own (it may grow).
RESUME_FREE = frozenset({
    "command", "name", "out", "outputs", "paths", "device", "dist", "eval.batch_size",
    "dataset.root", "dataset.download", "train.resume", "train.num_workers", "train.save_every",
    "train.epochs",
})
#: Keys compared without regard to case (the schema folds them).
_CASELESS = frozenset({"train.optimizer", "train.sam.base"})


def run(cfg) -> Path:
    """Train ``cfg.model`` on ``cfg.dataset`` as ``cfg.train`` says; return the run directory."""
    from llv.runlock import stop_signals

    epochs, save_every = _check_settings(cfg)
    where = _Reached()
    try:
        with stop_signals(), contextlib.ExitStack() as stack:
            return _train(cfg, epochs, save_every, stack, where)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP as llv.runlock.Stopped
        _report_stop(stop, where, epochs)
        raise


@dataclasses.dataclass
class _Reached:
    """How far a run got, for the message when it is stopped."""

    run_dir: Path | None = None
    epoch: int = 0  # the epoch being trained


def _train(cfg, epochs: int, save_every: int, stack: contextlib.ExitStack,
           where: _Reached) -> Path:
    import torch

    from llv.checkpoint import save_checkpoint
    from llv.config import make_run_dir
    from llv.data import load_eval_data, load_split
    from llv.device import resolve_device
    from llv.models import build_model
    from llv.tasks._checkpoints import run_config
    from llv.training import (
        build_optimizer,
        build_scheduler,
        current_lr,
        evaluate_model,
        rng_state,
        scheduler_state,
        train_epoch,
    )

    train_cfg = cfg.train
    resume = bool(train_cfg.get("resume"))
    device = resolve_device(cfg.get("device", "auto"))
    seed = int(cfg.get("seed", 0))

    # The run folder is known, locked and checked before any data are read: a refusal is quick.
    run_dir = _resume_dir(cfg) if resume else (Path(str(cfg.out)) if cfg.get("out") else None)
    if run_dir is not None:
        _lock(run_dir, stack)
        where.run_dir = run_dir
        _refuse_other_command(run_dir)
        if resume:
            _check_resume(cfg, run_dir, epochs)
        else:
            _refuse_existing_run(run_dir)

    # Data next: a missing data set is one line, before any run directory exists.
    train_set = load_split(cfg.dataset, "train", augment=bool(train_cfg.get("augment", False)))
    eval_data = {split: load_eval_data(cfg.dataset, split, device=device, dtype=torch.float32)
                 for split in ("train", "test")}

    torch.manual_seed(seed)  # Kaiming init inside build_model draws from this stream
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, **_optimizer_settings(train_cfg))
    scheduler = build_scheduler(optimizer, milestones=train_cfg.get("milestones") or (),
                                gamma=float(train_cfg.get("gamma", 0.1)))
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=int(train_cfg.batch_size), shuffle=True, generator=generator,
        num_workers=int(train_cfg.get("num_workers", 0)), pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise LlvError(f"the {cfg.dataset.name} training split is empty")

    if resume:
        run_dir, start, rows = _resume(cfg, run_dir, model, optimizer, scheduler, generator)
    else:
        run_dir, start, rows = make_run_dir(cfg), 0, []
        _lock(run_dir, stack)
    where.run_dir, where.epoch = run_dir, start
    config = run_config(cfg)
    metrics_path = run_dir / METRICS

    def evaluate_all() -> dict[str, float]:
        batch = int(cfg.eval.batch_size)
        values = {}
        for split, data in eval_data.items():
            loss, acc = evaluate_model(model, data.inputs, data.targets, batch)
            values[f"{split}_loss"], values[f"{split}_acc"] = loss, acc
        return values

    def save_epoch(epoch: int, metrics: dict) -> None:
        extra = {"optimizer": optimizer.state_dict(), "scheduler": scheduler_state(scheduler),
                 "rng": rng_state(generator)}
        save_checkpoint(epoch_checkpoint(run_dir, epoch), model, epoch, config, metrics, extra)

    log.info("training %s on %s: %d epochs, %s lr %g, batch %d, %d training images, "
             "device %s -> %s",
             cfg.model.name, cfg.dataset.name, epochs, train_cfg.optimizer, float(train_cfg.lr),
             int(train_cfg.batch_size), len(train_set), device, run_dir)
    if start == 0:
        began = time.perf_counter()
        metrics = evaluate_all()
        rows = [_row(0, current_lr(optimizer), metrics, time.perf_counter() - began)]
        _write_metrics(metrics_path, rows)
        save_epoch(0, rows[-1])
    elif start == epochs and (run_dir / FINAL).is_file():
        log.info("%s is complete (epoch %d of %d); nothing to do", run_dir, start, epochs)
        return run_dir

    steps = len(loader)
    warned = False
    with progress(epochs * steps, "train", unit="steps", completed=start * steps) as bar:
        for epoch in range(start + 1, epochs + 1):
            where.epoch = epoch
            began = time.perf_counter()
            lr = current_lr(optimizer)
            running_loss, running_acc = train_epoch(model, loader, optimizer, device,
                                                    on_step=bar.advance)
            scheduler.step()
            metrics = evaluate_all()
            rows.append(_row(epoch, lr, metrics, time.perf_counter() - began))
            _write_metrics(metrics_path, rows)
            if epoch % save_every == 0 or epoch == epochs:
                save_epoch(epoch, rows[-1])
            bar.update(info=f"epoch {epoch}/{epochs} loss {running_loss:.4f} "
                            f"acc {running_acc:.1f}% test {metrics['test_acc']:.1f}%")
            log.debug("epoch %d: %s", epoch, rows[-1])
            if not warned and not math.isfinite(running_loss):
                log.warning("training loss is %s in epoch %d (diverged?): try a smaller train.lr",
                            running_loss, epoch)
                warned = True

    final = save_checkpoint(run_dir / FINAL, model, epochs, config, rows[-1])
    log.info("saved %s (test acc %.2f %%)", final, rows[-1]["test_acc"])
    return run_dir


# ------------------------------------------------------------------------ settings, locking


def _check_settings(cfg) -> tuple[int, int]:
    """The numbers of ``train.*`` that must be valid before anything else happens."""
    train_cfg = cfg.train
    epochs, save_every = int(train_cfg.epochs), int(train_cfg.get("save_every", 1))
    if epochs < 0:
        raise LlvError(f"train.epochs must be >= 0, got {epochs}")
    if save_every < 1:
        raise LlvError(f"train.save_every must be >= 1, got {save_every}")
    if int(train_cfg.batch_size) < 1:
        raise LlvError(f"train.batch_size must be >= 1, got {train_cfg.batch_size}")
    settings = _optimizer_settings(train_cfg)
    numbers = {"lr": settings["lr"], "momentum": settings["momentum"],
               "weight_decay": settings["weight_decay"], "gamma": train_cfg.get("gamma", 0.1),
               "sam.rho": settings["sam_rho"], "sam.eta": settings["sam_eta"]}
    for name, value in numbers.items():
        if not math.isfinite(float(value)):
            raise LlvError(f"train.{name} must be a finite number, got {value}")
    if not float(train_cfg.lr) > 0:
        raise LlvError(f"train.lr must be > 0, got {train_cfg.lr}")
    if str(cfg.dataset.get("name")) == "digits":  # its split's sizes are known without reading
        from llv.data.digits import check_config

        check_config(cfg.dataset)
    return epochs, save_every


def _optimizer_settings(train_cfg) -> dict:
    """``train.*`` as the keyword arguments of :func:`llv.training.build_optimizer`."""
    sam = train_cfg.get("sam") or {}
    return {"kind": str(train_cfg.optimizer), "lr": float(train_cfg.lr),
            "momentum": float(train_cfg.get("momentum", 0.9)),
            "nesterov": bool(train_cfg.get("nesterov", True)),
            "weight_decay": float(train_cfg.get("weight_decay", 0.0)),
            "sam_base": str(sam.get("base", "sgd")), "sam_rho": float(sam.get("rho", 0.05)),
            "sam_adaptive": bool(sam.get("adaptive", False)), "sam_eta": float(sam.get("eta", 0.01))}


def _lock(run_dir: Path, stack: contextlib.ExitStack) -> None:
    """Take ``run_dir``'s writer lock for the rest of the run; remove killed runs' temporaries."""
    from llv.fsio import check_output_dir, clean_stale_temps
    from llv.runlock import RunLock

    check_output_dir(run_dir)
    stack.enter_context(RunLock(run_dir))
    for stale in clean_stale_temps(run_dir, recursive=True):
        log.info("removed %s (left by a run that was killed while writing)", stale)


def _refuse_other_command(run_dir: Path) -> None:
    """``out=`` must not be another command's run: its ``config.yaml`` would be overwritten."""
    import yaml

    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # no readable config: nothing of another command's to protect
    command = saved.get("command") if isinstance(saved, dict) else None
    if command and command != "train":
        raise LlvError(f"{run_dir} holds a `llv {command}` run: pass another out= for training")


def _refuse_existing_run(run_dir: Path) -> None:
    """A fresh run must not mix its checkpoints with an older run's in the same ``out=``."""
    found = last_checkpoint(run_dir)
    if found is not None:
        raise LlvError(f"{run_dir} already holds a training run (up to epoch {found[0]}): "
                       "continue it with train.resume=true, or pass another out=")


# ---------------------------------------------------------------------------------- resume


def _resume_dir(cfg) -> Path:
    """The run ``train.resume=true`` continues: ``out=``, else the newest training run."""
    if cfg.get("out"):
        return Path(str(cfg.out))
    latest = Path(str(cfg.get("outputs") or "outputs")) / "train" / "latest"
    if not latest.is_dir():
        raise LlvError(f"train.resume=true needs a run to continue: pass out=RUN_DIR "
                       f"({latest} does not exist)")
    run_dir = latest.resolve()
    cfg.out = str(run_dir)  # make_run_dir then reuses it
    return run_dir


def _check_resume(cfg, run_dir: Path, epochs: int) -> None:
    """Refuse, before any work, a resume of a folder that holds no training run, one whose
    recorded settings differ from ``cfg``'s (except :data:`RESUME_FREE`), and a
    ``train.epochs`` below the epochs it has trained."""
    from llv.tasks._checkpoints import run_config

    found = last_checkpoint(run_dir)
    stored, source = _stored_config(run_dir, found)
    if stored is None and found is None:
        raise LlvError(f"there is no training run in {run_dir} to resume (no config.yaml, no "
                       f"{CHECKPOINTS}/epoch_*.pt): check out=, or train anew without "
                       f"train.resume=true")
    if stored is not None:
        given = _flat(run_config(cfg))
        recorded = _flat(stored)
        first = ("model.name", "dataset.name")
        for key in [*(k for k in first if k in recorded), *(k for k in recorded if k not in first)]:
            if _free(key):
                continue
            old, new = recorded[key], given.get(key, _ABSENT)
            if not _same(key, old, new):
                raise LlvError(_differs(run_dir, source, key, old, new))
    if found is not None and found[0] > epochs:
        raise LlvError(f"cannot resume {run_dir}: it has trained {found[0]} epochs, more than "
                       f"train.epochs={epochs}: give train.epochs={found[0]} or more")


_ABSENT = object()


def _stored_config(run_dir: Path, found) -> tuple[dict | None, str]:
    """The run's recorded config: its ``config.yaml``, else its newest checkpoint's."""
    import yaml

    path = run_dir / "config.yaml"
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        saved = None
    if isinstance(saved, dict):
        return saved, str(path)
    if found is not None:
        from llv.checkpoint import load_state_dict

        _, meta = load_state_dict(found[1])
        if isinstance(meta.get("config"), dict):
            return meta["config"], str(found[1])
    return None, ""


def _flat(tree, prefix: str = "") -> dict:
    """``{"train.sam.rho": 0.05, ...}``: the leaves of nested mappings (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


def _free(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_FREE)


def _same(key: str, old, new) -> bool:
    """Whether a recorded value and a given one mean the same setting."""
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool) and old == new
    if isinstance(old, int | float) and isinstance(new, int | float):
        return float(old) == float(new) or (math.isnan(float(old)) and math.isnan(float(new)))
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        return len(old) == len(new) and all(_same(key, a, b) for a, b in zip(old, new,
                                                                              strict=True))
    if isinstance(old, str) and isinstance(new, str):
        if key in _CASELESS:
            return old.lower() == new.lower()
        if key == "dataset.path":  # the same file, however it was spelled
            return Path(old).expanduser().resolve() == Path(new).expanduser().resolve()
    return old == new


def _show(value) -> str:
    if value is _ABSENT:
        return "(not set)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _differs(run_dir: Path, source: str, key: str, old, new) -> str:
    old_text, new_text = _show(old), _show(new)
    if key == "model.name":
        return (f"cannot resume {run_dir}: it trains model {old_text}, which does not fit model "
                f"{new_text}: resume with model={old_text}, or pass another out=")
    if key == "dataset.name":
        return (f"cannot resume {run_dir}: it trains on dataset {old_text}, not dataset "
                f"{new_text}: resume with dataset={old_text}, or pass another out=")
    return (f"cannot resume {run_dir}: it was trained with {key}={old_text}, not "
            f"{key}={new_text} ({source}); a resumed run keeps the settings that define it "
            f"(train.epochs may grow): resume with {key}={old_text}, or pass another out=")


def _resume(cfg, run_dir: Path, model, optimizer, scheduler,
            generator) -> tuple[Path, int, list[dict]]:
    """Restore the newest checkpoint of ``run_dir`` into the training objects.

    Returns the run directory, the epoch reached and the metrics rows up to that epoch.
    """
    from llv.checkpoint import load_into
    from llv.config import make_run_dir
    from llv.training import load_scheduler_state, set_rng_state

    found = last_checkpoint(run_dir)
    if found is None:
        log.info("nothing to resume in %s (no %s/epoch_*.pt): training from the start",
                 run_dir, CHECKPOINTS)
        return make_run_dir(cfg), 0, []
    epoch, path = found
    meta = load_into(model, path, model_name=cfg.model.name)
    trained = (meta.get("model"), meta.get("dataset"))
    if trained != (cfg.model.name, cfg.dataset.name):
        raise LlvError(f"cannot resume {run_dir}: it trains {trained[0]} on {trained[1]}, "
                       f"not {cfg.model.name} on {cfg.dataset.name}")
    if not all(key in meta for key in ("optimizer", "scheduler", "rng")):
        raise LlvError(f"cannot resume from {path}: it has no optimizer/scheduler/rng state")
    if epoch > int(cfg.train.epochs):
        raise LlvError(f"cannot resume {run_dir}: it is at epoch {epoch}, "
                       f"beyond train.epochs={cfg.train.epochs}")
    try:
        optimizer.load_state_dict(meta["optimizer"])
        load_scheduler_state(scheduler, meta["scheduler"])
    except (ValueError, KeyError, RuntimeError) as exc:
        raise LlvError(f"cannot resume from {path}: its optimizer state does not fit "
                       f"train.optimizer={cfg.train.optimizer} ({' '.join(str(exc).split())})"
                       ) from None
    set_rng_state(meta["rng"], generator)
    # Rows of epochs after the checkpoint were computed by the stopped run and are redone.
    rows = [r for r in read_metrics(run_dir / METRICS) if int(r["epoch"]) <= epoch]
    if not rows or int(rows[-1]["epoch"]) != epoch:
        rows.append(dict(meta.get("metrics") or {}, epoch=epoch))
    run_dir = make_run_dir(cfg)
    _write_metrics(run_dir / METRICS, rows)
    log.info("resuming %s from epoch %d (%s)", run_dir, epoch, path.name)
    return run_dir, epoch, rows


def resume_command(run_dir: Path) -> str:
    """The one-line command that continues ``run_dir``: this process's ``llv train`` overrides
    (when it was started from the command line) with ``train.resume=true out=RUN_DIR``."""
    from llv.runlock import command_line_overrides, override_key

    kept = [o for o in command_line_overrides("train")
            if override_key(o) not in ("out", "train.resume")]
    return shlex.join(["llv", "train", *kept, "train.resume=true", f"out={run_dir}"])


def _report_stop(stop: KeyboardInterrupt, where: _Reached, epochs: int) -> None:
    """Say where training stopped and print the command that continues it (a line of its own,
    never wrapped, so it can be copied); a stop signal other than Ctrl-C exits with 128 + its
    number (143 for SIGTERM), as a shell reports a process the signal ended."""
    from llv.runlock import exit_code, signal_name

    if where.run_dir is None:
        log.warning("%s stopped training before it wrote anything", signal_name(stop))
    else:
        saved = last_checkpoint(where.run_dir)
        kept = ("no checkpoint yet" if saved is None
                else f"the checkpoints up to epoch {saved[0]} are saved")
        log.warning("%s stopped training in epoch %d of %d; %s", signal_name(stop), where.epoch,
                    epochs, kept)
        print(f"llv: continue with: {resume_command(where.run_dir)}", file=sys.stderr, flush=True)
    code = exit_code(stop)
    if code != 130:  # the command line reports Ctrl-C (130) itself
        raise SystemExit(code) from None


# --------------------------------------------------------------------------------- metrics


def _row(epoch: int, lr: float, metrics: dict, seconds: float) -> dict:
    return {"epoch": epoch, "lr": lr, **metrics, "seconds": seconds}


def _format(row: dict) -> list[str]:
    def number(value, spec: str) -> str:
        value = float(value)
        return format(value, spec) if math.isfinite(value) else str(value)

    return [str(int(row["epoch"])), number(row["lr"], ".6g"),
            *(number(row[c], ".8g") for c in METRICS_COLUMNS[2:6]),
            number(row["seconds"], ".3f")]


def _write_metrics(path: Path, rows: list[dict]) -> None:
    """The whole table, atomically (a few hundred rows at most: rewriting is cheap)."""
    from llv.fsio import atomic_write

    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(METRICS_COLUMNS)
        writer.writerows(_format(r) for r in rows)

    atomic_write(path, write, "metrics table", text=True)
