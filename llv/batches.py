"""Whatever data a user hands llv, as a fixed sequence of batches that every grid point sees.

``data`` may be a :class:`~torch.utils.data.DataLoader`, a map-style
:class:`~torch.utils.data.Dataset`, an ``(inputs, targets)`` pair of tensors, llv's own
:class:`~llv.data.EvalData`, or any iterable of batches. A batch is a tuple
``(inputs, targets)`` (more leading tensors are passed to the model as more arguments) or a
dict such as ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``, passed to the model
as keyword arguments without its target key (:data:`llv.losses.TARGET_KEYS`).

The order of the batches is frozen once, when the data are read: a loader that reshuffles
every epoch would otherwise pair each grid point with different batches and, when inputs and
labels come from two iterations, with the wrong labels. Data that fit in ``memory_bytes`` are
kept on the device, read once; larger data stay in host memory and go to the device one batch
at a time (streamed).

>>> import torch
>>> data = as_batches((torch.zeros(10, 3), torch.zeros(10, dtype=torch.long)), batch_size=4)
>>> len(data), data.num_examples, [len(b[1]) for b in data]
(3, 10, [4, 4, 2])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from llv.errors import LlvError
from llv.losses import TARGET_KEYS

#: Device memory that evaluation data may take before they are streamed instead (bytes).
DEFAULT_DEVICE_MEMORY = 2 * 1024**3


def auto_batch_size(example_shape: Sequence[int], device: torch.device | str = "cpu",
                    tokens: bool = False) -> int:
    """``batch_size="auto"``: 1024 examples per pass on a GPU; on the CPU about 128k input
    values per channel per pass (128 for 32×32 images, 2048 for 8×8), a power of two in
    [64, 4096]. Larger batches of large images fall out of cache on the CPU (1024 was 1.8-2×
    slower than 128 at 32×32 in benchmarks/); small inputs gain from them.

    Token sequences (``tokens=True``: integer inputs of shape (T,)) cost far more per input value
    (embeddings, attention): about 4k tokens per pass, at least 8 sequences.

    >>> auto_batch_size((3, 32, 32)), auto_batch_size((1, 8, 8)), auto_batch_size((64,), tokens=True)
    (128, 2048, 64)
    """
    shape = tuple(int(s) for s in example_shape)
    if tokens:
        per_pass = 4096 if torch.device(device).type == "cpu" else 65536
        return int(max(8, 2 ** round(math.log2(per_pass / max(math.prod(shape), 1)))))
    if torch.device(device).type != "cpu":
        return 1024
    spatial = math.prod(shape[1:]) if len(shape) >= 3 else math.prod(shape) if shape else 1
    return int(min(max(2 ** round(math.log2(131072 / max(spatial, 1))), 64), 4096))


def resolve_batch_size(value, example_shape: Sequence[int], device, tokens: bool = False) -> int:
    """An integer batch size from ``value`` (``"auto"`` or a positive integer)."""
    if value is None or str(value) == "auto":
        return auto_batch_size(example_shape, device, tokens)
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
        raise LlvError(f"batch_size must be a positive integer or 'auto', got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------- batches


def split_batch(batch) -> tuple[tuple, dict, object]:
    """``(model args, model kwargs, targets)`` of one batch.

    >>> split_batch({"input_ids": 1, "labels": 2})
    ((), {'input_ids': 1}, 2)
    >>> split_batch((1, 2))
    ((1,), {}, 2)
    """
    if isinstance(batch, Mapping):
        key = next((k for k in TARGET_KEYS if k in batch), None)
        kwargs = {k: v for k, v in batch.items() if k != key}
        return (), kwargs, (batch[key] if key is not None else None)
    if isinstance(batch, (tuple, list)):
        if len(batch) < 2:
            raise LlvError("a batch must be (inputs, targets) or a dict with a 'labels' key")
        return tuple(batch[:-1]), {}, batch[-1]
    raise LlvError(f"a batch must be a tuple (inputs, targets) or a dict, not {type(batch).__name__}")


def per_example_values(function, outputs, batch, what: str = "loss") -> Tensor:
    """``function(outputs, batch)`` — a user's loss or accuracy — checked to hold one value per
    example of ``batch``: a scalar or another length would be averaged into a wrong number."""
    values = function(outputs, batch)
    size = batch_size_of(batch)
    if not torch.is_tensor(values) or values.dim() != 1 or values.shape[0] != size:
        got = f"shape {tuple(values.shape)}" if torch.is_tensor(values) else f"a {type(values).__name__}"
        hint = " (use reduction='none')" if torch.is_tensor(values) and values.dim() == 0 else ""
        raise LlvError(f"the {what} callable must return a tensor of one value per example, shape "
                       f"({size},), for a batch of {size}; it returned {got}{hint}")
    return values


def batch_size_of(batch) -> int:
    """Examples in a batch: the length of its targets (or of its first tensor)."""
    args, kwargs, targets = split_batch(batch)
    for candidate in (targets, *args, *kwargs.values()):
        if torch.is_tensor(candidate) and candidate.dim() > 0:
            return int(candidate.shape[0])
    raise LlvError("cannot tell the number of examples in a batch: it holds no tensor")


def pieces(batch, size: int):
    """``batch`` cut into consecutive batches of at most ``size`` examples (every tensor with
    the batch's leading length is sliced; others are shared).

    >>> [tuple(b[0].shape) for b in pieces((torch.zeros(5, 2), torch.zeros(5)), 2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    total = batch_size_of(batch)
    if size >= total:
        yield batch
        return
    for start in range(0, total, size):
        yield _map_tensors(batch, lambda t, s=start: t[s:s + size] if t.dim() > 0 and t.shape[0] == total else t)


def _map_tensors(batch, fn):
    if torch.is_tensor(batch):
        return fn(batch)
    if isinstance(batch, Mapping):
        return {k: _map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_map_tensors(v, fn) for v in batch) if isinstance(batch, tuple) else [
            _map_tensors(v, fn) for v in batch]
    return batch


def to_device(batch, device: torch.device, float_dtype: torch.dtype | None = None,
              channels_last: bool = False):
    """The batch's tensors on ``device``; floating inputs cast to ``float_dtype``; 4-D images
    in channels-last memory format if asked. Integer tensors (labels, token ids) keep their type."""
    def move(t: Tensor) -> Tensor:
        if float_dtype is not None and t.is_floating_point():
            t = t.to(device=device, dtype=float_dtype)
        else:
            t = t.to(device)
        if channels_last and t.dim() == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    return _map_tensors(batch, move)


def _nbytes(batch) -> int:
    total = 0

    def count(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    _map_tensors(batch, count)
    return total


@dataclass
class Batches:
    """A fixed sequence of batches; iterating yields each batch on :attr:`device`.

    Attributes:
        num_examples: examples over all batches.
        device: where batches are handed out.
        resident: whether the batches are kept on the device (else moved per batch).
    """

    stored: list
    num_examples: int
    device: torch.device
    resident: bool = True
    float_dtype: torch.dtype | None = None
    channels_last: bool = False

    def __iter__(self) -> Iterator:
        for batch in self.stored:
            yield batch if self.resident else to_device(batch, self.device, self.float_dtype,
                                                        self.channels_last)

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def example_shape(self) -> tuple[int, ...]:
        args, kwargs, _ = split_batch(self.stored[0])
        first = next((t for t in (*args, *kwargs.values()) if torch.is_tensor(t)), None)
        return tuple(first.shape[1:]) if first is not None else ()

    def targets(self) -> list:
        return [split_batch(b)[2] for b in self.stored]

    def cast(self, float_dtype: torch.dtype | None = None, channels_last: bool = False,
             device: torch.device | str | None = None) -> Batches:
        """The same batches with floating inputs in ``float_dtype`` (a copy where needed)."""
        device = torch.device(device) if device is not None else self.device
        if (float_dtype == self.float_dtype and channels_last == self.channels_last
                and device == self.device):
            return self
        stored = ([to_device(b, device, float_dtype, channels_last) for b in self.stored]
                  if self.resident else self.stored)
        return Batches(stored, self.num_examples, device, self.resident, float_dtype,
                       channels_last)


def _concatenate(batches: list):
    first = batches[0]
    if torch.is_tensor(first):
        return torch.cat(batches)
    if isinstance(first, Mapping):
        return {k: _concatenate([b[k] for b in batches]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_concatenate([b[i] for b in batches]) for i in range(len(first)))
    raise LlvError(f"cannot join batch entries of type {type(first).__name__}")


def _take(batch, index: Tensor):
    return _map_tensors(batch, lambda t: t[index.to(t.device)] if t.dim() > 0 else t)


def joined_examples(batches: Batches):
    """All examples of resident ``batches`` as one batch (for drawing subsets from)."""
    if not batches.resident:
        raise LlvError("the approximate mode needs the data in memory (they are streamed here)")
    try:
        return _concatenate(list(batches.stored))
    except (RuntimeError, LlvError) as exc:
        raise LlvError(f"the approximate mode needs batches of one shape to draw subsets from ({exc})") from None


def permuted_stages(joined, num_examples: int, seed: int, sizes: Sequence[int],
                    batch_size: int) -> Iterator[list]:
    """The examples of ``joined`` in a seeded random order, cut into stages (yielded lazily):
    stage ``s`` holds the examples from ``sizes[s-1]`` (0 for the first) to ``sizes[s]``, in
    batches of at most ``batch_size``. The first ``sizes[s]`` examples are a uniform random
    subset without replacement, nested in the next stage's.

    >>> data = as_batches((torch.arange(10.0)[:, None], torch.arange(10)), batch_size=4)
    >>> joined = joined_examples(data)
    >>> [[len(b[1]) for b in stage] for stage in permuted_stages(joined, 10, 0, [2, 4, 10], 3)]
    [[2], [2], [3, 3]]
    """
    order = torch.randperm(num_examples, generator=torch.Generator().manual_seed(int(seed)))
    start = 0
    for size in sizes:
        stop = min(int(size), num_examples)
        yield [_take(joined, order[i:min(i + batch_size, stop)]) for i in range(start, stop, batch_size)]
        start = stop


def _is_tensor_pair(data) -> bool:
    return (isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)
            and data[0].dim() > 0 and data[1].dim() > 0 and len(data[0]) == len(data[1]))


def _frozen_loader(loader) -> Iterable:
    """A loader over the same data whose order is drawn once (reshuffling loaders are frozen)."""
    from torch.utils.data import DataLoader, SequentialSampler

    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if isinstance(sampler, SequentialSampler) or loader.dataset is None:
        return loader
    if batch_sampler is None:  # iterable-style dataset or custom batching: materialize
        return loader
    frozen = [list(indices) for indices in batch_sampler]  # one draw of the order, kept
    return DataLoader(loader.dataset, batch_sampler=frozen, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory)


def as_batches(data, *, batch_size="auto", device: torch.device | str | None = None,
               float_dtype: torch.dtype | None = None, channels_last: bool = False,
               memory_bytes: int | None = None) -> Batches:
    """``data`` (see the module docstring) as :class:`Batches` in a frozen order.

    Args:
        batch_size: examples per batch for tensors and datasets (``"auto"``: see
            :func:`auto_batch_size`); loaders and iterables of batches keep their own.
        device: where batches go (default: the CPU).
        float_dtype: cast floating inputs to this dtype (e.g. ``torch.float64``).
        channels_last: 4-D floating inputs in channels-last memory format.
        memory_bytes: device memory the data may take before they are streamed
            (default :data:`DEFAULT_DEVICE_MEMORY`).
    """
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    device = torch.device(device if device is not None else "cpu")
    budget = DEFAULT_DEVICE_MEMORY if memory_bytes is None else int(memory_bytes)
    if isinstance(data, Batches):
        return data.cast(float_dtype, channels_last, device)
    if hasattr(data, "inputs") and hasattr(data, "targets") and torch.is_tensor(data.inputs):
        data = (data.inputs, data.targets)  # llv.data.EvalData
    if (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, np.ndarray) for t in data)):
        data = tuple(torch.from_numpy(np.ascontiguousarray(t)) for t in data)  # a NumPy (X, y) pair
    if (isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data)
            and not _is_tensor_pair(data)):
        raise LlvError("an (inputs, targets) pair needs one target per input along dim 0: got inputs "
                       f"{tuple(data[0].shape)} and targets {tuple(data[1].shape)}")
    if _is_tensor_pair(data):
        inputs, targets = data
        size = resolve_batch_size(batch_size, tuple(inputs.shape[1:]), device,
                                  tokens=not inputs.is_floating_point())
        stored = [(inputs[i:i + size], targets[i:i + size]) for i in range(0, len(targets), size)]
        source = stored
    elif isinstance(data, DataLoader):
        if data.batch_size is None and data.batch_sampler is None:
            raise LlvError("a DataLoader with batch_size=None yields single examples, not batches: "
                           "give it a batch_size")
        source = _frozen_loader(data)
    elif isinstance(data, Dataset) and not isinstance(data, IterableDataset) and hasattr(data, "__len__"):
        if len(data) == 0:
            raise LlvError("the data set is empty")
        example = data[0]
        shape = tuple(example[0].shape) if isinstance(example, (tuple, list)) and torch.is_tensor(
            example[0]) else ()
        source = DataLoader(data, batch_size=resolve_batch_size(batch_size, shape, device),
                            shuffle=False)
    elif isinstance(data, Iterable) and not torch.is_tensor(data) and not isinstance(data, (str, bytes, Mapping)):
        source = data
    else:
        raise LlvError(f"cannot use {type(data).__name__} as data: pass a DataLoader, a Dataset, "
                       "an (inputs, targets) pair of tensors or an iterable of batches")
    stored, total, used = [], 0, 0
    for batch in source:
        split_batch(batch)  # a clear error for a malformed batch
        total += batch_size_of(batch)
        used += _nbytes(batch)
        stored.append(batch)
    if not stored:
        raise LlvError("the data hold no batches")
    resident = used <= budget or device.type == "cpu"
    if resident:
        stored = [to_device(b, device, float_dtype, channels_last) for b in stored]
    return Batches(stored, total, device, resident, float_dtype, channels_last)


def as_split_batches(data, **options) -> dict[str, Batches]:
    """``{split: Batches}``: a mapping of split names to data, or one data set as ``train``."""
    if isinstance(data, Mapping) and data and all(isinstance(k, str) for k in data) and not (
            any(k in data for k in TARGET_KEYS)):
        return {str(k): as_batches(v, **options) for k, v in data.items()}
    return {"train": as_batches(data, **options)}
