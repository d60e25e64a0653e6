"""Distributed grid evaluation, for real: ``mpiexec -n N llv surface`` and ``torchrun ... -m llv``
on CPU (gloo), against an in-process single-rank run (SPEC §5).

Every launch is a subprocess in its own session, so a test can SIGKILL the launcher and all its
ranks at once. Ranks run a tiny conv+BN net on tiny synthetic data with one thread each.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import save_tiny_checkpoint, tiny_overrides

from llv import distributed
from llv.config import compose
from llv.console import LlvError
from llv.tasks import surface as surface_task

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parent
LAUNCHERS = {"mpi": BIN / "mpiexec", "torch": BIN / "torchrun"}
_LAUNCHER_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "SLURM_STEP_NUM_TASKS",
    *distributed.MPI_ENV,
)
LAUNCH_TIMEOUT = 240


def _need(launcher: str) -> None:
    if not LAUNCHERS[launcher].exists():
        pytest.skip(f"{LAUNCHERS[launcher].name} is not installed next to {sys.executable}")
    if launcher == "mpi":
        pytest.importorskip("mpi4py")


def command(launcher: str, ranks: int, overrides: list[str]) -> list[str]:
    if launcher == "mpi":
        return [str(LAUNCHERS["mpi"]), "-n", str(ranks), str(BIN / "llv"), "surface", *overrides]
    return [
        str(LAUNCHERS["torch"]),
        "--standalone",
        f"--nproc-per-node={ranks}",
        "-m",
        "llv",
        "surface",
        *overrides,
    ]


def environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_ENV}
    env.update(
        OMP_NUM_THREADS="1",
        COLUMNS="250",
        PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def start(launcher: str, ranks: int, overrides: list[str]) -> subprocess.Popen:
    _need(launcher)
    return subprocess.Popen(
        command(launcher, ranks, overrides),
        env=environment(),
        cwd=TESTS.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout: float = LAUNCH_TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        out, err = proc.communicate()
        pytest.fail(f"launch did not end within {timeout} s (hang?)\n{out[-3000:]}\n{err[-3000:]}")
    return proc.returncode, out, err


def launch(
    launcher: str, ranks: int, overrides: list[str], ok: bool = True
) -> tuple[int, str, str]:
    rc, out, err = finish(start(launcher, ranks, overrides))
    if ok:
        assert rc == 0, f"{launcher} -n {ranks} failed (rc {rc}):\n{out[-3000:]}\n{err[-3000:]}"
    return rc, out, err


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (mpiexec's proxies and ranks run in sessions of their own)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies count as gone)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank it started, all at once."""
    for pid in process_tree(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def rank_pid(proc: subprocess.Popen, rank: int) -> int:
    """The pid of ``rank`` among the launcher's processes, from the environment its launcher gave."""
    for pid in process_tree(proc.pid)[1:]:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        env = dict(
            item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item
        )
        if env.get("PMI_RANK", env.get("RANK") if "LOCAL_RANK" in env else None) == str(rank):
            return pid
    raise AssertionError(f"no process of rank {rank} under {proc.args[0]}")


def read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys()}, dict(f.attrs)


def progress_of(path: Path) -> int:
    """Points done in the file now (-1 while it does not exist yet)."""
    try:
        with h5py.File(path, "r") as f:
            return int(f["done"][()].sum())
    except (OSError, KeyError):
        return -1


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny checkpoint and its 9×9 and 1D surfaces computed in this process with one rank."""
    tmp = tmp_path_factory.mktemp("reference")
    checkpoint = save_tiny_checkpoint(tmp)
    base = [*tiny_overrides(tmp), f"checkpoint={checkpoint}", "probe=false"]
    surface = surface_task.run(
        compose("surface", [*base, "grid.x=-1:1:9", "grid.y=-1:1:9", "out=" + str(tmp / "2d")])
    )
    line = surface_task.run(
        compose("surface", [*base, "grid.x=-1:1:2", "grid.y=null", "out=" + str(tmp / "1d")])
    )
    values, attrs = read(surface)
    assert values["done"].all() and attrs["world_size"] == 1
    return {
        "tmp": tmp,
        "checkpoint": checkpoint,
        "surface": surface,
        "values": values,
        "dir_file": attrs["dir_file"],
        "line": line,
        "line_dir_file": read(line)[1]["dir_file"],
    }


def overrides(reference, out: Path, net: str = "TinyConvBN", extra=()) -> list[str]:
    """The reference run's command line for a launched run writing to ``out``."""
    base = [o for o in tiny_overrides(reference["tmp"], net) if not o.startswith("dist=")]
    return [*base, f"checkpoint={reference['checkpoint']}", "probe=false", f"out={out}", *extra]


def grid_2d(reference) -> list[str]:
    return [
        "grid.x=-1:1:9",
        "grid.y=-1:1:9",
        f"dir_file={reference['dir_file']}",
        "eval.chunk_points=4",
    ]


def assert_same_surface(path, expected: dict, done_only: bool = False) -> dict:
    values, _ = read(path)
    mask = values["done"] if done_only else np.ones_like(values["done"])
    for metric in ("train_loss", "train_acc"):
        np.testing.assert_allclose(values[metric][mask], expected[metric][mask], rtol=1e-6, atol=0)
    assert np.isnan(values["train_loss"][~values["done"]]).all()
    return values


# ------------------------------------------------------------------------------ world sizes


def _world_size_case(reference, tmp_path, launcher, ranks):
    out = tmp_path / f"{launcher}{ranks}"
    _, stdout, stderr = launch(
        launcher, ranks, [*overrides(reference, out, extra=["dist=auto"]), *grid_2d(reference)]
    )
    values = assert_same_surface(out / "surface.h5", reference["values"])
    assert values["done"].all()
    attrs = read(out / "surface.h5")[1]
    assert attrs["world_size"] == ranks
    # dist=auto picked the launcher's backend; rank 0 alone logs and prints the summary
    assert stderr.count(f"{ranks} rank(s) [{launcher}]") == 1, stderr[-2000:]
    assert stdout.count("surface summary") == 1
    # exactly one rank wrote: the run directory holds one config and one result, no temporaries
    # (and the run lock's record, .llv.lock, which stays by design)
    assert sorted(p.name for p in out.iterdir() if p.name != ".llv.lock") == ["config.yaml", "surface.h5"]


@pytest.mark.parametrize("launcher,ranks", [("mpi", 3)])  # torchrun: the kill/resume test
def test_world_sizes_agree(reference, tmp_path, launcher, ranks):
    _world_size_case(reference, tmp_path, launcher, ranks)


@pytest.mark.slow
@pytest.mark.parametrize("launcher,ranks", [("mpi", 1), ("mpi", 2), ("torch", 1), ("torch", 2), ("torch", 3)])
def test_world_sizes_agree_more(reference, tmp_path, launcher, ranks):
    _world_size_case(reference, tmp_path, launcher, ranks)


@pytest.mark.slow  # kept out of `make test` for its 10-minute budget
def test_more_ranks_than_points(reference, tmp_path):
    out = tmp_path / "line"
    _, _, stderr = launch(
        "mpi",
        3,
        [
            *overrides(reference, out, extra=["dist=mpi"]),
            "grid.x=-1:1:2",
            "grid.y=null",
            f"dir_file={reference['line_dir_file']}",
        ],
    )
    values, attrs = read(out / "surface.h5")
    expected, _ = read(reference["line"])
    assert values["train_loss"].shape == (2,) and values["done"].all()
    np.testing.assert_allclose(values["train_loss"], expected["train_loss"], rtol=1e-6)
    assert attrs["world_size"] == 3
    assert "3 ranks for 2 pending points: 1 rank(s) stay idle" in stderr


@pytest.mark.slow
def test_auto_extent_is_found_once_and_shared_by_every_rank(reference, tmp_path):
    """``grid.x=auto``: rank 0 searches and broadcasts; the surface equals a one-process run."""
    auto = ["grid.x=auto:5", "grid.y=null", f"dir_file={reference['line_dir_file']}", "grid.auto_rise=1.2"]
    single = surface_task.run(compose("surface", [*overrides(reference, tmp_path / "one", extra=["dist=none"]),
                                                  *auto]))
    out = tmp_path / "mpi2"
    _, _, stderr = launch("mpi", 2, [*overrides(reference, out, extra=["dist=mpi"]), *auto])
    values, attrs = read(out / "surface.h5")
    expected, expected_attrs = read(single)
    assert stderr.count("automatic extent:") == 1  # rank 0 alone searches and logs
    assert attrs["auto_x"] == expected_attrs["auto_x"] and attrs["world_size"] == 2
    np.testing.assert_array_equal(values["xcoordinates"], expected["xcoordinates"])
    np.testing.assert_allclose(values["train_loss"], expected["train_loss"], rtol=1e-6)


@pytest.mark.slow
def test_fast_mode_gives_the_same_numbers_on_three_ranks(reference, tmp_path):
    """``eval.approx=true``: every point's subset is seeded by its coordinates, and so are the
    pilots' that give the range: three ranks give one process's numbers to the bit."""
    fast = [*grid_2d(reference), "eval.approx=true", "eval.target_se=0.05", "eval.approx_start=8"]
    single = surface_task.run(compose("surface", [*overrides(reference, tmp_path / "one", extra=["dist=none"]),
                                                  *fast]))
    out = tmp_path / "mpi3"
    launch("mpi", 3, [*overrides(reference, out, extra=["dist=mpi"]), *fast])
    values, attrs = read(out / "surface.h5")
    expected, expected_attrs = read(single)
    assert attrs["approx_scale"] == expected_attrs["approx_scale"] and attrs["world_size"] == 3
    assert expected["train_n"].min() < 40  # subsets were used somewhere (the split has 40)
    for name in ("train_loss", "train_loss_se", "train_n", "train_acc"):
        np.testing.assert_array_equal(values[name], expected[name])


# ------------------------------------------------------------------------------ kill and resume


def _kill_mid_way(reference, tmp_path, launcher, ranks, victim: int | None):
    """Start a slow run, SIGKILL it (``victim`` rank alone, or everything) once part is on disk."""
    out = tmp_path / "killed"
    path = out / "surface.h5"
    # eval.fold=false: the folded forward is traced by torch.fx, which drops the net's sleep
    slow = overrides(reference, out, "SlowTinyConvBN", ["+model.module.delay=0.05", "eval.fold=false"])
    proc = start(
        launcher, ranks, [*slow, f"dist={launcher}", *grid_2d(reference), "eval.chunk_points=2"]
    )
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    while progress_of(path) <= 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    done = progress_of(path)
    processes = process_tree(proc.pid)
    if victim is None:
        kill_tree(proc)
    else:
        os.kill(rank_pid(proc, victim), signal.SIGKILL)
    rc, _, stderr = finish(proc, timeout=60)  # the launcher stops the other ranks: no hang
    assert rc != 0, "the run finished before it could be killed; make it slower"
    assert 0 < done < 81, f"{done} points done when killed"
    deadline = time.monotonic() + 30
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(processes), "ranks outlived their launcher"
    killed = assert_same_surface(path, reference["values"], done_only=True)
    assert 0 < killed["done"].sum() < 81
    return out, slow, killed, stderr


def _resume_and_compare(reference, out, slow, launcher, ranks, killed):
    launch(
        launcher,
        ranks,
        [*slow, f"dist={launcher}", *grid_2d(reference), f"resume={out / 'surface.h5'}"],
    )
    values = assert_same_surface(out / "surface.h5", reference["values"])
    assert values["done"].all()
    attrs = read(out / "surface.h5")[1]
    assert attrs["world_size"] == ranks
    assert not [
        p.name
        for p in out.iterdir()
        if p.name not in ("config.yaml", "surface.h5", ".llv.lock")
        and not p.name.startswith(".surface.h5.tmp")
    ]
    assert killed["done"].sum() < values["done"].sum() == 81


@pytest.mark.slow  # 30 s; world sizes (test_world_sizes_agree) and in-process stop/resume (test_reliability) stay in make test
def test_killed_run_resumes_with_another_world_size(reference, tmp_path):
    out, slow, killed, _ = _kill_mid_way(reference, tmp_path, "mpi", 2, victim=None)
    _resume_and_compare(reference, out, slow, "torch", 3, killed)


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher,victim,resume_launcher,resume_ranks",
    [
        ("mpi", 1, "mpi", 1),
        ("torch", 1, "mpi", 3),
        ("torch", None, "torch", 2),
        ("mpi", 0, "torch", 2),
    ],
)
def test_one_killed_rank_stops_the_job_and_resumes(
    reference, tmp_path, launcher, victim, resume_launcher, resume_ranks
):
    out, slow, killed, _ = _kill_mid_way(reference, tmp_path, launcher, 3, victim=victim)
    _resume_and_compare(reference, out, slow, resume_launcher, resume_ranks, killed)


# ------------------------------------------------------------------------------ failures


def _failing_run(reference, tmp_path, launcher, extra):
    out = tmp_path / "failing"
    # its forward counts calls in Python: no torch.fx trace (fold) and no set-up timing passes
    # (compile=auto) may call it before the grid does
    failing = overrides(reference, out, "RankFailingTinyConvBN",
                        [f"dist={launcher}", "eval.fold=false", "eval.compile=off", *extra])
    started = time.monotonic()
    rc, _, stderr = launch(launcher, 2, [*failing, *grid_2d(reference)], ok=False)
    return rc, stderr, time.monotonic() - started, out


def test_a_failing_rank_stops_every_rank_with_its_message(reference, tmp_path):
    # rank 1's forward pass fails in its first chunk of points: every rank learns it and ends
    rc, stderr, seconds, out = _failing_run(
        reference, tmp_path, "mpi", ["+model.module.after_calls=0"]
    )
    assert rc != 0 and seconds < LAUNCH_TIMEOUT
    assert re.search(r"rank 1 (of \d+ )?failed: simulated device error on rank 1", stderr)
    values, attrs = read(out / "surface.h5")  # what was computed is saved, the file stays valid
    assert attrs["world_size"] == 2 and not values["done"].all()


def test_a_rank_failing_alone_stops_the_job(reference, tmp_path):
    # rank 1 fails where the others do not wait for its answer: the pre-flight probe, which
    # every rank runs on its own before the point loop
    rc, stderr, _, _ = _failing_run(reference, tmp_path, "mpi", ["probe=true"])
    assert rc != 0
    assert "rank 1 of 2 failed: simulated device error on rank 1; stopping all ranks" in stderr


@pytest.mark.slow  # kept out of `make test` for its 10-minute budget (two MPI ranks, 6 s)
def test_a_checkpoint_missing_on_one_rank_is_one_clear_error(reference, tmp_path):
    # a node-local path: rank 0 finds its copy of the checkpoint, rank 1 does not; every rank
    # learns of it while loading, and the job ends with one user error naming rank 1
    shutil.copy(reference["checkpoint"], tmp_path / "node0.pt")
    per_rank = "checkpoint=" + str(tmp_path / "node${oc.env:PMI_RANK}.pt")
    rc, stderr, _, out = _failing_run(reference, tmp_path, "mpi", [per_rank])
    assert rc == 2
    assert re.search(rf"rank 1 (of \d+ )?failed: checkpoint {re.escape(str(tmp_path / 'node1.pt'))} does not exist",
                     stderr)
    assert "stopping all ranks" not in stderr  # both ranks ended on their own, nothing aborted
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["mpi", "torch"])
def test_a_hanging_rank_stops_the_job_after_the_timeout(reference, tmp_path, launcher):
    rc, stderr, seconds, _ = _failing_run(
        reference, tmp_path, launcher, ["+model.module.hang=true", "dist.timeout_s=5"]
    )
    assert rc != 0 and seconds < 120
    assert "dist.timeout_s=5 s" in stderr and "stopping all ranks" in stderr


@pytest.mark.slow
def test_a_failing_rank_under_torchrun(reference, tmp_path):
    rc, stderr, _, _ = _failing_run(reference, tmp_path, "torch", ["+model.module.after_calls=0"])
    assert rc != 0
    assert re.search(r"rank 1 (of \d+ )?failed: simulated device error on rank 1", stderr)


# ------------------------------------------------------------------------------ detection


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, "none"),
        ({"PMI_RANK": "0", "PMI_SIZE": "2"}, "mpi"),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, "mpi"),
        ({"PMIX_RANK": "1"}, "mpi"),
        ({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "torch"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "PMI_RANK": "0"}, "torch"),
    ],
)
def test_detect_reads_the_launcher_from_the_environment(monkeypatch, env, expected):
    for key in _LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.detect() == expected


def test_srun_without_mpi_is_refused(monkeypatch):
    for key in _LAUNCHER_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    with pytest.raises(LlvError, match="srun --mpi=pmix"):
        distributed.init("auto")
    assert distributed.init("none").size == 1  # asked for explicitly: independent runs


def test_one_process_raises_its_own_errors():
    comm = distributed.init("none")
    with pytest.raises(KeyError):
        comm.agree(KeyError("kept as it is"))
    assert comm.root_call(lambda a, b: a + b, 2, 3) == 5
