"""One small interface over no distribution, MPI (mpi4py) and torch.distributed.

Grid evaluation needs few collectives: ``bcast`` (run directory, pending points), ``allgather``
(a chunk of results from every rank, so every rank also learns of a failure), ``barrier`` and
``close``. Messages are small Python objects (a chunk of floats).

Failures never leave a job hanging:

- a step every rank takes (loading the checkpoint, a chunk of points) ends with
  :meth:`Comm.agree` or :meth:`Comm.raise_failures`: if any rank failed, every rank raises the
  same error, which names the rank, and the job ends normally with that one message;
- a rank that fails on its own (rank 0 making directions, say) reaches :meth:`Comm.close` with
  its exception in flight; it prints ``rank R of N failed: ...`` and stops the whole job (MPI:
  ``Abort``; torchrun: the process exits and torchrun stops the other workers);
- a rank that is killed is noticed by the launcher (``mpiexec``, ``torchrun``) or, failing that,
  by the others after ``dist.timeout_s`` seconds without an answer.
"""

from __future__ import annotations

import datetime
import os
import sys
import time

from llv.console import LlvError, error_line, log

BACKENDS = ("auto", "none", "mpi", "torch")

#: environment variables set by MPI launchers (MPICH/Intel hydra, Open MPI, MVAPICH, srun PMI/PMIx)
MPI_ENV = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_MPI_SIZE_ENV = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


class LostRankError(RuntimeError):
    """This rank waited in a collective for another rank that failed, hangs or was killed."""


def failure(exc: BaseException, rank: int) -> tuple[int, str, bool]:
    """A rank's failure as a small message: ``(rank, one-line text, is a user error)``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return rank, text, isinstance(exc, LlvError)


class Comm:
    """A single process: every collective is the identity."""

    backend = "none"
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    timeout_s = 600.0
    _shared: BaseException | None = None
    _closed = False

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def bcast(self, obj, root: int = 0):
        return obj

    def allgather(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass

    # -- failures -----------------------------------------------------------------------------

    def agree(self, error: BaseException | None) -> None:
        """Collective: every rank says whether its part of a step failed; if any did, all raise.

        Args:
            error: this rank's exception, or None where its part succeeded.

        >>> Comm().agree(None)
        """
        if self.size == 1:
            if error is not None:
                raise error
            return
        gathered = self.allgather(None if error is None else failure(error, self.rank))
        try:
            self.raise_failures([f for f in gathered if f is not None])
        except BaseException as shared:
            shared.__cause__ = error  # this rank's own traceback, for -v
            raise

    def raise_failures(self, failures: list[tuple[int, str, bool]]) -> None:
        """Raise on this rank the failure(s) that every rank has seen (from :func:`failure`).

        The error names the first failed rank, unless all ranks failed alike; it is an
        :class:`LlvError` (one line, exit 2) where that rank's error was one.
        """
        if not failures:
            return
        failures = sorted(failures)
        rank, text, user_error = failures[0]
        alike = len(failures) == self.size and all(f[1] == text for f in failures)
        prefix = "" if self.size == 1 or alike else f"rank {rank} failed: "
        exc = (LlvError if user_error else RuntimeError)(prefix + text)
        self._shared = exc
        raise exc

    def root_call(self, fn, *args):
        """``fn(*args)`` on rank 0, its result broadcast; its error raised on every rank."""
        if self.size == 1:
            return fn(*args)
        outcome = None
        if self.is_root:
            try:
                outcome = ("ok", fn(*args))
            except Exception as exc:
                outcome = ("error", failure(exc, self.rank))
        kind, value = self.bcast(outcome)
        if kind == "error":
            self.raise_failures([value])
        return value

    def close(self) -> None:
        """End this rank's part; if it is failing on its own, stop every rank instead of hanging.

        Call it in a ``finally`` (or ``except``) block: an exception in flight that the other
        ranks do not know about (see :meth:`agree`) ends the whole job with one message.
        """
        if self._closed:
            return
        self._closed = True
        exc = sys.exc_info()[1]
        if exc is not None and self.size > 1 and not self._known_to_all(exc):
            self._stop_everyone(exc)
        self._shutdown()

    def _known_to_all(self, exc: BaseException | None) -> bool:
        seen = set()
        while exc is not None and id(exc) not in seen:
            if exc is self._shared:
                return True
            seen.add(id(exc))
            exc = exc.__cause__ or exc.__context__
        return False

    def _stop_everyone(self, exc: BaseException) -> None:
        if isinstance(exc, LostRankError):
            self._abort(1, f"rank {self.rank} of {self.size}: {exc}; stopping all ranks")
        text = "interrupted" if isinstance(exc, KeyboardInterrupt) else failure(exc, self.rank)[1]
        self._abort(
            2 if isinstance(exc, LlvError) else 1,
            f"rank {self.rank} of {self.size} failed: {text}; stopping all ranks",
        )

    def _abort(self, code: int, message: str) -> None:
        """Print ``message``, end this process now; the launcher stops the other ranks."""
        error_line(message, every_rank=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._end_job(code)

    def _end_job(self, code: int) -> None:
        os._exit(code)

    def _shutdown(self) -> None:
        pass


#: seconds a rank that stops an MPI job waits for mpiexec to forward its last line
ABORT_GRACE_S = 0.5


class MpiComm(Comm):
    """MPI through mpi4py. Waiting ranks poll (and sleep) instead of spinning on a core."""

    backend = "mpi"

    def __init__(self, timeout_s: float = 600.0):
        try:
            from mpi4py import MPI
        except ImportError:
            raise LlvError(
                "dist=mpi needs mpi4py: pip install 'llv[mpi]' (brings the mpich wheel)"
            ) from None
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        local = self._comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = local.Get_rank()
        self.local_size = local.Get_size()
        local.Free()
        self.timeout_s = float(timeout_s)

    def _wait_for_all(self) -> None:
        """Return once every rank has reached this point; stop the job after ``timeout_s``."""
        if self.size == 1:
            return
        request = self._comm.Ibarrier()
        deadline = time.monotonic() + self.timeout_s
        pause = 1e-4
        while not request.Test():
            if time.monotonic() > deadline:
                self._abort(
                    1,
                    f"rank {self.rank} of {self.size}: no answer from the other ranks for "
                    f"dist.timeout_s={self.timeout_s:g} s (one failed, hangs or was killed); "
                    "stopping all ranks",
                )
            time.sleep(pause)
            pause = min(2 * pause, 0.01)

    def bcast(self, obj, root: int = 0):
        self._wait_for_all()
        return self._comm.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        self._wait_for_all()
        return self._comm.allgather(obj)

    def barrier(self) -> None:
        self._wait_for_all()

    def _end_job(self, code: int) -> None:
        # mpiexec forwards a rank's output from a pipe; Abort makes it stop every process at
        # once, and on a loaded machine the line just printed was sometimes lost with them
        # (seen in CI: the job ended without its "rank 1 of 2 failed" line). A moment first.
        time.sleep(ABORT_GRACE_S)
        self._comm.Abort(code)
        os._exit(code)  # MPICH's Abort may return before mpiexec has stopped this process


class TorchComm(Comm):
    """torch.distributed: gloo on CPU, nccl with one GPU per local rank."""

    backend = "torch"

    def __init__(self, use_cuda: bool, timeout_s: float = 600.0):
        import torch
        import torch.distributed as dist

        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        self.timeout_s = float(timeout_s)
        self._device_ids = None
        if use_cuda:
            gpus = torch.cuda.device_count()
            if self.local_size > gpus:
                raise LlvError(
                    f"{self.local_size} ranks on this node but {gpus} GPU(s): nccl needs one GPU "
                    f"per rank; use --nproc-per-node {gpus} or device=cpu (gloo)"
                )
            torch.cuda.set_device(self.local_rank)
            self._device_ids = [self.local_rank]
        if not dist.is_initialized():
            dist.init_process_group(
                "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=self.timeout_s)
            )
        self._dist = dist
        self.rank = dist.get_rank()
        self.size = dist.get_world_size()

    def _collective(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as exc:  # gloo/nccl: a peer closed its connection or timed out
            raise LostRankError(
                f"lost contact with another rank: it failed or was killed (see its "
                f"message), or said nothing for dist.timeout_s={self.timeout_s:g} s"
            ) from exc

    def bcast(self, obj, root: int = 0):
        box = [obj]
        self._collective(self._dist.broadcast_object_list, box, src=root)
        return box[0]

    def allgather(self, obj) -> list:
        out = [None] * self.size
        self._collective(self._dist.all_gather_object, out, obj)
        return out

    def barrier(self) -> None:
        self._collective(self._dist.barrier, device_ids=self._device_ids)

    def _shutdown(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def detect() -> str:
    """The launcher of this process, from its environment: ``mpi``, ``torch`` or ``none``.

    >>> detect() in ("mpi", "torch", "none")
    True
    """
    env = os.environ
    if "TORCHELASTIC_RUN_ID" in env or all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        return "torch"
    if any(k in env for k in MPI_ENV):
        return "mpi"
    return "none"


def _launcher_size() -> int:
    for key in _MPI_SIZE_ENV:
        if key in os.environ:
            try:
                return int(os.environ[key])
            except ValueError:
                pass
    return 0


def _has_mpi4py() -> bool:
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def init(backend: str = "auto", use_cuda: bool = False, timeout_s: float = 600) -> Comm:
    """Start the chosen backend (``auto`` detects mpiexec/srun or torchrun).

    Args:
        backend: ``auto``, ``none``, ``mpi`` or ``torch``.
        use_cuda: torch backend: nccl with one GPU per local rank (else gloo).
        timeout_s: how long a rank waits for the others in a collective before it stops the job.
    """
    if backend not in BACKENDS:
        raise LlvError(f"unknown dist backend '{backend}'; valid: {', '.join(BACKENDS)}")
    chosen = detect() if backend == "auto" else backend
    if backend == "auto" and chosen == "mpi" and _launcher_size() == 1 and not _has_mpi4py():
        chosen = "none"  # one task under srun/mpiexec -n 1 without mpi4py: nothing to share
    if chosen == "none":
        _refuse_bare_srun(backend)
        return Comm()
    if chosen == "mpi":
        comm = MpiComm(timeout_s)
        _share_cpu_threads(comm)
    else:
        if "MASTER_ADDR" not in os.environ and "TORCHELASTIC_RUN_ID" not in os.environ:
            raise LlvError(
                "dist=torch needs a torchrun launch: torchrun --nproc-per-node N -m llv ..."
            )
        comm = TorchComm(use_cuda, timeout_s)
    log.debug(
        f"distributed: backend={comm.backend} rank={comm.rank}/{comm.size} "
        f"local {comm.local_rank}/{comm.local_size}"
    )
    return comm


def _refuse_bare_srun(backend: str) -> None:
    """``srun -n N`` without PMI would start N independent runs writing the same files."""
    tasks = os.environ.get("SLURM_STEP_NUM_TASKS")
    if backend == "auto" and tasks and tasks.isdigit() and int(tasks) > 1:
        raise LlvError(
            f"srun started {tasks} tasks but none of them sees an MPI environment: use "
            "srun --mpi=pmix (or pmi2) with mpi4py, or torchrun, or dist=none for independent runs"
        )


def _share_cpu_threads(comm: Comm) -> None:
    """MPI ranks on one node share its cores (torchrun sets OMP_NUM_THREADS=1 itself)."""
    if comm.local_size <= 1 or "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    torch.set_num_threads(max(1, cores // comm.local_size))
