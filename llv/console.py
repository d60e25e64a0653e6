"""Console output: rich logging, progress bars, tables, and the one-line user error.

Tasks never ``print``; they log through :data:`log` and report long loops with
:func:`progress`. Only rank 0 of a distributed job shows anything (see :func:`configure`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from llv.errors import LlvError

__all__ = ["LlvError", "configure", "error_line", "log", "print_table", "progress"]

log = logging.getLogger("llv")

_state = {"quiet": False, "verbose": False, "rank": 0}
console = Console(stderr=True)
stdout_console = Console()


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
        handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False


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
    """A rich progress bar (done/total, rate, ETA) on rank 0; silent elsewhere or with ``-q``."""
    if not shows_output() or total <= 0:
        yield _Progress(None, None)
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
    stdout_console.print(table)


def _format_cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
