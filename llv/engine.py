"""The one grid runner: points, chunks, shards, resume and the storage sink; knows no Hessian.

Surfaces, interpolations, Hessian maps and trajectory surfaces all run here with their own
point function. Points not yet ``done`` in the sink are cut into chunks of ``chunk_points``;
chunk ``c`` goes to rank ``c mod world_size``. After every round each rank's chunk reaches every rank (``allgather``), so
rank 0 records and flushes results as they come and every rank learns at once if another failed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llv.console import log, progress
from llv.distributed import failure
from llv.storage.surface import SurfaceFile


@dataclass
class LoopStats:
    computed: int = 0
    nonfinite: int = 0
    seconds: float = 0.0

    @property
    def points_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")


def run_grid(comm, file: SurfaceFile | None, compute: Callable[[np.ndarray], dict[str, np.ndarray]],
             chunk_points: int = 64, description: str = "points", stop_after: int | None = None,
             show_progress: bool = True) -> LoopStats:
    """Compute every pending point of ``file`` (held by rank 0) across the ranks of ``comm``.

    ``compute(indices)`` returns ``metric -> values`` for flat point indices; losses that are not
    finite are stored as NaN and counted. ``stop_after`` ends the run after that many points (a
    later run resumes the rest).
    """
    pending = comm.bcast(file.pending() if comm.is_root else None)
    total = comm.bcast(file.num_points if comm.is_root else None)
    already = total - len(pending)  # what the progress bar starts from, whatever stop_after cuts
    if stop_after is not None:
        pending = pending[: max(int(stop_after), 0)]
    if comm.size > 1 and comm.size > len(pending) and comm.is_root:
        log.warning(f"{comm.size} ranks for {len(pending)} pending points: {comm.size - len(pending)} rank(s) stay idle")
    chunk_points = max(int(chunk_points), 1)
    chunks = [pending[i:i + chunk_points] for i in range(0, len(pending), chunk_points)]
    stats = LoopStats()
    start = time.perf_counter()
    rounds = math.ceil(len(chunks) / comm.size)
    bar_context = (progress(total, description, completed=already) if show_progress
                   else _no_progress())
    with bar_context as bar:
        try:
            for r in range(rounds):
                c = r * comm.size + comm.rank
                payload = own = None
                if c < len(chunks):
                    try:
                        payload = ("ok", chunks[c], _finite(compute(chunks[c])))
                    except Exception as exc:  # reported to every rank, then raised everywhere
                        payload, own = ("error", failure(exc, comm.rank)), exc
                gathered = comm.allgather(payload)
                failures = [p[1] for p in gathered if p is not None and p[0] == "error"]
                for p in gathered:
                    if p is None or p[0] != "ok":
                        continue
                    _, indices, (results, nonfinite) = p
                    stats.computed += len(indices)
                    stats.nonfinite += nonfinite
                    bar.advance(len(indices))
                    if file is not None:
                        file.record(indices, results)
                if file is not None:
                    file.flush()
                if failures and own is not None and comm.size == 1:
                    raise own  # one process: the error itself, its type and traceback (a user's
                    # model or loss failing must read as in their own code)
                try:
                    comm.raise_failures(failures)
                except BaseException as shared:
                    shared.__cause__ = own  # this rank's own traceback, where it failed too
                    raise
        finally:
            if file is not None:
                file.flush(force=True)
    stats.seconds = time.perf_counter() - start
    return stats


@contextlib.contextmanager
def _no_progress():
    class _Silent:
        def advance(self, n: int = 1) -> None:
            pass

    yield _Silent()


def _finite(results: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    out, bad = {}, np.zeros(0, dtype=bool)
    for name, values in results.items():
        values = np.asarray(values, dtype=np.float64)
        mask = ~np.isfinite(values)
        if name.endswith("_loss") or name.endswith("_eig"):
            bad = mask if bad.size == 0 else (bad | mask)
        out[name] = np.where(mask, np.nan, values)
    return out, int(bad.sum())
