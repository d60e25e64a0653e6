"""What every grid-evaluating task sets up once: ranks, device, model + checkpoint, run dir, data.

A :class:`Session` is built identically on every rank; only rank 0 creates the run directory and
writes files, and the path is broadcast so all ranks agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from llv import distributed
from llv.checkpoint import default_checkpoint, load_into, sha256
from llv.config import make_run_dir
from llv.console import LlvError, configure, log
from llv.device import resolve_device


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
        self.comm.close()


def start(cfg, result_name: str | None = None, checkpoint=None) -> Session:
    """Set up ranks, device and the model at the checkpoint; find or create the run directory.

    With ``resume=PATH`` (a result file or its run directory) or ``out=DIR`` holding
    ``result_name``, the run continues that file instead of starting a new run directory.
    """
    backend = str(cfg.dist.backend) if "dist" in cfg else "none"
    wants_cuda = str(cfg.device).startswith("cuda") or (str(cfg.device) == "auto" and torch.cuda.is_available())
    comm = distributed.init(backend, use_cuda=wants_cuda, timeout_s=float(cfg.dist.get("timeout_s", 600)))
    configure(rank=comm.rank)
    try:
        # every rank builds the model and reads the checkpoint; a failure on any rank (a path
        # missing on one node, say) is raised on all of them instead of leaving them waiting
        error, device, model, path, meta = None, None, None, None, None
        try:
            device = resolve_device(cfg.device)
            if device.type == "cuda" and comm.size > 1:
                device = torch.device("cuda", comm.local_rank % torch.cuda.device_count())
            from llv.models import build_model

            torch.manual_seed(int(cfg.seed))
            model = build_model(cfg.model)
            path = Path(str(checkpoint)) if checkpoint is not None else default_checkpoint(cfg)
            meta = load_into(model, path, str(cfg.model.name))
            model.to(device).eval()
        except Exception as exc:
            error = exc
        comm.agree(error)
        digest = comm.root_call(sha256, path)
        run_dir, existing = comm.root_call(_run_dir, cfg, result_name)
    except BaseException:
        comm.close()  # stops every rank if this one fails alone
        raise
    log.info(f"{cfg.command}: model {cfg.model.name} on {cfg.dataset.name}, checkpoint {path}, "
             f"device {device}, {comm.size} rank(s) [{comm.backend}]")
    return Session(cfg, comm, device, model, path, digest, meta, Path(run_dir),
                   Path(existing) if existing else None)


def _run_dir(cfg, result_name: str | None) -> tuple[Path, Path | None]:
    resume = cfg.get("resume")
    if resume:
        target = Path(str(resume))
        if target.is_dir() and result_name:
            target = target / result_name
        if not target.is_file():
            raise LlvError(f"resume={resume}: no such result file")
        return target.parent, target
    if cfg.get("out") and result_name and (Path(str(cfg.out)) / result_name).is_file():
        return Path(str(cfg.out)), Path(str(cfg.out)) / result_name
    return make_run_dir(cfg), None
