"""``streams``: points (or one point's batches) on several CPU threads, each op on one thread.

The values must be those of one thread to the bit, the process's thread count must come back,
and every case where running copies of the model at once is unsafe must fall back to one stream
with a reason.
"""

import numpy as np
import pytest
import torch
from torch import nn

import llv
from llv.errors import LlvError
from llv.evaluate import PointEvaluator
from llv.params import ParameterSpace


class ConvBN(nn.Module):
    """Two conv → BN → ReLU blocks with a residual sum: what the folded, in-place path runs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            for bn in (self.bn1, self.bn2):
                bn.running_mean.copy_(0.1 * torch.randn(4, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(4, generator=g))

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.bn2(self.conv2(a)) + a)
        return self.fc(b.mean(dim=(2, 3)))


@pytest.fixture
def case():
    torch.manual_seed(0)
    model = ConvBN()
    x, y = torch.randn(40, 2, 6, 6), torch.randint(0, 3, (40,))
    return model, (x, y)


@pytest.fixture
def two_threads():
    """Two torch threads for the test (the suite runs with one); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _surface(model, data, **options):
    return llv.surface(model, data, x=(-1, 1, 3), y=(-1, 1, 3), progress=False, batch_size=8,
                       compile="off", **options)


@pytest.mark.parametrize("fold", [True, False])
def test_streams_give_the_values_of_one_stream_to_the_bit(case, fold):
    model, data = case
    one = _surface(model, data, streams=1, fold=fold)
    three = _surface(model, data, streams=3, fold=fold)
    assert three.attrs["streams"] == 3 and one.attrs["streams"] == 1
    for key in ("train_loss", "train_acc", "train_loss_se"):
        assert np.array_equal(one[key], three[key]), key
    # and against a plain eager loop over the batches (the values themselves, not only agreement)
    direct = []
    with torch.no_grad():
        model.eval()
        losses = torch.nn.functional.cross_entropy(model(data[0]), data[1], reduction="none")
        direct = float(losses.double().mean())
    assert three["train_loss"][1, 1] == pytest.approx(direct, rel=1e-6)


def test_one_point_runs_its_batches_at_once_with_the_same_sums(case):
    """A single point (chunk of one) splits its batches over the streams; the per-batch sums
    are added in batch order, so the value is that of one stream to the bit."""
    model, data = case
    space = ParameterSpace.of(model, "weights")
    base = dict(zip(space.names, space.values(model)))
    directions = torch.randn(2, space.numel)
    from llv.batches import as_batches

    batches = {"train": as_batches(data, batch_size=8)}
    results = {}
    for streams in (1, 2):
        evaluator = PointEvaluator(model, space, base, directions, batches, streams=streams)
        calls = []
        if evaluator.streams is not None:
            original = evaluator.streams.map
            evaluator.streams.map = (lambda fn, items, calls=calls, original=original:
                                     calls.append(len(items)) or original(fn, items))
        results[streams] = evaluator.evaluate(torch.tensor([[0.3, -0.2]]))
        if streams == 2:
            assert calls == [5], "one point's 5 batches should run on the streams"
    for key in results[1]:
        assert torch.equal(results[1][key], results[2][key]), key


def test_the_fast_mode_gives_the_same_numbers_on_streams(case):
    model, data = case
    options = dict(approx=True, target_se=0.05, approx_start=8)
    one = _surface(model, data, streams=1, **options)
    two = _surface(model, data, streams=2, **options)
    for key in ("train_loss", "train_loss_se", "train_n", "train_acc"):
        assert np.array_equal(one[key], two[key]), key


def test_thread_count_and_grad_mode_come_back(case, two_threads):
    model, data = case
    grad_before = torch.is_grad_enabled()
    result = _surface(model, data)  # auto: 2 threads -> 2 streams
    assert result.attrs["streams"] == 2
    assert torch.get_num_threads() == 2
    assert torch.is_grad_enabled() == grad_before
    assert all(p.grad is None for p in model.parameters())


class Exploding(ConvBN):
    def forward(self, x):
        if x.shape[0] != 8:
            raise ValueError("a user's error inside the model")
        return super().forward(x)


def test_an_error_in_a_stream_is_raised_as_itself_and_threads_are_restored(two_threads):
    torch.manual_seed(0)
    data = (torch.randn(20, 2, 6, 6), torch.randint(0, 3, (20,)))  # last batch has 4 examples
    with pytest.raises(ValueError, match="a user's error inside the model"):
        _surface(Exploding(), data, streams=2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("options, reason", [
    (dict(points_per_batch=2), "points_per_batch"),
    (dict(bn="recompute"), "bn=recompute"),
    (dict(loss=lambda outputs, batch: torch.nn.functional.cross_entropy(
        outputs, batch[1], reduction="none")), "custom loss"),
])
def test_auto_falls_back_to_one_stream_where_unsafe(case, two_threads, options, reason):
    model, data = case
    result = llv.surface(model, data, x=(-1, 1, 2), y=None, progress=False, batch_size=8,
                         compile="off", **options)
    assert result.attrs["streams"] == 1
    assert reason in result.attrs["streams_reason"]


def test_compile_on_runs_one_stream_and_auto_compile_gives_way_to_streams(case, two_threads):
    from llv.batches import as_batches

    model, data = case
    space = ParameterSpace.of(model, "weights")
    evaluator = PointEvaluator(model, space, dict(zip(space.names, space.values(model))),
                               torch.randn(1, space.numel), {"train": as_batches(data, batch_size=8)},
                               compile="auto", expected_points=10**6)
    assert evaluator.streams is not None and evaluator.streams.count == 2
    assert evaluator.compile is None  # auto never compiles beside streams
    count, why, _ = evaluator._choose_streams("auto", "on")
    assert count == 1 and "compile=on" in why


def test_a_model_with_forward_hooks_runs_on_one_stream_unless_asked(case, two_threads):
    model, data = case
    seen = []
    model.fc.register_forward_hook(lambda module, args, output: seen.append(output.shape[0]))
    result = _surface(model, data)
    assert result.attrs["streams"] == 1 and "hooks" in result.attrs["streams_reason"]
    assert seen, "the hook ran"


def test_one_thread_means_one_stream(case):
    model, data = case
    assert torch.get_num_threads() == 1  # the suite's setting (conftest)
    result = _surface(model, data)
    assert result.attrs["streams"] == 1 and result.attrs["streams_reason"] == "one thread"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_streams_are_refused(case, bad):
    model, data = case
    with pytest.raises(LlvError, match="streams"):
        _surface(model, data, streams=bad)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_cli_refuses_bad_eval_streams_before_any_work(run, tmp_path, value):
    from conftest import tiny_overrides

    result = run("surface", *tiny_overrides(tmp_path), "grid.x=-1:1:3", "grid.y=-1:1:3", f"eval.streams={value}")
    assert result.returncode == 2
    assert "eval.streams" in result.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.h5"))


def test_cli_records_the_streams_that_ran(run, tmp_path):
    import h5py
    from conftest import save_tiny_checkpoint, tiny_overrides

    checkpoint = save_tiny_checkpoint(tmp_path)
    result = run("surface", *tiny_overrides(tmp_path), f"checkpoint={checkpoint}", "grid.x=-1:1:3", "grid.y=-1:1:3", "eval.streams=2", "probe=false",
                 "summary.cross_check=false")
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "outputs").rglob("surface.h5")
    with h5py.File(path) as f:
        assert int(f.attrs["streams"]) == 2


class FailsOnThirdPass(ConvBN):
    """Counts its passes (shared by its copies) and fails on the third."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def forward(self, x):
        with self.counter["lock"]:
            self.counter["calls"] += 1
            calls = self.counter["calls"]
        if calls == 3:
            raise RuntimeError("third pass fails")
        import time

        time.sleep(0.01)
        return super().forward(x)

    def __deepcopy__(self, memo):  # copies share the counter (a stream runs a copy)
        twin = FailsOnThirdPass(self.counter)
        twin.load_state_dict(self.state_dict())
        return twin


def test_a_failure_stops_the_other_streams_within_a_batch(two_threads):
    """Points of 10 batches each on 2 streams: when one pass fails, the other stream stops at
    its next batch instead of finishing its point (a stop signal is handled the same way)."""
    import threading

    counter = {"calls": 0, "lock": threading.Lock()}
    model = FailsOnThirdPass(counter)
    torch.manual_seed(0)
    data = (torch.randn(80, 2, 6, 6), torch.randint(0, 3, (80,)))
    with pytest.raises(RuntimeError, match="third pass fails"):
        llv.surface(model, data, x=(-1, 1, 4), y=None, progress=False, batch_size=8, fold=False,
                    compile="off", streams=2)
    for thread in threading.enumerate():
        if thread.name.startswith("llv-stream"):
            thread.join()
    assert counter["calls"] <= 5, counter  # 3, plus at most one more batch per stream
    assert torch.get_num_threads() == 2


class SlowConvBN(ConvBN):
    def forward(self, x):
        import time

        time.sleep(0.002)  # the two streams' passes overlap
        return super().forward(x)


def test_one_kept_point_twice_in_a_call_is_continued_once_at_a_time(two_threads):
    """A grid can hold one coefficient row twice (every ensemble member's centre) whose sums are
    kept from the range estimate (``Approximation.remember``). Two streams must not continue
    them at once: the values equal one stream's, and the kept stages are those of one run."""
    from llv.batches import as_batches
    from llv.evaluate import Approximation

    torch.manual_seed(0)
    model = SlowConvBN()
    data = {"train": as_batches((torch.randn(64, 2, 6, 6), torch.randint(0, 3, (64,))), batch_size=8)}
    space = ParameterSpace.of(model, "weights")
    base = dict(zip(space.names, space.values(model)))
    directions = torch.randn(2, space.numel) * 0.01
    row = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    results, memos = {}, {}
    for streams in (1, 2):
        approx = Approximation(target_se=0.01, start=8, batch_size=8, scale=1e-9)  # whole split
        evaluator = PointEvaluator(model, space, base, directions, data, fold=False,
                                   approx=approx, streams=streams)
        approx.remember(row)
        results[streams] = evaluator.evaluate(torch.cat([row, row]))
        memos[streams] = approx.memo("train", row[0].numpy())
        assert (evaluator.streams is not None) == (streams == 2)
    assert [m[-1] for m in memos[1]] == [8, 16, 32, 64]
    assert memos[2] == memos[1]
    for key in results[1]:
        assert torch.equal(results[1][key], results[2][key]), key
    assert lock_is_per_point(Approximation(), row)


def lock_is_per_point(approx, row) -> bool:
    approx.remember(row)
    first, again = approx.point_lock(row[0].numpy()), approx.point_lock(row[0].numpy())
    other = approx.point_lock(np.array([9.0, 9.0]))
    return first is again and hasattr(first, "acquire") and not hasattr(other, "acquire")


class NamespaceOutput(ConvBN):
    """Returns an object with ``.logits`` (not a pytree), as some model libraries do."""

    def forward(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(logits=super().forward(x), hidden=None)


def test_several_points_per_pass_take_the_logits_of_an_output_object(case):
    """vmap returns pytrees only: with points_per_batch > 1 an output object with ``.logits``
    failed; the vmapped pass now keeps the logits, the values are one-point passes' to 1e-6."""
    _, data = case
    torch.manual_seed(0)
    model = NamespaceOutput()
    one = _surface(model, data, points_per_batch=1, streams=1)
    many = _surface(model, data, points_per_batch=3, streams=1)
    np.testing.assert_allclose(many["train_loss"], one["train_loss"], rtol=1e-6)
    np.testing.assert_array_equal(many["train_acc"], one["train_acc"])


def test_streamed_batches_of_one_point_are_not_all_loaded_at_once(case):
    """Batches that are moved to the device one at a time (``resident=False``) stay one at a
    time: a single point runs them in order on one stream rather than listing them all."""
    from llv.batches import Batches, as_batches

    model, data = case
    resident = as_batches(data, batch_size=8)
    streamed = Batches(resident.stored, resident.num_examples, resident.device, resident=False)
    space = ParameterSpace.of(model, "weights")
    base = dict(zip(space.names, space.values(model)))
    directions = torch.randn(2, space.numel)
    results = {}
    for name, batches in (("resident", resident), ("streamed", streamed)):
        evaluator = PointEvaluator(model, space, base, directions, {"train": batches}, streams=2)
        calls = []
        original = evaluator.streams.map
        evaluator.streams.map = (lambda fn, items, calls=calls, original=original:
                                 calls.append(len(items)) or original(fn, items))
        results[name] = evaluator.evaluate(torch.tensor([[0.3, -0.2]]))
        assert calls == ([5] if name == "resident" else [])
    for key in results["resident"]:
        assert torch.equal(results["resident"][key], results["streamed"][key]), key
