"""Console output: rich logging, progress bars, tables, and the one-line user error.

Tasks never ``print``; they log through :data:`log` and report long loops with
:func:`progress`. Only rank 0 of a distributed job shows anything (see :func:`configure`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from llv.errors import LlvError

__all__ = ["LlvError", "configure", "error_line", "link_latest", "log", "print_table", "progress"]

log = logging.getLogger("llv")

_state = {"quiet": False, "verbose": False, "rank": 0}
console = Console(stderr=True)
stdout_console = Console()

# Seconds between two plain progress lines when stderr is not a terminal (a log file, CI).
PLAIN_PROGRESS_SECONDS = 5.0


def configure(quiet: bool | None = None, verbose: bool | None = None, rank: int | None = None) -> None:
    """Set verbosity and the rank; ranks other than 0 only log errors."""
    if quiet is not None:
        _state["quiet"] = quiet
    if verbose is not None:
        _state["verbose"] = verbose
    if rank is not None:
        _state["rank"] = rank
    level = logging.INFO
    if _state["verbose"]:
        level = logging.DEBUG
    if _state["quiet"] or _state["rank"] != 0:
        level = logging.ERROR
    log.setLevel(level)
    if not log.handlers:
        if console.is_terminal:
            handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:  # a log file: whole lines, as rich lays them out but never wrapped at 80 columns
            handler = logging.StreamHandler(_Stderr())
            handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
        log.addHandler(handler)
        log.propagate = False


class _Stderr:
    """Whatever ``sys.stderr`` is at the time of writing (tests and tools replace it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def is_verbose() -> bool:
    return bool(_state["verbose"])


def shows_output() -> bool:
    """True where this process should draw progress bars and tables."""
    return not _state["quiet"] and _state["rank"] == 0


def error_line(message: str, every_rank: bool = False) -> None:
    """Print a user error as one line on stderr (even with ``-q``), from rank 0 only: errors that
    reach the command line are known to every rank, and one line is enough. A failure only this
    rank knows of (``every_rank=True``) prints wherever it happens."""
    if _state["rank"] != 0 and not every_rank:
        return
    first = " ".join(str(message).split())
    print(f"llv: error: {first}", file=sys.stderr)


class _Progress:
    def __init__(self, bar, task_id):
        self._bar = bar
        self._task = task_id

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, **fields) -> None:
        if self._bar is not None:
            self._bar.update(self._task, **fields)


@contextlib.contextmanager
def progress(total: int, description: str, unit: str = "points", completed: int = 0) -> Iterator[_Progress]:
    """Progress of a long loop (done/total, rate, ETA) on rank 0; silent elsewhere or with ``-q``.

    On a terminal this is a rich progress bar. When stderr is not a terminal (a log file, CI) it
    is a plain line every :data:`PLAIN_PROGRESS_SECONDS` and one at the end, never cut to the
    width of a terminal.
    """
    if not shows_output() or total <= 0:
        yield _Progress(None, None)
        return
    if not console.is_terminal:
        plain = _PlainProgress(total, description, unit, completed, sys.stderr)
        try:
            yield plain
        finally:
            plain.finish()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task_id = bar.add_task(description, total=total, completed=completed, rate="", info="")
        handle = _RateProgress(bar, task_id, unit)
        yield handle


def _clock(seconds: float) -> str:
    """``H:MM:SS``.

    >>> _clock(3725.4)
    '1:02:05'
    """
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _PlainProgress(_Progress):
    """Progress as plain log lines: ``surface: 120/441 (27%) 9.7 points/s elapsed 0:00:12 ETA 0:00:33``.

    The rate counts only the work done in this process (a resumed run starts at ``completed``).
    """

    def __init__(self, total: int, description: str, unit: str, completed: int, stream,
                 every: float | None = None):
        super().__init__(None, None)
        self.total, self.description, self.unit = int(total), description, unit
        self.done = self.start_done = int(completed)
        self.stream = stream
        self.every = PLAIN_PROGRESS_SECONDS if every is None else every
        self.info = ""
        self.started = self.last = time.monotonic()
        self.last_done = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= self.every:
            self.emit()

    def update(self, **fields) -> None:
        if "info" in fields:
            self.info = str(fields["info"])

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        work = self.done - self.start_done
        rate = work / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * self.done / self.total
        parts = [f"{self.description}: {self.done}/{self.total} ({percent:.0f}%)",
                 f"{rate:.1f} {self.unit}/s", f"elapsed {_clock(elapsed)}"]
        if self.done < self.total:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}" if rate > 0 else "ETA ?")
        if self.info:
            parts.append(self.info)
        return " ".join(parts)

    def emit(self) -> None:
        self.last, self.last_done = time.monotonic(), self.done
        print(self.line(), file=self.stream, flush=True)

    def finish(self) -> None:
        if self.done != self.last_done:
            self.emit()


class _RateProgress(_Progress):
    """Progress that shows its own rate ('12.3 points/s'), which rich's speed column lacks for units."""

    def __init__(self, bar, task_id, unit):
        super().__init__(bar, task_id)
        self._unit = unit

    def advance(self, n: int = 1) -> None:
        self._bar.advance(self._task, n)
        speed = next(t for t in self._bar.tasks if t.id == self._task).speed
        if speed:
            self._bar.update(self._task, rate=f"{speed:.1f} {self._unit}/s")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A small table on stdout (rank 0 only, silenced by ``-q``)."""
    if not shows_output():
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_format_cell(v) for v in row))
    if stdout_console.is_terminal:
        stdout_console.print(table)
    else:  # a log file has no width: whole cells, not squeezed into 80 columns
        Console(file=sys.stdout, width=1000, no_color=True).print(table)


def _format_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def link_latest(run_dir: str | os.PathLike, outputs: str | os.PathLike, command: str) -> Path | None:
    """Point ``<outputs>/<command>/latest`` at ``run_dir``, once its run has succeeded.

    Only a run directory directly inside ``<outputs>/<command>/`` gets the link: a run with
    ``out=`` elsewhere, a sweep job (``<outputs>/<command>/multirun/...``) or a failed run leaves
    ``latest`` where it was. Returns the link, or None where none was made (also on a file
    system without symbolic links).
    """
    run_dir, base = Path(run_dir), Path(outputs) / command
    try:
        if not run_dir.is_dir() or run_dir.resolve().parent != base.resolve():
            return None
        latest = base / "latest"
        tmp = base / f".latest-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(run_dir.resolve().name, tmp)
        os.replace(tmp, latest)  # atomic: a reader never sees latest missing
        return latest
    except OSError:
        return None
