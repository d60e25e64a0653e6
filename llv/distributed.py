"""One small interface over no distribution, MPI (mpi4py) and torch.distributed.

Grid evaluation only needs four collectives: ``bcast`` (run directory, pending points),
``allgather`` (a chunk of results from every rank, so every rank also learns of a failure),
``barrier`` and ``close``. Messages are small Python objects (a chunk of floats).
"""

from __future__ import annotations

import datetime
import os

from llv.console import LlvError, log

BACKENDS = ("auto", "none", "mpi", "torch")


class Comm:
    """A single process: every collective is the identity."""

    backend = "none"
    rank = 0
    size = 1
    local_rank = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def bcast(self, obj, root: int = 0):
        return obj

    def allgather(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    def close(self) -> None:
        pass


class MpiComm(Comm):
    backend = "mpi"

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError:
            raise LlvError("dist=mpi needs mpi4py: pip install 'llv[mpi]' (brings the mpich wheel)") from None
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        local = self._comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = local.Get_rank()
        local.Free()

    def bcast(self, obj, root: int = 0):
        return self._comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        return self._comm.allgather(obj)

    def barrier(self) -> None:
        self._comm.Barrier()


class TorchComm(Comm):
    backend = "torch"

    def __init__(self, use_cuda: bool, timeout_s: float):
        import torch
        import torch.distributed as dist

        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if use_cuda:
            torch.cuda.set_device(self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
        self._dist = dist
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def bcast(self, obj, root: int = 0):
        box = [obj]
        self._dist.broadcast_object_list(box, src=root)
        return box[0]

    def allgather(self, obj) -> list:
        out = [None] * self.size
        self._dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self._dist.barrier()

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def detect() -> str:
    """The launcher of this process, from its environment: ``mpi``, ``torch`` or ``none``."""
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or ("RANK" in env and "WORLD_SIZE" in env and "MASTER_ADDR" in env):
        return "torch"
    for key in ("PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMI_RANK"):
        if key in env:
            return "mpi"
    return "none"


def init(backend: str = "auto", use_cuda: bool = False, timeout_s: float = 600) -> Comm:
    """Start the chosen backend (``auto`` detects mpiexec/srun or torchrun)."""
    if backend not in BACKENDS:
        raise LlvError(f"unknown dist backend '{backend}'; valid: {', '.join(BACKENDS)}")
    chosen = detect() if backend == "auto" else backend
    if chosen == "none":
        return Comm()
    if chosen == "mpi":
        comm = MpiComm()
    else:
        if "MASTER_ADDR" not in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ:
            raise LlvError("dist=torch needs a torchrun launch: torchrun --nproc-per-node N -m llv ...")
        comm = TorchComm(use_cuda, timeout_s)
    log.debug(f"distributed: backend={comm.backend} rank={comm.rank}/{comm.size}")
    return comm
