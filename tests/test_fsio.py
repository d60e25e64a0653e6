"""Atomic files: a failed write keeps the previous file and leaves no temporary; a full or
read-only disk is one line; stale temporaries of every naming are cleaned; out= is checked."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from llv.errors import LlvError
from llv.fsio import (
    atomic_write,
    check_output_dir,
    clean_stale_temps,
    is_temp,
    temp_path,
)
from llv.h5 import atomic_h5, open_h5


def mount_tmpfs(folder, size="1m"):
    """Mount a small tmpfs at ``folder`` (skips the test where that is impossible)."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs for a full disk needs root (mount -t tmpfs)")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip() or result.returncode}")
    return folder


def unmount(folder):
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system inside tmp_path, unmounted afterwards."""
    folder = mount_tmpfs(tmp_path / "disk")
    yield folder
    unmount(folder)


@pytest.fixture
def read_only_disk(tmp_path):
    """A read-only tmpfs that holds ``old.txt``."""
    folder = mount_tmpfs(tmp_path / "ro")
    (folder / "old.txt").write_text("old")
    result = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
    if result.returncode != 0:
        unmount(folder)
        pytest.skip("cannot remount the tmpfs read-only")
    yield folder
    unmount(folder)


def dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ------------------------------------------------------------------------------ atomic_write


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "table.csv"
    atomic_write(path, lambda f: f.write(b"first"), "table")
    atomic_write(path, lambda f: f.write("second,\u00e9\n"), "table", text=True)
    assert path.read_bytes() == "second,\u00e9\n".encode()
    assert os.listdir(path.parent) == ["table.csv"]


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     KeyboardInterrupt(), ValueError("bad value")],
                         ids=["oserror", "ctrl-c", "bug"])
def test_a_failed_write_keeps_the_previous_file(tmp_path, failure):
    path = tmp_path / "x.pt"
    path.write_bytes(b"complete old file")

    def half_then_fail(handle):
        handle.write(b"half of the new")
        raise failure

    expected = LlvError if isinstance(failure, OSError) else type(failure)
    with pytest.raises(expected) as caught:
        atomic_write(path, half_then_fail, "checkpoint")
    assert path.read_bytes() == b"complete old file"
    assert os.listdir(tmp_path) == ["x.pt"]
    if expected is LlvError:
        message = str(caught.value)
        assert message.startswith(f"cannot write checkpoint {path}: No space left on device; ")
        assert " free of " in message and "\n" not in message


def test_full_disk_is_one_line_with_free_space_and_keeps_the_old_file(small_disk):
    path = small_disk / "big.bin"
    atomic_write(path, lambda f: f.write(b"old" * 1000), "result")
    with pytest.raises(LlvError) as caught:
        atomic_write(path, lambda f: f.write(os.urandom(2 << 20)), "result")  # 2 MiB into 1 MiB
    message = str(caught.value)
    assert message.startswith(f"cannot write result {path}: No space left on device; ")
    assert "free of 1.0 MiB" in message and "\n" not in message
    assert path.read_bytes() == b"old" * 1000
    assert os.listdir(small_disk) == ["big.bin"]
    atomic_write(path, lambda f: f.write(b"fits"), "result")  # the space came back
    assert path.read_bytes() == b"fits"


def test_full_disk_hdf5_is_one_line_without_segfault(small_disk):
    """HDF5 writing to a full disk itself segfaults after a traceback per object; atomic_h5
    builds the file in memory, so the disk error is one OSError (checked in a fresh process)."""
    script = f"""
import numpy as np
from llv.h5 import atomic_h5
from llv.errors import LlvError
with atomic_h5({str(small_disk / 'd.h5')!r}, "direction file") as f:
    f["x"] = np.arange(3.0)
try:
    with atomic_h5({str(small_disk / 'd.h5')!r}, "direction file") as f:
        for i in range(300):  # many small datasets: HDF5 fails in destructors here
            f[str(i)] = np.zeros(1000)
except LlvError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "h5py" not in result.stderr  # no h5py tracebacks
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"cannot write direction file {small_disk / 'd.h5'}: No space left")
    with open_h5(small_disk / "d.h5", "a direction file") as f:
        assert list(f) == ["x"] and f["x"][()].tolist() == [0.0, 1.0, 2.0]
    assert os.listdir(small_disk) == ["d.h5"]


def test_atomic_h5_writes_a_readable_file_and_nothing_when_the_block_fails(tmp_path):
    path = tmp_path / "surface.h5"
    with atomic_h5(path, "surface file") as f:
        f["train_loss"] = np.arange(6.0).reshape(2, 3)
        f.attrs["kind"] = "random"
    with pytest.raises(RuntimeError):
        with atomic_h5(path, "surface file") as f:
            f["train_loss"] = np.zeros(4)
            raise RuntimeError("bug while writing")
    with open_h5(path, "a surface file") as f:
        assert f["train_loss"][()].tolist() == [[0, 1, 2], [3, 4, 5]] and f.attrs["kind"] == "random"
    assert os.listdir(tmp_path) == ["surface.h5"]


def test_read_only_file_system_is_one_line(read_only_disk):
    with pytest.raises(LlvError, match=r"^cannot write checkpoint .*old\.txt: Read-only file system; "):
        atomic_write(read_only_disk / "old.txt", lambda f: f.write(b"new"), "checkpoint")
    assert (read_only_disk / "old.txt").read_text() == "old"
    with pytest.raises(LlvError, match="is not writable: .* is on a read-only file system"):
        check_output_dir(read_only_disk / "run")


def test_too_long_a_name_is_one_line(tmp_path):
    path = tmp_path / ("n" * 300 + ".h5")
    with pytest.raises(LlvError, match=r"File name too long \(a name may have at most 255 bytes\)"):
        atomic_write(path, lambda f: f.write(b"x"), "surface file")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------ stale temporaries


def test_clean_stale_temps_removes_every_naming_of_dead_runs_only(tmp_path):
    dead, alive = dead_pid(), os.getppid()
    (tmp_path / "checkpoints").mkdir()
    stale = [
        temp_path(tmp_path / "surface.h5").name.replace(f"-{os.getpid()}-", f"-{dead}-"),
        f".surface.h5.tmp{dead}",  # storage.py and hessian.py before llv.fsio
        f"directions.h5.tmp{dead}",  # directions.py and trajectory.py before llv.fsio
        f".metrics.csv.tmp-{dead}",  # metrics.csv before llv.fsio
        f"checkpoints/.epoch_002.pt.tmp-{dead}",  # checkpoints before llv.fsio
    ]
    kept = [
        f".surface.h5.llv-tmp-{alive}-abc123",  # a write in progress in a live process
        f"notes.tmp{dead}",  # not a file name llv writes
        "surface.h5", "checkpoints/epoch_001.pt", ".llv.lock",
    ]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    assert all(is_temp(os.path.basename(n)) for n in stale)
    assert sorted(clean_stale_temps(tmp_path)) == sorted(tmp_path / n for n in stale[:4])
    assert not any((tmp_path / n).exists() for n in stale[:4])
    assert (tmp_path / stale[4]).exists()  # not recursive by default
    assert clean_stale_temps(tmp_path, recursive=True) == [tmp_path / stale[4]]
    assert all((tmp_path / n).exists() for n in kept)
    assert clean_stale_temps(tmp_path / "missing") == []


def test_temp_names_stay_in_the_folder_and_within_name_limits(tmp_path):
    long_name = "x" * 250 + ".h5"
    tmp = temp_path(tmp_path / long_name)
    assert tmp.parent == tmp_path and len(tmp.name) <= 255 and is_temp(tmp.name)
    assert temp_path(tmp_path / "a.h5") != temp_path(tmp_path / "a.h5")  # unique per call


# ------------------------------------------------------------------------- check_output_dir


def test_check_output_dir_accepts_new_and_existing_folders_and_creates_nothing(tmp_path):
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_output_dir(tmp_path) == tmp_path
    assert os.listdir(tmp_path) == []


def test_check_output_dir_refuses_files_and_invalid_names(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(LlvError, match=r"^out=.*file is a file, not a folder$"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(LlvError, match=r"cannot be created: .*file is a file, not a folder"):
        check_output_dir(tmp_path / "file" / "run")
    with pytest.raises(LlvError, match="holds a NUL character"):
        check_output_dir(f"{tmp_path}/a\0b")
    with pytest.raises(LlvError, match=r"is too long \(300 bytes; at most 255\)"):
        check_output_dir(tmp_path / ("n" * 300))
    with pytest.raises(LlvError, match="is too long a path"):
        check_output_dir(tmp_path / "/".join(["d" * 200] * 25))
    with pytest.raises(LlvError, match="is empty"):
        check_output_dir("")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_check_output_dir_refuses_a_folder_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(LlvError, match="no permission to write in"):
        check_output_dir(locked / "run")
