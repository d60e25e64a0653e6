"""One writer per run folder, across real processes; a killed holder never blocks; stop signals."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llv.errors import LlvError
from llv.runlock import LOCK_NAME, RunLock, Stopped, exit_code, held_signals, stop_signals

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llv.runlock import RunLock
    run_dir, ready = sys.argv[1], Path(sys.argv[2])
    with RunLock(run_dir, "llv surface out=RUN direction.seed=1"):
        ready.write_text("locked")
        time.sleep(float(sys.argv[3]))
""")

CONTENDER = textwrap.dedent("""
    import sys
    from llv.errors import LlvError
    from llv.runlock import RunLock
    try:
        with RunLock(sys.argv[1], "llv surface out=RUN direction.seed=2"):
            print("acquired")
    except LlvError as exc:
        print(exc)
        sys.exit(2)
""")


def start_holder(run_dir, tmp_path, seconds=60):
    """A separate process that holds ``run_dir``'s lock for ``seconds``; returns it once locked."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir), str(ready), str(seconds)])
    deadline = time.monotonic() + 60
    while not ready.exists():
        if holder.poll() is not None or time.monotonic() > deadline:
            holder.kill()
            pytest.fail("the lock holder did not start")
        time.sleep(0.05)
    return holder


def contend(run_dir):
    return subprocess.run([sys.executable, "-c", CONTENDER, str(run_dir)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def holder(tmp_path):
    run_dir = tmp_path / "run"
    process = start_holder(run_dir, tmp_path)
    yield run_dir, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_second_writer_process_is_refused_naming_the_holder(holder):
    run_dir, process = holder
    result = contend(run_dir)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{run_dir} is being written by pid {process.pid} on ")
    assert "(llv surface out=RUN direction.seed=1)" in lines[0] and " since 20" in lines[0]
    # the same refusal in this process, and the holder's record is untouched by it
    with pytest.raises(LlvError, match=f"being written by pid {process.pid} "):
        RunLock(run_dir, "third").acquire()
    assert RunLock.holder(run_dir)["pid"] == process.pid


def test_a_killed_holder_does_not_block_and_its_record_is_replaced(holder):
    run_dir, process = holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert RunLock.holder(run_dir)["pid"] == process.pid  # the dead process's text is still there
    result = contend(run_dir)
    assert (result.returncode, result.stdout) == (0, "acquired\n")
    with RunLock(run_dir, "llv train out=RUN"):
        record = RunLock.holder(run_dir)
        assert (record["pid"], record["command"]) == (os.getpid(), "llv train out=RUN")
        assert contend(run_dir).returncode == 2
    assert RunLock.holder(run_dir) is None  # released: the record is emptied
    assert contend(run_dir).returncode == 0


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    run_dir = tmp_path / "run"
    with RunLock(run_dir, "outer"):
        with RunLock(run_dir, "inner"):
            (run_dir / "result.h5").write_bytes(b"x")
        assert contend(run_dir).returncode == 2  # the outer block still holds it
    assert contend(run_dir).returncode == 0


def test_a_folder_the_lock_made_is_removed_when_the_run_wrote_nothing(tmp_path):
    run_dir = tmp_path / "new" / "run"
    with RunLock(run_dir, "refused before any work"):
        assert (run_dir / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    with RunLock(run_dir, "wrote a result"):
        (run_dir / "result.h5").write_bytes(b"x")
    assert sorted(os.listdir(run_dir)) == [LOCK_NAME, "result.h5"]
    existing = tmp_path / "existing"
    existing.mkdir()
    with RunLock(existing, "an existing folder stays"):
        pass
    assert os.listdir(existing) == [LOCK_NAME]


# -------------------------------------------------------------------------------- signals


def test_sigterm_raises_stopped_inside_stop_signals_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Stopped) as caught:
        with stop_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler
            pytest.fail("SIGTERM did not stop the block")
    assert isinstance(caught.value, KeyboardInterrupt)
    assert (caught.value.signum, exit_code(caught.value)) == (signal.SIGTERM, 143)
    assert exit_code(KeyboardInterrupt()) == 130
    assert signal.getsignal(signal.SIGTERM) == before


def test_held_signals_finish_the_block_then_stop():
    # Python's own Ctrl-C handler, whatever this process inherited (a shell's background job
    # starts with SIGINT ignored, and an ignored signal is, rightly, not raised afterwards)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _held_signals_case()
    finally:
        signal.signal(signal.SIGINT, previous)


def _held_signals_case():
    finished = []
    with pytest.raises(Stopped):
        with stop_signals():
            with held_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
                finished.append("write complete")
    assert finished == ["write complete"]
    with pytest.raises(KeyboardInterrupt):
        with held_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            finished.append("second write")
    assert finished == ["write complete", "second write"]


def test_command_line_overrides_are_those_after_the_command(monkeypatch):
    from llv.runlock import command_line_overrides, current_command, override_key

    monkeypatch.setattr(sys, "argv", ["/venv/bin/llv", "-q", "train", "model=mlp", "-v",
                                      "train.lr=0.05", "+extra.key=a b", "out=/runs/x"])
    assert command_line_overrides("train") == ["model=mlp", "train.lr=0.05", "+extra.key=a b",
                                               "out=/runs/x"]
    assert command_line_overrides("surface") == []
    assert [override_key(o) for o in ("+extra.key=a b", "~model.bn", "out=/x")] == \
        ["extra.key", "model.bn", "out"]
    assert current_command() == "llv -q train model=mlp -v train.lr=0.05 '+extra.key=a b' out=/runs/x"
