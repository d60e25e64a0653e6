"""Loss and accuracy at a batch of grid points: θ + Σ_j c_j d_j, evaluated functionally.

The model is never modified: every point's tensors are computed from kept copies of θ and the
directions and passed to :func:`torch.func.functional_call`; several points share one pass with
:func:`torch.func.vmap` (``points_per_batch``). Sums stay on the device (float64) until a whole
batch of points is done, so there is no host-device synchronisation per data batch.

On a CPU with several threads, points (or, for a single point, its data batches) run on
``streams`` threads at once, each op on one thread (:class:`Streams`), instead of every op
split over all threads: small convolutions then spend no time waiting at the barrier after
each op, and each thread's activations stay in its own cache.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from llv.batches import Batches, per_example_values, split_batch
from llv.errors import LlvError
from llv.fold import FoldedForward, has_forward_hooks
from llv.losses import check_loss, has_accuracy, logits_of, per_example_correct, per_example_loss
from llv.params import ParameterSpace, eval_mode, flatten, full_state, unflatten

PRECISIONS = ("fp32", "fp64", "tf32", "bf16")


class PointMap:
    """θ + Σ_j c_j d_j as ``name -> (k, *shape)`` tensors, from kept copies of θ and the directions.

    >>> import torch
    >>> from llv.params import ParameterSpace
    >>> space = ParameterSpace.of(torch.nn.Linear(1, 1, bias=False))
    >>> points = PointMap(space, {"weight": torch.tensor([[2.0]])}, torch.tensor([[1.0], [10.0]]))
    >>> points.tensors(torch.tensor([[1.0, 0.5]]))["weight"]
    tensor([[[8.]]])
    """

    def __init__(self, space: ParameterSpace, base: Mapping[str, torch.Tensor], directions: torch.Tensor,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.space = space
        self.theta = flatten(space, [base[n] for n in space.names]).to(device, dtype)
        self.directions = directions.to(device, dtype)

    def tensors(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = self.theta + torch.as_tensor(coefficients).to(self.theta) @ self.directions
        return unflatten(self.space, flat)


def subset_mean_and_se(total: float, squares: float, n: int, population: int) -> tuple[float, float]:
    """Mean of ``n`` values drawn without replacement from ``population``, and its standard
    error with the finite-population correction (zero when the subset is the whole split).

    >>> subset_mean_and_se(6.0, 14.0, 3, 3)
    (2.0, 0.0)
    >>> round(subset_mean_and_se(6.0, 14.0, 3, 5)[1], 6)  # sqrt(s²/n · (1 − n/N)) = sqrt(1/3 · 2/5)
    0.365148

    The sample variance s² (divisor n − 1) is unbiased for the population's S² (divisor
    N − 1), and Var(mean) = S²/n · (1 − n/N) (Cochran, *Sampling Techniques*, 2.8), so the
    squared standard error is unbiased for the mean's variance.
    """
    import math

    mean = total / n
    variance = max(squares - n * mean * mean, 0.0) / max(n - 1, 1)
    correction = (population - n) / population if population > 0 else 0.0
    return mean, math.sqrt(max(variance / n * correction, 0.0))


class Approximation:
    """The certified fast mode (``eval.approx=true``): each point on a growing seeded subset.

    A point's loss is first estimated on ``start`` examples of a seeded random order of the
    split, then on twice as many (the first ones plus the next), and so on, until its
    standard error (finite-population corrected) is at most ``target_se`` × ``scale`` — the
    range of the surface, estimated once before the grid on the centre and corners (on subsets
    too; see ``llv.api._Pilots``) —
    and, with ``rel_tol``, at most ``rel_tol`` × the loss itself (for log-scale pictures). The
    subset never exceeds the split.

    Each point draws its own order, seeded by ``seed`` and the point's coordinates: the errors of
    different points are independent, so each point's standard error describes its own error
    (one order shared by all points would shift whole regions of the surface together). The
    orders and the scale depend on nothing else, so a resumed run and every world size make the
    same choices and give the same numbers.
    """

    def __init__(self, target_se: float = 0.005, rel_tol: float | None = None, start: int = 128,
                 seed: int = 0, scale: float | None = None, batch_size: int = 128):
        if not target_se > 0:
            raise LlvError(f"eval.target_se must be a positive number, got {target_se}")
        if rel_tol is not None and not rel_tol > 0:
            raise LlvError(f"eval.approx_rel_tol must be positive or null, got {rel_tol}")
        if int(start) < 2:
            raise LlvError(f"eval.approx_start must be at least 2, got {start}")
        self.target_se, self.rel_tol, self.start = float(target_se), rel_tol, int(start)
        self.seed, self.scale, self.batch_size = int(seed), scale, int(batch_size)
        self.joined: dict = {}
        self.sizes: dict = {}
        self.memos: dict[bytes, list] = {}
        self._locks: dict[bytes, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.bn_stats: dict[bytes, dict | None] = {}  # bn=recompute's statistics, remembered points

    def remember(self, rows) -> None:
        """Keep the running sums of these points (``(k, D)`` coefficient rows) after each stage,
        so that evaluating one again, e.g. a pilot point that is also a grid point, continues
        where the last evaluation stopped instead of forwarding its examples again. Stopping
        is decided at every stage as before, so the values are those of a fresh evaluation,
        to the bit."""
        for row in torch.as_tensor(rows):
            coefficients = row.detach().cpu().double().numpy()
            self.bn_stats.setdefault(self._key("", coefficients), None)
            for split in self.joined:
                self.memos.setdefault(self._key(split, coefficients), [])

    def bn_statistics(self, coefficients, estimate: Callable[[], dict]) -> dict:
        """``estimate()`` (bn=recompute's statistics at this point), kept for a remembered point
        so that it runs once there (see :meth:`remember`)."""
        key = self._key("", coefficients)
        if key not in self.bn_stats:
            return estimate()
        if self.bn_stats[key] is None:
            self.bn_stats[key] = estimate()
        return self.bn_stats[key]

    def point_lock(self, coefficients):
        """A lock for a remembered point (a null context for others): a grid can hold the same
        row twice (every ensemble member's centre), and on CPU streams two threads must not
        continue one point's kept sums at once; the second waits and continues the first's."""
        key = self._key("", coefficients)
        if key not in self.bn_stats:
            return contextlib.nullcontext()
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def memo(self, split: str, coefficients) -> list | None:
        """The stage sums kept for this point (see :meth:`remember`), or None."""
        return self.memos.get(self._key(split, coefficients)) if self.memos else None

    @staticmethod
    def _key(split: str, coefficients) -> bytes:
        return np.asarray(coefficients, dtype=np.float64).tobytes() + split.encode()

    def prepare(self, data: Mapping[str, Batches]) -> None:
        from llv.batches import joined_examples

        for split, batches in data.items():
            sizes, size = [], self.start
            while size < batches.num_examples:
                sizes.append(size)
                size *= 2
            sizes.append(batches.num_examples)
            self.joined[split] = (joined_examples(batches), batches.num_examples)
            self.sizes[split] = sizes

    def stages(self, split: str, coefficients: torch.Tensor):
        """The stages of examples of one point (its own seeded order; see the class docstring)."""
        import hashlib

        from llv.batches import permuted_stages

        key = hashlib.sha256(np.asarray(coefficients, dtype=np.float64).tobytes()
                             + f"{self.seed}:{split}".encode()).digest()
        joined, total = self.joined[split]
        return permuted_stages(joined, total, int.from_bytes(key[:8], "little") >> 1,
                               self.sizes[split], self.batch_size)

    def good_enough(self, mean: float, se: float, n: int) -> bool:
        """Whether a point may stop at ``n`` examples. The test uses a pessimistic standard
        error (the variance's one-sided 95 % upper bound, χ² with n − 1 degrees of freedom): a
        small subset whose variance happens to come out low would otherwise stop too early and
        report a standard error smaller than its true error."""
        if self.scale is None:
            return False  # no range yet: the whole split
        from scipy.stats import chi2

        pessimistic = se * math.sqrt((n - 1) / chi2.ppf(0.05, n - 1)) if n > 1 else float("inf")
        ok = pessimistic <= self.target_se * self.scale
        if self.rel_tol is not None:
            ok = ok and pessimistic <= self.rel_tol * abs(mean)
        return ok


#: A moved BatchNorm running variance is kept at or above this share of its smallest value at
#: the centre and at the tip of every direction (see :func:`variance_floors`).
VARIANCE_FLOOR = 1e-3


def variance_floors(points: PointMap) -> dict[str, torch.Tensor]:
    """Lower bounds for the BatchNorm running variances a direction moves (``type=states``).

    Interpolating running variances linearly, as the reference does, keeps them positive for
    α in [0, 1]; extrapolating beyond can drive them to zero or below, and the network's output
    to NaN. Each variance is therefore kept at or above ``VARIANCE_FLOOR`` × its smallest
    positive value among θ and θ + d_k (for an interpolation: the smaller of the two models'
    variances). Where the linear value stays above that floor — everywhere in [0, 1] — nothing
    changes, and the floor is continuous in α.
    """
    floors = {}
    directions = points.directions
    for name, tensor in unflatten(points.space, points.theta).items():
        if not name.endswith("running_var"):
            continue
        moved = unflatten(points.space, directions)[name].reshape(len(directions), -1)
        if not bool((moved != 0).any()):
            continue
        ends = torch.cat([tensor.reshape(1, -1), tensor.reshape(1, -1) + moved])
        smallest = torch.where(ends > 0, ends, torch.full_like(ends, float("inf"))).amin(dim=0)
        smallest = torch.where(torch.isfinite(smallest), smallest, torch.ones_like(smallest))
        floors[name] = (VARIANCE_FLOOR * smallest).reshape(tensor.shape)
    return floors


def floored_points(points: PointMap, floors: dict[str, torch.Tensor], coefficients) -> torch.Tensor:
    """Which rows of ``coefficients`` (k, D) needed a variance floor (bool, k)."""
    if not floors:
        return torch.zeros(len(coefficients), dtype=torch.bool)
    tensors = points.tensors(torch.as_tensor(coefficients))
    hit = torch.zeros(len(coefficients), dtype=torch.bool, device=points.theta.device)
    for name, floor in floors.items():
        hit |= (tensors[name] < floor).reshape(len(coefficients), -1).any(dim=1)
    return hit.cpu()


class Streams:
    """Runs tasks on ``count`` CPU threads at once, each with its own copy of the forward pass and
    ``torch.set_num_threads(intra)`` intra-op threads (1 when ``count`` is the thread count).

    :func:`torch.func.functional_call` swaps a module's tensors while it runs, so two threads
    never share a module: each task takes a replica (``make_replica()``, made on first need)
    from a pool and returns it after. Gradients are off in the tasks (grad mode is per thread),
    and the process's thread count is restored when the tasks are done. A task's arithmetic is
    the same as on the calling thread (with one intra-op thread); results come back in order.

    When a task fails or the caller is interrupted (Ctrl-C, a stop signal), the tasks not yet
    started are cancelled and the running ones stop at their next batch (:meth:`check`), so a
    stop takes effect within one batch, not one point.
    """

    def __init__(self, count: int, intra: int, make_replica: Callable[[], object], ready: Sequence = ()):
        self.count, self.intra = int(count), int(intra)
        self._make_replica = make_replica
        self._free: list = list(ready)  # replicas made already
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self.local = threading.local()  # .runner: the replica the current thread runs

    def check(self) -> None:
        """In a task: stop here if the tasks were cancelled (called before every batch)."""
        if self._cancelled.is_set() and getattr(self.local, "runner", None) is not None:
            raise _Cancelled()

    def _replica(self) -> object:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._make_replica()

    def _task(self, fn: Callable, item):
        replica = self._replica()
        try:
            torch.set_num_threads(self.intra)
            self.local.runner = replica
            with torch.no_grad():
                return fn(item)
        except BaseException:
            self._cancelled.set()  # the other tasks stop at their next batch
            raise
        finally:
            self.local.runner = None
            with self._lock:
                self._free.append(replica)

    def map(self, fn: Callable, items: Sequence) -> list:
        """``[fn(item) for item in items]``, ``count`` at a time; the first error is raised (the
        tasks not yet started are cancelled)."""
        saved = torch.get_num_threads()
        self._cancelled.clear()
        pool = ThreadPoolExecutor(min(self.count, len(items)), thread_name_prefix="llv-stream")
        futures = [pool.submit(self._task, fn, item) for item in items]
        try:
            wait(futures)  # a failed task cancels the others at their next batch
            errors = [f.exception() for f in futures]
            failed = next((e for e in errors if e is not None and not isinstance(e, _Cancelled)), None)
            if failed is not None:
                raise failed
            return [f.result() for f in futures]
        except BaseException:
            self._cancelled.set()
            raise
        finally:
            for f in futures:
                f.cancel()
            pool.shutdown(wait=False)
            torch.set_num_threads(saved)


class _Cancelled(Exception):
    """A stream's task stopped because another failed or the run was interrupted."""


class PointEvaluator:
    """Evaluates ``loss``, ``acc`` (percent) and ``loss_se`` of each split at grid points.

    The model is never modified: its tensors are read once (cast for ``fp64``), every point's
    tensors go through :func:`torch.func.functional_call`, and the module's train/eval flags
    are set to eval only while a call runs and restored after it.

    With ``bn_data``, BatchNorm running statistics are re-estimated at every point before
    evaluating, by cumulative averaging over its batches as ``torch.optim.swa_utils.update_bn``
    does; points are then evaluated one at a time.

    Args:
        model: the network (BatchNorm uses its running statistics, as in eval mode).
        space: which tensors the directions perturb.
        base: θ as ``name -> tensor`` for ``space.names`` (the checkpoint's values).
        directions: (D, P) flat directions; a point is a row of D coefficients.
        data: ``split -> Batches`` (:func:`llv.batches.as_batches`).
        loss: ``"ce"``, ``"mse"`` or a callable ``(outputs, batch) -> per-example losses``.
        accuracy: a callable ``(outputs, batch) -> per-example fraction correct`` for custom
            losses (named losses on class targets have accuracy built in).
        streams: CPU threads that evaluate points (or one point's data batches) at once, each
            op on one thread (:class:`Streams`); ``"auto"``: the torch thread count on a CPU,
            where it is safe (one point per pass, no compile, ``bn_data``, custom loss or
            forward hooks; a model that can be copied), else 1. :attr:`streams_reason` says why.
            Values are those of the same arithmetic on one thread.
    """

    def __init__(self, model: nn.Module, space: ParameterSpace, base: Mapping[str, torch.Tensor],
                 directions: torch.Tensor, data: Mapping[str, Batches], loss="ce",
                 points_per_batch: int = 1, precision: str = "fp32", channels_last: bool = False,
                 bn_data: Batches | None = None, accuracy=None, device=None, fold: bool = True,
                 compile: str = "off", expected_points: int = 0, approx: Approximation | None = None,
                 streams: int | str = "auto"):
        if precision not in PRECISIONS:
            raise LlvError(f"unknown eval.precision '{precision}'; valid: {', '.join(PRECISIONS)}")
        check_loss(loss)
        if points_per_batch < 1:
            raise LlvError("eval.points_per_batch must be at least 1")
        if not data:
            raise LlvError("no data to evaluate on (eval.splits is empty)")
        self.model = model
        self.space = space
        self.loss = loss
        self.accuracy = accuracy
        self.points_per_batch = int(points_per_batch)
        self.precision = precision
        self.dtype = torch.float64 if precision == "fp64" else torch.float32
        state = full_state(model)
        self.device = torch.device(device) if device is not None else next(iter(state.values())).device
        def cast(t):
            if t.is_floating_point() and precision == "fp64":
                return t.to(self.device, self.dtype)
            return t.to(self.device)

        perturbed = set(space.perturbed)
        self.fixed = {n: cast(t) for n, t in state.items() if n not in perturbed}
        self.points = PointMap(space, base, directions, self.device, self.dtype)
        self.variance_floors = variance_floors(self.points)
        self.theta = self.points.theta
        float_dtype = torch.float64 if precision == "fp64" else None
        self.data = {split: d.cast(float_dtype, channels_last, self.device) for split, d in data.items()}
        self.bn_data = None if bn_data is None else bn_data.cast(float_dtype, channels_last, self.device)
        self.with_accuracy = {split: (accuracy is not None) or has_accuracy(loss, d.targets()[0])
                              for split, d in self.data.items()}
        self.bn_modules = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.bn_buffers = [f"{name}.{b}" for name, m in model.named_modules()
                           if isinstance(m, nn.modules.batchnorm._BatchNorm)
                           for b in ("running_mean", "running_var", "num_batches_tracked")
                           if getattr(m, b, None) is not None]
        self.approx = approx
        if approx is not None:
            approx.prepare(self.data)
        self.folded = None
        if fold and self.bn_modules:
            self.folded = FoldedForward(model)
            example_args, example_kwargs, _ = split_batch(next(iter(next(iter(self.data.values())))))
            centre = {n: t[0] for n, t in self.point_tensors(torch.zeros(1, len(directions))).items()}
            with torch.no_grad(), self._autocast():  # the first call proves the shape-dependent
                self.folded({**self.fixed, **centre}, *example_args, **example_kwargs)  # pairs
        self._forward_one = self._forward
        # vmap returns tensors (pytrees) only: several points at once keep the logits alone, all
        # that a named loss reads (a custom loss, which may read more, runs one point per pass)
        self._forward_many = vmap(lambda params, args, kwargs: logits_of(self._forward(params, args, kwargs)),
                                  in_dims=(0, None, None))
        self.streams: Streams | None = None
        count, self.streams_reason, ready = self._choose_streams(streams, compile)
        if count > 1:
            compile = "off"
            self.streams = Streams(count, max(1, torch.get_num_threads() // count), self._replica, ready)
        self.compile = self._choose_compile(compile, expected_points)

    def _forward(self, params, args, kwargs):
        """The model at one point (``params`` over the perturbed names), BatchNorm folded."""
        state = {**self.fixed, **params}
        runner = self._runner()
        if isinstance(runner, FoldedForward):
            return runner(state, *args, **kwargs)
        return functional_call(runner, state, args, kwargs)

    def _bound(self, params) -> Callable:
        """The model at one point as ``(args, kwargs) -> outputs`` for many batches: the folded
        tensors are computed once per point, not once per batch (the compiled forward folds
        inside its graph)."""
        if self._forward_one != self._forward:  # compiled: it folds inside its graph
            return lambda args, kwargs: self._forward_one(params, args, kwargs)
        state = {**self.fixed, **params}
        runner = self._runner()
        if isinstance(runner, FoldedForward):
            forward = runner.bind(state)
            return lambda args, kwargs: forward(*args, **kwargs)
        return lambda args, kwargs: functional_call(runner, state, args, kwargs)

    def _runner(self) -> FoldedForward | nn.Module:
        """What runs a pass on this thread: a stream's own copy, else the folded forward or the model."""
        runner = getattr(self.streams.local, "runner", None) if self.streams is not None else None
        if runner is not None:
            return runner
        return self.folded if self.folded is not None else self.model

    def _choose_streams(self, value, compile: str) -> tuple[int, str, list]:
        """How many points (or batches) run at once on CPU threads, why (see ``streams``), and
        the replicas made while deciding (an unfolded model's copy proves it can be copied)."""
        if value != "auto" and not (isinstance(value, numbers.Integral) and not isinstance(value, bool)
                                    and value >= 1):
            raise LlvError(f"eval.streams must be auto or a whole number >= 1, got {value!r}")
        threads = torch.get_num_threads()
        count = threads if value == "auto" else int(value)
        why_not = ""
        if count <= 1:
            why_not = "one thread" if value == "auto" else "streams=1"
        elif self.device.type != "cpu":
            why_not = f"on {self.device.type} the device runs one pass at a time"
        elif self.points_per_batch > 1:
            why_not = "points_per_batch > 1 (vmapped passes)"
        elif self.bn_data is not None:
            why_not = "bn=recompute estimates statistics batch by batch"
        elif compile == "on":
            why_not = "compile=on (compiled code runs on one thread at a time)"
        elif self.folded is not None and not self.folded.copyable:
            why_not = "the model cannot be copied"
        elif value == "auto" and (callable(self.loss) or self.accuracy is not None):
            why_not = "a custom loss or accuracy may not be safe to call from several threads (streams=N runs it so)"
        elif value == "auto" and has_forward_hooks(self.model):
            why_not = "the model has forward hooks (streams=N runs copies of them at once)"
        if why_not:
            return 1, why_not, []
        ready = []
        if self.folded is None:
            try:
                ready.append(self._replica())
            except Exception as error:
                return 1, f"the model cannot be copied ({type(error).__name__})", []
        return (count, f"{count} points (or one point's batches) at once, each op on "
                f"{max(1, threads // count)} thread(s)", ready)

    def _replica(self) -> FoldedForward | nn.Module:
        """The forward on its own copy of the modules (see :meth:`_runner`)."""
        if self.folded is not None:
            return self.folded.replica()
        return copy.deepcopy(self.model).eval()

    def _choose_compile(self, mode: str, expected_points: int):
        """``compile=auto|on``: torch.compile the one-point forward when the run repays it."""
        from llv.fold import compile_forward, estimate_compile_seconds

        if mode == "off" or self.points_per_batch > 1 or self.bn_data or callable(self.loss):
            return None
        first = next(iter(next(iter(self.data.values()))))
        args, kwargs, _ = split_batch(first)
        if kwargs or len(args) != 1:
            return None
        passes = max(int(expected_points), 1) * sum(len(d) for d in self.data.values())
        centre = {n: t[0] for n, t in self.point_tensors(torch.zeros(1, self.points.directions.shape[0])).items()}
        with eval_mode(self.model), precision_flags(self.precision, self.device), self._autocast():
            choice = compile_forward(lambda params, x: self._forward(params, (x,), {}), (centre, args[0]),
                                     passes, mode,
                                     compile_seconds_estimate=estimate_compile_seconds(self.model))
        if choice.compiled:
            compiled = choice.forward
            self._forward_one = lambda params, args, kwargs: compiled(params, *args)
        return choice

    @property
    def metrics(self) -> list[str]:
        names = []
        for split in self.data:
            names += [f"{split}_loss"] + ([f"{split}_acc"] if self.with_accuracy[split] else []) + [
                f"{split}_loss_se"]
            if self.approx is not None:
                names += [f"{split}_n"] + ([f"{split}_acc_se"] if self.with_accuracy[split] else [])
        return names

    def point_tensors(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """θ + coefficients @ directions as ``name -> (k, *shape)`` tensors; BatchNorm running
        variances kept at or above :func:`variance_floors` (see there)."""
        tensors = self.points.tensors(coefficients)
        for name, floor in self.variance_floors.items():
            tensors[name] = torch.maximum(tensors[name], floor)
        return tensors

    @torch.no_grad()
    def evaluate(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics of every row of ``coefficients`` (k, D), as device tensors of shape (k,)."""
        coefficients = torch.as_tensor(coefficients)
        groups = [coefficients[i:i + self.points_per_batch]
                  for i in range(0, len(coefficients), self.points_per_batch)]
        with eval_mode(self.model), precision_flags(self.precision, self.device):
            if self.streams is not None and len(groups) > 1:
                parts = self.streams.map(self._evaluate_group, groups)
            else:
                parts = [self._evaluate_group(g) for g in groups]
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def _evaluate_group(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.approx is not None:
            parts = [self._evaluate_subsets(c[None]) for c in coefficients]
            return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        vmapped = len(coefficients) > 1 and not self.bn_data and not callable(self.loss)
        if len(coefficients) > 1 and not vmapped:
            parts = [self._evaluate_group(c[None]) for c in coefficients]
            return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}
        params = self.point_tensors(coefficients)
        if self.bn_data:
            params.update({n: t[None] for n, t in self.recompute_bn({n: t[0] for n, t in params.items()}).items()})
        k = len(coefficients)
        one = {n: t[0] for n, t in params.items()}
        bound = None
        out = {}
        for split, batches in self.data.items():
            total = torch.zeros(k, dtype=torch.float64, device=self.device)
            squares = torch.zeros_like(total)
            correct = torch.zeros_like(total)

            in_streams = (self.streams is not None and not vmapped and len(batches) > 1
                          and batches.resident  # streamed data: one batch in memory at a time
                          and getattr(self.streams.local, "runner", None) is None)
            if vmapped:
                forward = partial(self._forward_many, params)
            elif in_streams:  # each stream runs its own copy, folded per batch
                forward = partial(self._forward_one, one)
            else:  # one point on this thread: folded once for all its batches
                bound = bound or self._bound(one)
                forward = bound
            sums = partial(self._batch_sums, split=split, forward=forward, vmapped=vmapped)
            # one point alone: its batches at once; the sums are added in batch order either way
            for loss_sum, square_sum, hit_sum in (self.streams.map(sums, list(batches)) if in_streams
                                                  else map(sums, batches)):
                total += loss_sum
                squares += square_sum
                if hit_sum is not None:
                    correct += hit_sum
            n = batches.num_examples
            mean = total / n
            variance = (squares - n * mean ** 2).clamp_min(0) / max(n - 1, 1)
            out[f"{split}_loss"] = mean
            if self.with_accuracy[split]:
                out[f"{split}_acc"] = 100.0 * correct / n
            out[f"{split}_loss_se"] = (variance / n).sqrt()
        return out

    def _batch_sums(self, batch, split: str, forward: Callable, vmapped: bool):
        """Sums of the per-example losses, their squares and hits over one batch, per point."""
        if self.streams is not None:
            self.streams.check()
        args, kwargs, targets = split_batch(batch)
        with self._autocast():
            outputs = forward(args, kwargs)
        losses, hits = self._per_example(outputs, batch, targets, split, vmapped)
        return losses.sum(dim=-1), (losses ** 2).sum(dim=-1), None if hits is None else hits.sum(dim=-1)

    def _evaluate_subsets(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """One point on growing seeded subsets until its standard error is small enough."""
        with self.approx.point_lock(coefficients[0].detach().cpu().double().numpy()):
            return self._evaluate_subsets_unlocked(coefficients)

    def _evaluate_subsets_unlocked(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        params = self.point_tensors(coefficients)
        row = coefficients[0].detach().cpu().double().numpy()
        if self.bn_data:
            fresh = self.approx.bn_statistics(row, lambda: self.recompute_bn({n: t[0] for n, t in params.items()}))
            params.update({n: t[None] for n, t in fresh.items()})
        one = {n: t[0] for n, t in params.items()}
        forward = self._bound(one)
        out = {}
        for split in self.data:
            total = squares = correct = correct_squares = 0.0
            n = 0
            population = self.data[split].num_examples
            memo = self.approx.memo(split, row)
            for index, stage in enumerate(self.approx.stages(split, row)):
                if memo is not None and index < len(memo):
                    total, squares, correct, correct_squares, n = memo[index]
                    mean, se = subset_mean_and_se(total, squares, n, population)
                    if self.approx.good_enough(mean, se, n):
                        break
                    continue
                for batch in stage:
                    if self.streams is not None:
                        self.streams.check()
                    args, kwargs, targets = split_batch(batch)
                    with self._autocast():
                        outputs = forward(args, kwargs)
                    losses, hits = self._per_example(outputs, batch, targets, split, False)
                    total += float(losses.sum())
                    squares += float((losses ** 2).sum())
                    if hits is not None:
                        correct += float(hits.sum())
                        correct_squares += float((hits ** 2).sum())
                    n += int(losses.shape[-1])
                if memo is not None:
                    memo.append((total, squares, correct, correct_squares, n))
                mean, se = subset_mean_and_se(total, squares, n, population)
                if self.approx.good_enough(mean, se, n):
                    break
            out[f"{split}_loss"] = torch.tensor([mean], dtype=torch.float64)
            out[f"{split}_loss_se"] = torch.tensor([se], dtype=torch.float64)
            out[f"{split}_n"] = torch.tensor([float(n)], dtype=torch.float64)
            if self.with_accuracy[split]:
                accuracy, accuracy_se = subset_mean_and_se(correct, correct_squares, n, population)
                out[f"{split}_acc"] = torch.tensor([100.0 * accuracy], dtype=torch.float64)
                out[f"{split}_acc_se"] = torch.tensor([100.0 * accuracy_se], dtype=torch.float64)
        return out

    def _per_example(self, outputs, batch, targets, split: str, vmapped: bool):
        if callable(self.loss):
            losses = per_example_values(self.loss, outputs, batch).double().reshape(1, -1)
            hits = (per_example_values(self.accuracy, outputs, batch, "accuracy").double().reshape(1, -1)
                    if self.accuracy is not None else None)
            return losses, hits
        losses = per_example_loss(outputs, targets, self.loss).double()
        hits = per_example_correct(outputs, targets) if self.with_accuracy[split] else None
        if not vmapped:
            losses = losses[None]
            hits = hits[None] if hits is not None else None
        return losses, hits

    def recompute_bn(self, point: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fresh BatchNorm running statistics of the network at ``point``, from ``bn_data``."""
        fresh = {}
        for name in self.bn_buffers:
            like = self.fixed.get(name, point.get(name))
            fill = 1.0 if name.endswith("running_var") else 0.0
            fresh[name] = torch.full(like.shape, fill, dtype=like.dtype, device=like.device)
        state = {**self.fixed, **point, **fresh}
        saved = [(m, m.training, m.momentum) for m in self.bn_modules]
        try:
            for m in self.bn_modules:
                m.train()
                m.momentum = None  # cumulative average over batches
            for batch in self.bn_data:
                args, kwargs, _ = split_batch(batch)
                with self._autocast():
                    functional_call(self.model, state, args, kwargs)
        finally:
            for m, training, momentum in saved:
                m.train(training)
                m.momentum = momentum
        return fresh

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@contextlib.contextmanager
def precision_flags(precision: str, device: torch.device) -> Iterator[None]:
    """fp32 means true fp32 on CUDA (TF32 off); tf32 allows TF32 matmuls and convolutions.
    The process-wide flags are restored on exit."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
