"""Checkpoints: save atomically, load llv's, bare and reference files, check keys, hash.

llv's format is a dict ``{"state_dict", "epoch", "model", "dataset", "config", "metrics"}``
(training adds ``optimizer``, ``scheduler`` and ``rng`` so a run can resume). ``config`` is the
run's configuration as plain dicts (a YAML text in files of older versions), so the model can be
rebuilt from the file alone (:func:`model_config_of`). Plain values only: no config objects. A bare
``state_dict`` and the reference implementation's ``{"state_dict", "acc", "epoch"}`` ``.t7``
files load too; a ``module.`` prefix (``nn.DataParallel``) is stripped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llv.console import LlvError, log

_SHOWN_KEYS = 3  # how many differing keys a "does not fit" message names per kind


def save_checkpoint(path, model, epoch: int, config: Mapping | None = None,
                    metrics: Mapping | None = None, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and provenance to ``path`` atomically.

    The file is written next to ``path`` and moved into place with ``os.replace``, so a run killed
    at any moment leaves either the old file or the new one, never half of one. Ctrl-C and
    SIGTERM wait until the file is written (:func:`llv.runlock.held_signals`).

    Args:
        path: Destination file (``.pt``); parent folders are created.
        model: The module whose ``state_dict`` (as CPU tensors) is stored.
        epoch: Training epoch of these weights (0 = before training).
        config: The run's configuration as a mapping (a plain ``dict``; any ``Mapping`` is
            copied into one). Stored as ``"config"``; its ``model`` entry lets
            :func:`model_config_of` rebuild the model, its ``model.name`` and ``dataset.name``
            are also stored as ``"model"`` and ``"dataset"``.
        metrics: Numbers to keep with the weights (e.g. ``{"test_acc": 97.2}``).
        extra: More top-level entries (training state for resuming).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        LlvError: The file cannot be written (full disk, read-only, ...): one line, the previous
            file at ``path`` is left intact.
    """
    import io

    import torch

    from llv.fsio import atomic_write
    from llv.runlock import held_signals

    path = Path(path)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    plain = plain_config(config)
    payload = {
        "state_dict": state,
        "epoch": int(epoch),
        "model": _lookup(plain, "model", "name"),
        "dataset": _lookup(plain, "dataset", "name"),
        "config": plain,
        "metrics": {str(k): _plain(v) for k, v in (metrics or {}).items()},
    }
    payload.update(extra or {})
    # Serialized in memory first: torch's own file writer turns a full disk into an opaque
    # RuntimeError, a plain write() gives the OSError that becomes one clear line.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with held_signals():
        return atomic_write(path, lambda handle: handle.write(buffer.getbuffer()), "checkpoint")


def load_checkpoint(path) -> dict:
    """The raw content of a checkpoint file, on the CPU (safe unpickling first).

    Falls back to full unpickling only for legacy files that the safe loader refuses (the
    reference implementation's ``.t7`` files store NumPy scalars); only load files you trust.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise LlvError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as safe_error:  # any refusal means: try the legacy way
        log.debug("checkpoint %s is not loadable with weights_only=True (%s); "
                  "loading it as a legacy pickle", path, " ".join(str(safe_error).split())[:200])
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise LlvError(f"checkpoint {path} is not a PyTorch checkpoint: "
                       f"{' '.join(str(exc).split())[:200]}") from None


def load_state_dict(path) -> tuple[dict, dict]:
    """``(state_dict, meta)`` from llv's, a bare, or the reference implementation's checkpoint.

    ``meta`` holds every other top-level entry (``epoch``, ``model``, ``metrics``, ``acc`` …;
    empty for a bare ``state_dict``). Keys lose a leading ``module.`` (DataParallel).
    """
    import torch

    content = load_checkpoint(path)
    if isinstance(content, torch.nn.Module):  # torch.save(model) in an old script
        content = {"state_dict": content.state_dict()}
    if not isinstance(content, Mapping):
        raise LlvError(f"checkpoint {path} holds a {type(content).__name__}, not a state_dict")
    if isinstance(content.get("state_dict"), Mapping):
        state, meta = content["state_dict"], {k: v for k, v in content.items() if k != "state_dict"}
    elif content and all(isinstance(v, torch.Tensor) for v in content.values()):
        state, meta = content, {}
    else:
        keys = ", ".join(sorted(str(k) for k in content)[:8])
        raise LlvError(f"checkpoint {path} has no state_dict (its keys: {keys or 'none'})")
    return {_strip_module(str(k)): v for k, v in state.items()}, dict(meta)


def load_into(model, path, model_name: str | None = None) -> dict:
    """Load a checkpoint into ``model`` strictly; return its ``meta``.

    A checkpoint that does not fit raises one :class:`LlvError` line naming the first few missing,
    unexpected and mis-shaped keys. A BatchNorm ``num_batches_tracked`` that old files lack is
    taken from the model.
    """
    state, meta, problem = fitted_state(model, path)
    if problem:
        name = model_name or type(model).__name__
        raise LlvError(f"checkpoint {path} does not fit model {name}: {problem}")
    model.load_state_dict(state, strict=True)
    return meta


def fitted_state(model, path) -> tuple[dict, dict, str]:
    """A checkpoint's state dict (a BatchNorm ``num_batches_tracked`` that old files lack taken
    from ``model``), its ``meta``, and why it does not fit ``model`` ('' if it does); the model
    is not touched."""
    state, meta = load_state_dict(path)
    expected = model.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    return state, meta, fit_problem(expected, state)


def fit_problem(expected: Mapping, state: Mapping) -> str:
    """What keeps ``state`` from loading into a model with ``expected`` state; ``""`` if nothing."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [k for k in expected if k in state
              and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {_first(missing)}")
    if unexpected:
        parts.append(f"unexpected {_first(unexpected)}")
    if shapes:
        parts.append("shape " + _first([
            f"{k} {_shape(state[k])} (checkpoint) vs {_shape(expected[k])} (model)" for k in shapes
        ]))
    return "; ".join(parts)


def sha256(path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (provenance of directions and surfaces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_config_of(path) -> dict | None:
    """The model config a checkpoint was trained with (``{"name": ..., ...}``), or None.

    llv's checkpoints store their run's configuration (a dict; a YAML text in older files);
    bare ``state_dict`` files and the reference implementation's carry none.
    """
    _, meta = load_state_dict(path)
    config = meta.get("config")
    if isinstance(config, str):
        import yaml

        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError:
            return None
    model = config.get("model") if isinstance(config, Mapping) else None
    return plain_config(model) if isinstance(model, Mapping) else None


def check_finite(state_dict: Mapping, path) -> None:
    """Refuse weights that hold NaN or infinity, naming the first such tensor.

    Raises:
        LlvError: ``"checkpoint PATH has non-finite weights: conv1.weight holds 3 NaN and 0 inf
            of 432 values ..."``.
    """
    import torch

    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return
    first = state_dict[bad[0]]
    nans, infs = int(torch.isnan(first).sum()), int(torch.isinf(first).sum())
    more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
    raise LlvError(f"checkpoint {path} has non-finite weights: {bad[0]} holds {nans} NaN and "
                   f"{infs} inf of {first.numel()} values{more}; pass strict=false to evaluate "
                   "it anyway (its points are recorded as NaN)")


def latest_trained(outputs, model: str | None = None, dataset: str | None = None) -> Path:
    """``<outputs>/train/latest/final.pt``, checked to be trained for ``model`` on ``dataset``.

    A name that is None is not checked.

    Raises:
        LlvError: The latest training run is missing, unfinished or was trained for another
            model or data set (one line that says how to get a checkpoint).
    """
    final = Path(str(outputs or "outputs")) / "train" / "latest" / "final.pt"
    wanted = " ".join(f"{k}={v}" for k, v in (("model", model), ("dataset", dataset)) if v)
    advice = f"run `llv train{' ' + wanted if wanted else ''}` or pass checkpoint=PATH"
    if not final.is_file():
        raise LlvError(f"no checkpoint given and {final} is missing: {advice}")
    _, meta = load_state_dict(final)
    trained = (meta.get("model"), meta.get("dataset"))
    if (model is not None and trained[0] != model) or (dataset is not None and trained[1] != dataset):
        raise LlvError(f"no checkpoint given and {final} was trained for model {trained[0]} on "
                       f"{trained[1]}, not {model} on {dataset}: {advice}")
    return final


def default_checkpoint(cfg) -> Path:
    """Deprecated: use :func:`llv.tasks._checkpoints.default_checkpoint` (kept for old callers).

    ``cfg["checkpoint"]`` if given, else :func:`latest_trained` for its model and data set.
    """
    config = plain_config(cfg)
    given = config.get("checkpoint")
    if given:
        return Path(str(given))
    return latest_trained(config.get("outputs"), _lookup(config, "model", "name"),
                          _lookup(config, "dataset", "name"))


def plain_config(config) -> dict | None:
    """A configuration mapping as plain dicts, lists and scalars (what safe unpickling accepts).

    Values that cannot be read (a missing mandatory value) become None; other objects their text.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, not {type(config).__name__}")
    return _plain_tree(config)


# ------------------------------------------------------------------------------------ helpers


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = len(items) - _SHOWN_KEYS
    return f"{shown} (+{more} more)" if more > 0 else shown


def _shape(tensor) -> str:
    return "[" + ",".join(str(s) for s in tensor.shape) + "]"


def _lookup(config: Mapping | None, *keys: str):
    node = config
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _plain_tree(node):
    if isinstance(node, Mapping):
        plain = {}
        for key in list(node.keys()):
            try:
                value = node[key]
            except Exception:  # an unresolvable or missing value of a config object
                value = None
            plain[str(key)] = _plain_tree(value)
        return plain
    if isinstance(node, (list, tuple)) or (isinstance(node, Sequence)
                                             and not isinstance(node, (str, bytes))):
        return [_plain_tree(v) for v in node]
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, os.PathLike):
        return os.fspath(node)
    plain = _plain(node)
    return plain if isinstance(plain, (bool, int, float, str)) else str(node)


def _plain(value):
    """A metric as a Python number (tensors and NumPy scalars would need unsafe unpickling)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
