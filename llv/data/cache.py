"""The data layer's one cache: the splits read from disk and the tensors built from them.

It holds two kinds of entries, under keys that name the files (with their sizes and modification
times), the settings that change what is read, and for tensors the device, dtype and subset:

- **splits as stored** (:class:`~llv.data.source.RawSplit`, :class:`~llv.data.source.TokenSplit`)
  are held *weakly*: one stays alive only while something uses it (a training split that
  augments its pixels, say), and every user of the same split then shares the one copy. Once
  the normalized evaluation tensors exist, nothing keeps the stored split alive beside them.
- **evaluation tensors** (:class:`~llv.data.evaluation.EvalData`) are held strongly, the
  :data:`MAX_TENSORS` most recently used ones, so every grid point and every command of a
  process shares them.

>>> entry = tensors(("doc",), lambda: [1, 2])
>>> tensors(("doc",), lambda: [3]) is entry
True
>>> clear()
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_TENSORS = 4  # evaluation tensors kept: train and test, each at two precisions

_stored: weakref.WeakValueDictionary[tuple, object] = weakref.WeakValueDictionary()
_tensors: OrderedDict[tuple, object] = OrderedDict()


def stored(key: tuple, read: Callable[[], T]) -> T:
    """The split under ``key`` while anything still uses it, else ``read()`` (then shared)."""
    value = _stored.get(key)
    if value is None:
        value = read()
        _stored[key] = value
    return value


def tensors(key: tuple, build: Callable[[], T]) -> T:
    """The tensors under ``key``, built once with ``build()`` and kept (least recently used out)."""
    if key in _tensors:
        _tensors.move_to_end(key)
        return _tensors[key]
    value = build()
    _tensors[key] = value
    while len(_tensors) > MAX_TENSORS:
        _tensors.popitem(last=False)
    return value


def clear() -> None:
    """Forget every entry (the next load reads the files again; device memory is released)."""
    _stored.clear()
    _tensors.clear()
