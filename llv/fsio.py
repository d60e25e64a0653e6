"""Files that are whole or absent: atomic writes, one-line I/O errors, stale temporaries, out= checks.

Every file llv writes goes through :func:`atomic_path` (or :func:`atomic_write`, or
:func:`llv.h5.atomic_h5` for HDF5): the content goes to a temporary file in the same folder,
named ``.NAME.llv-tmp-PID-XXXXXX``, which is flushed to disk and then moved over ``NAME`` with
``os.replace``. A run killed at any moment (even ``kill -9``) leaves the previous complete file
or the new one, never half of one; what it leaves is a temporary, which :func:`clean_stale_temps`
removes on the next run in that folder. An ``OSError`` while writing (full disk, read-only file
system, permissions, too long a name) removes the temporary, keeps the previous file and becomes
one :class:`~llv.errors.LlvError` line that says what, where and how much space is free.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from llv.errors import LlvError

TEMP_TAG = ".llv-tmp-"
_NAME_KEPT = 180  # characters of NAME kept in a temporary's name (NAME_MAX is usually 255)

# Temporaries llv writes, and those older versions wrote, all named after their final file:
#   .NAME.llv-tmp-PID-XXXXXX   this module (every writer)
#   .NAME.tmpPID               storage.py (surfaces) and hessian.py before this module
#   NAME.tmpPID                directions.py and trajectory.py before this module
#   .NAME.tmp-PID              checkpoint.py and metrics.csv before this module
# Old names only count for the extensions llv wrote, so a user's "notes.tmp1" is left alone.
_TEMP_NAMES = (
    re.compile(r"^\.(?P<name>.+)\.llv-tmp-(?P<pid>\d+)-[0-9a-f]+$"),
    re.compile(r"^\.?(?P<name>.+\.(?:h5|pt|csv|yaml|npz|vtp|json))\.tmp-?(?P<pid>\d+)$"),
)


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name next to ``path`` for this process (see the module docstring)."""
    path = Path(path)
    return path.with_name(f".{path.name[:_NAME_KEPT]}{TEMP_TAG}{os.getpid()}-{secrets.token_hex(3)}")


def is_temp(name: str) -> bool:
    """Whether a file name is one of llv's temporaries, this version's or an older one's."""
    return any(pattern.match(name) for pattern in _TEMP_NAMES)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to; on success move it into place.

    The body writes the complete file at the yielded path (and closes it). Afterwards the
    temporary is flushed to disk and renamed over ``path``. If the body or the move fails, the
    temporary is removed and ``path`` keeps its previous content; an ``OSError`` becomes one
    :class:`LlvError` line (see :func:`write_error`), anything else propagates unchanged.

    Args:
        path: The file to write; missing parent folders are created.
        what: What the file is, for the error message ("checkpoint", "surface file").
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
        _fsync_path(path.parent)
    except OSError as exc:
        raise write_error(exc, path, what) from exc
    except Exception as exc:
        cause = _os_error_in(exc)
        if cause is None:
            raise
        raise write_error(cause, path, what) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write_fn: Callable, what: str, *,
                 text: bool = False) -> Path:
    """Write ``path`` atomically: ``write_fn(handle)`` fills an open temporary file.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write(folder / "a.txt", lambda f: f.write("hello"), "note", text=True).read_text()
    'hello'
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt']

    Args:
        path: The file to write; missing parent folders are created.
        write_fn: Called once with the temporary file open for writing (binary unless ``text``).
        what: What the file is, for the error message.
        text: Open the temporary in text mode (UTF-8, ``newline=""`` as the ``csv`` module wants).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        LlvError: Any ``OSError`` while writing (full disk, read-only, permissions, name too
            long), in one line; the previous ``path`` is left intact and no temporary remains.
    """
    path = Path(path)
    with atomic_path(path, what) as tmp:
        if text:
            with open(tmp, "w", encoding="utf-8", newline="") as handle:
                write_fn(handle)
        else:
            with open(tmp, "wb") as handle:
                write_fn(handle)
    return path


def write_error(exc: OSError, path: str | os.PathLike, what: str) -> LlvError:
    """The one line for an ``OSError`` while writing ``what`` to ``path``: cause and free space."""
    path = Path(path)
    code = exc.errno
    if code is None:  # h5py puts the C library's errno into its text only
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    if exc.strerror:
        reason = exc.strerror
    elif code is not None:
        reason = os.strerror(code)
    else:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
    if code == errno.ENAMETOOLONG:
        reason += f" (a name may have at most {_name_max(path.parent)} bytes)"
    return LlvError(f"cannot write {what} {path}: {reason}; {free_space(path)}")


def free_space(path: str | os.PathLike) -> str:
    """``"12.0 KiB free of 1.0 MiB"`` on the file system that holds ``path`` (or its nearest folder)."""
    folder = _existing_ancestor(Path(path))
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)} on {folder}"


def clean_stale_temps(directory: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporaries that killed llv runs left in ``directory``; return their paths.

    Recognizes every naming llv has used (see the module docstring). A temporary whose process
    is still alive on this machine is kept: it may be a write in progress. Call it while holding
    the folder's :class:`~llv.runlock.RunLock`: a process on another machine looks dead here, and
    the lock is what guarantees that none is writing.

    Args:
        directory: The run folder; a missing one has nothing to clean.
        recursive: Also look in its subfolders (``checkpoints/``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    candidates = directory.rglob("*") if recursive else directory.iterdir()
    removed = []
    for candidate in candidates:
        match = next((m for p in _TEMP_NAMES if (m := p.match(candidate.name))), None)
        if match is None or _alive(int(match.group("pid"))) or not candidate.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "out") -> Path:
    """Check that ``path`` is, or can be made, a writable folder, without creating anything.

    Raises:
        LlvError: One line when the name is invalid (a NUL byte, too long a name or path),
            ``path`` or one of its parents is a file, or the nearest existing folder is not
            writable (permissions or a read-only file system).
    """
    text = os.fspath(path)
    if not text:
        raise LlvError(f"{what}= is empty; pass a folder")
    if "\0" in text:
        raise LlvError(f"{what}={text!r} is not a valid path (it holds a NUL character)")
    path = Path(text)
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:
        raise LlvError(f"{what}={text!r} cannot be encoded as a file name on this system") from None
    if len(encoded) >= _path_max():
        raise LlvError(f"{what}={text[:60]}... is too long a path ({len(encoded)} bytes; at most "
                       f"{_path_max() - 1})")
    longest = _name_max(_existing_ancestor(path))
    for part in path.parts:
        if len(os.fsencode(part)) > longest:
            raise LlvError(f"{what}={text}: the name '{part[:40]}...' is too long "
                           f"({len(os.fsencode(part))} bytes; at most {longest})")
    if os.path.exists(path) and not os.path.isdir(path):
        raise LlvError(f"{what}={text} is a file, not a folder")
    for parent in path.parents:
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise LlvError(f"{what}={text} cannot be created: {parent} is a file, not a folder")
    folder = _existing_ancestor(path)
    if _read_only(folder):
        raise LlvError(f"{what}={text} is not writable: {folder} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LlvError(f"{what}={text} is not writable: no permission to write in {folder}")
    return path


# ------------------------------------------------------------------------------------ helpers


def _fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; folders that refuse are skipped."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as exc:
        if not path.is_dir() or exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind an exception that wraps one (torch, h5py), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.isdir(path) and path != path.parent:  # os.path: False for too long names
        path = path.parent
    return path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(_existing_ancestor(folder), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _path_max() -> int:
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError):
        return 4096


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has no write in progress while it cleans up
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
