"""A run's lifetime: one writer per run folder (an advisory lock), and stop signals as exceptions.

:class:`RunLock` is held by the process that writes a run folder (rank 0 of a distributed job)
from before its first write to its end. A second writer is refused with one line naming the
holder; readers (``llv plot``) never take it. The lock is ``flock`` on ``RUN/.llv.lock``: the
kernel drops it when its process ends in any way (``kill -9`` included), so a lock file left by a
dead process never blocks; the PID, host, command and start time written into the file are only
for the message.

:func:`stop_signals` turns SIGTERM (a batch scheduler's stop) into :class:`Stopped`, a
``KeyboardInterrupt``, so the code that saves state on Ctrl-C also runs for it; :func:`held_signals`
postpones both until a critical write (a checkpoint) is done.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from llv.errors import LlvError

LOCK_NAME = ".llv.lock"

_held: dict[str, list] = {}  # real path of a lock file -> [open fd, depth] for this process
_held_guard = threading.Lock()


class RunLock:
    """Hold ``run_dir``'s writer lock while the ``with`` block runs (re-entrant per process).

    >>> import tempfile
    >>> run = tempfile.mkdtemp()
    >>> with RunLock(run, "llv train out=RUN") as lock:
    ...     RunLock.holder(run)["command"]
    'llv train out=RUN'

    Args:
        run_dir: The run folder; created if missing (the lock comes before any other file).
        command: The command line shown to a refused second writer (default: ``sys.argv``).

    Raises:
        LlvError: Another live process holds the lock (one line: its PID, host, command and
            since when), or the folder cannot be created or written.
    """

    def __init__(self, run_dir: str | os.PathLike, command: str | None = None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command if command is not None else current_command()
        self._key: str | None = None
        self._created: list[Path] = []  # folders this lock made, removed again if left empty

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        from llv.fsio import write_error

        try:
            missing = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
            self.run_dir.mkdir(parents=True, exist_ok=True)
            key = os.path.realpath(self.path)
            with _held_guard:
                if key in _held:  # this process already holds it (a task inside a task)
                    _held[key][1] += 1
                    self._key = key
                    return
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise write_error(exc, self.path, "run lock") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LlvError(self._refusal()) from None
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                from llv.console import log

                log.warning("%s cannot be locked on this file system (%s); make sure no other "
                            "llv run writes into it", self.run_dir, exc.strerror)
                return
            raise write_error(exc, self.path, "run lock") from exc
        try:
            record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                      "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as exc:  # a full disk: the lock holds even without the text
            if exc.errno != errno.ENOSPC:
                os.close(fd)
                raise write_error(exc, self.path, "run lock") from exc
        with _held_guard:
            _held[key] = [fd, 1]
        self._key = key
        self._created = missing

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _held_guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[key]
        fd = entry[0]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # the file stays (unlinking a lock file races with openers) ...
            if self._created and os.listdir(self.run_dir) == [LOCK_NAME]:
                self.path.unlink()  # ... unless the run wrote nothing into a folder it made
                for folder in self._created:
                    folder.rmdir()
        os.close(fd)  # closing the last descriptor drops the flock

    @staticmethod
    def holder(run_dir: str | os.PathLike) -> dict | None:
        """What the lock file of ``run_dir`` says about its writer, or None (no or empty file).

        Says nothing about whether that writer still runs; only :meth:`acquire` knows that.
        """
        path = Path(run_dir) / LOCK_NAME
        try:
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            return json.loads(text) if text else None
        except (OSError, ValueError):
            return None

    def _refusal(self) -> str:
        info = None
        for _ in range(20):  # the holder may be between taking the lock and writing its record
            info = self.holder(self.run_dir)
            if info:
                break
            time.sleep(0.02)
        if not info:
            who = "another process"
        else:
            who = (f"pid {info.get('pid', '?')} on {info.get('host', '?')} since "
                   f"{info.get('since', '?')} ({info.get('command', '?')})")
        return (f"{self.run_dir} is being written by {who}; wait until it ends or pass another "
                f"out= (two writers would mix their files)")


def current_command() -> str:
    """This process's command line as a user would type it (``llv ...``)."""
    argv = list(sys.argv) or ["python"]
    program = Path(argv[0]).name
    if program in ("__main__.py", "llv"):
        argv[0] = "llv"
    return shlex.join(argv)


def command_line_overrides(command: str) -> list[str]:
    """The ``key=value`` overrides this process was started with as ``llv COMMAND ...``.

    Empty when it was not started from the command line for ``command`` (a notebook, a test).
    For the line that continues a stopped run: these, minus the keys the run replaces.
    """
    argv = sys.argv[1:]
    if command not in argv:
        return []
    after = argv[argv.index(command) + 1:]
    return [a for a in after if "=" in a and not a.startswith("-")]


def override_key(override: str) -> str:
    """``"train.lr"`` for ``"train.lr=0.1"``, ``"+x.y=1"`` and ``"~x.y"``."""
    return override.lstrip("+~").partition("=")[0]


# -------------------------------------------------------------------------------- signals


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) raised like Ctrl-C; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's exit status for a stop: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return getattr(interrupt, "exit_code", 128 + signal.SIGINT)


def signal_name(interrupt: KeyboardInterrupt) -> str:
    signum = getattr(interrupt, "signum", signal.SIGINT)
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` (Ctrl-C raises
    ``KeyboardInterrupt`` as always). Outside the main thread this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_stopped(signum, _frame):
        raise Stopped(signum)

    with _handling(_STOP_SIGNALS, raise_stopped):
        yield


@contextlib.contextmanager
def _handling(signals, handler) -> Iterator[dict]:
    """``handler`` for ``signals`` during the block; the previous handlers (yielded) after it."""
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield previous
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Postpone Ctrl-C, SIGTERM and SIGHUP until the block ends, then raise the first one.

    For writes that should finish once started (a checkpoint: stopping half-way would only
    throw away the work). Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def remember(signum, _frame):
        received.append(signum)

    with _handling((signal.SIGINT, *_STOP_SIGNALS), remember) as previous:
        yield
    received = [s for s in received if previous[s] is not signal.SIG_IGN]
    if received:
        signum = received[0]
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        handler = previous.get(signum)
        if callable(handler):
            handler(signum, None)  # what the block would have done (Stopped, say)
        else:
            raise Stopped(signum)
