"""QA defects: non-finite plot limits, a top-k larger than the Hessian, a stop held by a long
eigendecomposition, and a finished trajectory rerun into its own folder."""

import os
import signal
import threading

import h5py
import numpy as np
import pytest
import torch

from llv.config import compose
from llv.console import LlvError
from llv.plot._figure import PlotOptions

# ------------------------------------------------------------------------------ 1. plot limits


@pytest.mark.parametrize("given", [{"vmin": float("nan")}, {"vmax": float("nan")},
                                   {"vmax": float("inf")}, {"vmin": -float("inf")},
                                   {"vlevel": float("inf")}, {"vlevel": float("nan")}])
def test_non_finite_plot_limits_and_levels_are_one_line_errors(given, run, tmp_path):
    with pytest.raises(LlvError, match="must be a finite number"):
        PlotOptions(**given)
    (flag, value), = given.items()
    for kind in ("contour", "heatmap"):
        done = run("plot", kind, tmp_path / "missing.h5", f"--{flag}", str(value))
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and f"--{flag} must be a finite number" in lines[0]
    assert not list(tmp_path.iterdir())  # no figure named ..._vmaxnan.png


# ------------------------------------------------------------------------------ 2. top-k, stops


def small_hessian():
    from llv.spectrum import Hessian

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)  # 8 parameters
    data = (torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]))
    return Hessian(model, data, dtype=torch.float64)


def test_more_eigenvalues_than_parameters_is_an_error_before_any_product(monkeypatch):
    h = small_hessian()
    assert h.dimension == 8
    for which in ("top", "bottom"):
        with pytest.raises(LlvError, match="only 8, one per parameter"):
            h.eigenvalues(k=9, which=which)
    monkeypatch.setattr(type(h), "loss", lambda self: pytest.fail("work before the check"))
    for compute in (["top_k"], ["extremes", "top_k"]):
        with pytest.raises(LlvError, match="100,000 eigenvalues asked for.*only 8"):
            h.analyse(top_k=100000, compute=compute)
    assert h.num_hvp == 0
    monkeypatch.undo()
    # all of them is allowed, with λmin beside them: the full spectrum, not one value fewer
    result = h.analyse(top_k=8, compute=["extremes", "top_k"])
    assert len(result["eigenvalues"]) == 8
    np.testing.assert_allclose(result["eigenvalues"][0], result["lambda_max"], rtol=1e-9)


class DenseOperator:
    """What the dense route of llv.curvature needs of a Hessian operator."""

    def __init__(self, matrix):
        self.matrix, self.n = matrix, matrix.shape[0]
        self.dtype, self.device, self.num_hvp = torch.float64, torch.device("cpu"), 0

    def to_dense(self):
        self.num_hvp += self.n
        return self.matrix


def test_a_stop_during_a_large_eigendecomposition_is_noticed_at_once(monkeypatch):
    """SIGTERM (as llv.runlock.Stopped) ends the run while the dense eigendecomposition is still
    computing, instead of after it (the C call held it for minutes on a 9k-parameter model).
    The decomposition here blocks until the test releases it, so the stop can only have been
    noticed during it: no clock is involved."""
    from llv import curvature
    from llv.runlock import Stopped, stop_signals

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 300, generator=generator, dtype=torch.float64)
    matrix = a + a.T
    release, started = threading.Event(), threading.Event()
    real = np.linalg.eigh

    def blocked_eigh(m):
        # a C call: signals reach Python's handler only once it returns (here: blocked, pending)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            started.set()
            release.wait()  # an eigendecomposition that has not finished
            return real(m)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})

    def stop_then_give_up():
        started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        release.wait(5)  # unstick a call that did not notice the stop (the test then fails)
        release.set()

    monkeypatch.setattr(np.linalg, "eigh", blocked_eigh)
    threading.Thread(target=stop_then_give_up, daemon=True).start()
    try:
        with pytest.raises(Stopped):
            with stop_signals():
                curvature._eigh(matrix.numpy())
        assert not release.is_set()  # stopped while the decomposition was still running
    finally:
        release.set()
        for worker in threading.enumerate():  # let the abandoned decomposition end
            if worker.name == "llv-linalg":
                worker.join()


# ------------------------------------------------------------------------------ 3. trajectory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from llv.tasks.train import run as train

    root = tmp_path_factory.mktemp("misc_trajectory")
    cfg = compose("train", ["model=mlp", "model.hidden=[16]", "train.epochs=3", f"out={root / 'train'}",
                            f"outputs={root / 'outputs'}", "device=cpu"])
    return train(cfg), root


def trajectory(run_dir, root, out, *extra):
    from llv.tasks import trajectory as task

    return task.run(compose("trajectory", [
        f"run={run_dir}", f"outputs={root / 'outputs'}", "device=cpu", "dist=none", "grid.x=-1:1:5",
        "grid.y=-1:1:5", "eval.max_samples=128", "plot=false", "summary.cross_check=false",
        f"out={out}", *extra]))


def datasets(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}


def same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_finished_trajectory_rerun_into_its_folder_changes_nothing(trained, tmp_path):
    run_dir, root = trained
    trajectory(run_dir, root, tmp_path)
    before = {n: datasets(tmp_path / n) for n in ("surface.h5", "projection.h5", "directions.h5")}
    trajectory(run_dir, root, tmp_path)
    for name, values in before.items():
        same(values, datasets(tmp_path / name))


def test_a_surface_of_an_earlier_llv_box_resumes_on_its_own_grid(trained, tmp_path):
    """A file written before box_grid made θ_n a grid point holds the path's box edge to edge:
    the identical rerun resumes it unchanged (it was refused after the probe)."""
    from llv.storage import projection

    run_dir, root = trained
    trajectory(run_dir, root, tmp_path)
    path = projection.read(tmp_path / "projection.h5").coordinates
    with h5py.File(tmp_path / "surface.h5", "r+") as f:
        for k, name in enumerate(("xcoordinates", "ycoordinates")):
            lo, hi = path[:, k].min(), path[:, k].max()
            width = hi - lo
            f[name][...] = np.linspace(lo - 0.2 * width, hi + 0.2 * width, 5)
    before = datasets(tmp_path / "surface.h5")
    assert not np.any(before["xcoordinates"] == 0.0)
    trajectory(run_dir, root, tmp_path)
    same(before, datasets(tmp_path / "surface.h5"))


def test_a_surface_over_another_box_is_refused_before_any_work(trained, tmp_path, monkeypatch):
    run_dir, root = trained
    trajectory(run_dir, root, tmp_path)
    with h5py.File(tmp_path / "surface.h5", "r+") as f:
        x = f["xcoordinates"][()]
        f["xcoordinates"][...] = x * 1.5
    before = datasets(tmp_path / "surface.h5")
    monkeypatch.setattr("llv.probe.run_probe", lambda *a, **k: pytest.fail("the probe ran first"))
    with pytest.raises(LlvError, match=r"cannot resume .*surface.h5: its grid is .*this run's is "
                                       r".*trajectory.margin=0.2 at 5x5\): pass another out="):
        trajectory(run_dir, root, tmp_path)
    same(before, datasets(tmp_path / "surface.h5"))
