"""``llv train``: train a model, keeping a checkpoint per epoch, a metrics table and ``final.pt``.

The run directory holds ``checkpoints/epoch_NNN.pt`` (epoch 0 before training, then every
``train.save_every`` epochs and the last), ``metrics.csv`` (one row per epoch, epoch 0 included)
and ``final.pt``. Epoch checkpoints also store the optimizer, scheduler and random-number
states, so ``train.resume=true out=RUN_DIR`` (default: the newest run) continues a stopped run
and ends with the same weights as an uninterrupted one (bit-identical on the CPU).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
import time
from pathlib import Path

from llv.console import LlvError, log, progress

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def run(cfg) -> Path:
    """Train ``cfg.model`` on ``cfg.dataset`` as ``cfg.train`` says; return the run directory."""
    import torch

    from llv.checkpoint import save_checkpoint
    from llv.config import make_run_dir
    from llv.data import load_eval_data, load_split
    from llv.device import resolve_device
    from llv.models import build_model
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
    epochs, save_every = _check_settings(cfg)
    device = resolve_device(cfg.get("device", "auto"))
    seed = int(cfg.get("seed", 0))

    # Data first: a missing data set is one line, before any run directory exists.
    train_set = load_split(cfg.dataset, "train", augment=bool(train_cfg.get("augment", False)))
    eval_data = {split: load_eval_data(cfg.dataset, split, device=device, dtype=torch.float32)
                 for split in ("train", "test")}

    torch.manual_seed(seed)  # Kaiming init inside build_model draws from this stream
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=int(train_cfg.batch_size), shuffle=True, generator=generator,
        num_workers=int(train_cfg.get("num_workers", 0)), pin_memory=device.type == "cuda")
    if len(loader) == 0:
        raise LlvError(f"the {cfg.dataset.name} training split is empty")

    if train_cfg.get("resume"):
        run_dir, start = _resume(cfg, model, optimizer, scheduler, generator)
    else:
        _refuse_existing_run(cfg)
        run_dir, start = make_run_dir(cfg), 0
    checkpoints = run_dir / "checkpoints"
    metrics_path = run_dir / "metrics.csv"

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
        save_checkpoint(checkpoints / f"epoch_{epoch:03d}.pt", model, epoch, cfg, metrics, extra)

    log.info("training %s on %s: %d epochs, %s lr %g, batch %d, %d training images, "
             "device %s -> %s",
             cfg.model.name, cfg.dataset.name, epochs, train_cfg.optimizer, float(train_cfg.lr),
             int(train_cfg.batch_size), len(train_set), device, run_dir)
    if start == 0:
        began = time.perf_counter()
        metrics = evaluate_all()
        row = _row(0, current_lr(optimizer), metrics, time.perf_counter() - began)
        _write_metrics(metrics_path, [row])
        save_epoch(0, row)
    elif start == epochs and (run_dir / "final.pt").is_file():
        log.info("%s is complete (epoch %d of %d); nothing to do", run_dir, start, epochs)
        return run_dir
    else:
        row = _read_metrics(metrics_path)[-1]

    steps = len(loader)
    warned = False
    epoch = start
    with _resume_hint(run_dir, lambda: epoch), \
            progress(epochs * steps, "train", unit="steps", completed=start * steps) as bar:
        for epoch in range(start + 1, epochs + 1):
            began = time.perf_counter()
            lr = current_lr(optimizer)
            running_loss, running_acc = train_epoch(model, loader, optimizer, device,
                                                    on_step=bar.advance)
            scheduler.step()
            metrics = evaluate_all()
            row = _row(epoch, lr, metrics, time.perf_counter() - began)
            _append_metrics(metrics_path, row)
            if epoch % save_every == 0 or epoch == epochs:
                save_epoch(epoch, row)
            bar.update(info=f"epoch {epoch}/{epochs} loss {running_loss:.4f} "
                            f"acc {running_acc:.1f}% test {metrics['test_acc']:.1f}%")
            log.debug("epoch %d: %s", epoch, row)
            if not warned and not math.isfinite(running_loss):
                log.warning("training loss is %s in epoch %d (diverged?): try a smaller train.lr",
                            running_loss, epoch)
                warned = True

    final = save_checkpoint(run_dir / "final.pt", model, epochs, cfg, row)
    log.info("saved %s (test acc %.2f %%)", final, row["test_acc"])
    return run_dir


@contextlib.contextmanager
def _resume_hint(run_dir: Path, current_epoch):
    """On Ctrl-C, say how to continue (the checkpoints written so far are complete files)."""
    try:
        yield
    except KeyboardInterrupt:
        log.info("stopped in epoch %d; continue with: llv train train.resume=true out=%s "
                 "(and the same overrides)", current_epoch(), run_dir)
        raise


def _check_settings(cfg) -> tuple[int, int]:
    train_cfg = cfg.train
    epochs, save_every = int(train_cfg.epochs), int(train_cfg.get("save_every", 1))
    if epochs < 0:
        raise LlvError(f"train.epochs must be >= 0, got {epochs}")
    if save_every < 1:
        raise LlvError(f"train.save_every must be >= 1, got {save_every}")
    if int(train_cfg.batch_size) < 1:
        raise LlvError(f"train.batch_size must be >= 1, got {train_cfg.batch_size}")
    if float(train_cfg.lr) <= 0:
        raise LlvError(f"train.lr must be > 0, got {train_cfg.lr}")
    return epochs, save_every


# ---------------------------------------------------------------------------------- resume


def last_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """The highest ``(epoch, path)`` among ``run_dir/checkpoints/epoch_NNN.pt``, or None."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("epoch_*.pt")
             if (m := _EPOCH_FILE.match(p.name))]
    return max(found) if found else None


def _refuse_existing_run(cfg) -> None:
    """A fresh run must not mix its checkpoints with an older run's in the same ``out=``."""
    if not cfg.get("out"):
        return
    found = last_checkpoint(Path(str(cfg.out)))
    if found is not None:
        raise LlvError(f"{cfg.out} already holds a training run (up to epoch {found[0]}): continue "
                       "it with train.resume=true, or pass another out=")


def _resume(cfg, model, optimizer, scheduler, generator) -> tuple[Path, int]:
    """Restore the newest checkpoint of ``cfg.out`` into the training objects; return its epoch."""
    from llv.checkpoint import load_into
    from llv.config import make_run_dir
    from llv.training import load_scheduler_state, set_rng_state

    if cfg.get("out"):
        run_dir = Path(str(cfg.out))
    else:  # the newest training run
        latest = Path(str(cfg.get("outputs") or "outputs")) / "train" / "latest"
        if not latest.is_dir():
            raise LlvError(f"train.resume=true needs a run to continue: pass out=RUN_DIR "
                           f"({latest} does not exist)")
        run_dir = latest.resolve()
        cfg.out = str(run_dir)  # make_run_dir then reuses it
    found = last_checkpoint(run_dir)
    if found is None:
        log.info("nothing to resume in %s (no checkpoints/epoch_*.pt): training from the start",
                 run_dir)
        return make_run_dir(cfg), 0
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
    metrics_path = run_dir / "metrics.csv"
    rows = [r for r in _read_metrics(metrics_path) if int(r["epoch"]) <= epoch]
    if not rows or int(rows[-1]["epoch"]) != epoch:
        rows.append(dict(meta.get("metrics") or {}, epoch=epoch))
    run_dir = make_run_dir(cfg)
    _write_metrics(metrics_path, rows)
    log.info("resuming %s from epoch %d (%s)", run_dir, epoch, path.name)
    return run_dir, epoch


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(METRICS_COLUMNS)
        writer.writerows(_format(r) for r in rows)
    os.replace(tmp, path)


def _append_metrics(path: Path, row: dict) -> None:
    with open(path, "a", newline="") as handle:
        csv.writer(handle).writerow(_format(row))


def _read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(handle)]
