"""Checkpoints: save atomically, load llv's, bare and reference files, check keys, hash.

llv's format is a dict ``{"state_dict", "epoch", "model", "dataset", "config", "metrics"}``
(training adds ``optimizer``, ``scheduler`` and ``rng`` so a run can resume). A bare
``state_dict`` and the reference implementation's ``{"state_dict", "acc", "epoch"}`` ``.t7``
files load too; a ``module.`` prefix (``nn.DataParallel``) is stripped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llv.console import LlvError, log

_SHOWN_KEYS = 3  # how many differing keys a "does not fit" message names per kind


def save_checkpoint(path, model, epoch: int, cfg=None, metrics: Mapping | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and provenance to ``path`` atomically.

    The file is written next to ``path`` and moved into place with ``os.replace``, so a run killed
    at any moment leaves either the old file or the new one, never half of one.

    Args:
        path: Destination file (``.pt``); parent folders are created.
        model: The module whose ``state_dict`` (as CPU tensors) is stored.
        epoch: Training epoch of these weights (0 = before training).
        cfg: The run's config; its ``model.name``, ``dataset.name`` and YAML are stored.
        metrics: Numbers to keep with the weights (e.g. ``{"test_acc": 97.2}``).
        extra: More top-level entries (training state for resuming).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import torch

    path = Path(path)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    payload = {
        "state_dict": state,
        "epoch": int(epoch),
        "model": _cfg_value(cfg, "model.name"),
        "dataset": _cfg_value(cfg, "dataset.name"),
        "config": _cfg_yaml(cfg),
        "metrics": {str(k): _plain(v) for k, v in (metrics or {}).items()},
    }
    payload.update(extra or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    state, meta = load_state_dict(path)
    expected = model.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = expected[key]
    problem = fit_problem(expected, state)
    if problem:
        name = model_name or type(model).__name__
        raise LlvError(f"checkpoint {path} does not fit model {name}: {problem}")
    model.load_state_dict(state, strict=True)
    return meta


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


def default_checkpoint(cfg) -> Path:
    """``cfg.checkpoint``, else ``<outputs>/train/latest/final.pt`` if trained for this model.

    Raises:
        LlvError: No checkpoint was given and the latest training run is missing, unfinished or
            was trained for another model or data set.
    """
    given = _cfg_value(cfg, "checkpoint")
    if given:
        return Path(str(given))
    model, dataset = _cfg_value(cfg, "model.name"), _cfg_value(cfg, "dataset.name")
    final = Path(str(_cfg_value(cfg, "outputs") or "outputs")) / "train" / "latest" / "final.pt"
    advice = f"run `llv train model={model} dataset={dataset}` or pass checkpoint=PATH"
    if not final.is_file():
        raise LlvError(f"no checkpoint given and {final} is missing: {advice}")
    _, meta = load_state_dict(final)
    trained = (meta.get("model"), meta.get("dataset"))
    if trained != (model, dataset):
        raise LlvError(f"no checkpoint given and {final} was trained for model {trained[0]} on "
                       f"{trained[1]}, not {model} on {dataset}: {advice}")
    return final


# ------------------------------------------------------------------------------------ helpers


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_KEYS])
    more = len(items) - _SHOWN_KEYS
    return f"{shown} (+{more} more)" if more > 0 else shown


def _shape(tensor) -> str:
    return "[" + ",".join(str(s) for s in tensor.shape) + "]"


def _cfg_value(cfg, key: str):
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.select(cfg, key, default=None)
    node = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _cfg_yaml(cfg) -> str | None:
    if cfg is None:
        return None
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        return OmegaConf.to_yaml(cfg, resolve=True)
    return OmegaConf.to_yaml(OmegaConf.create(dict(cfg)))


def _plain(value):
    """A metric as a Python number (tensors and NumPy scalars would need unsafe unpickling)."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
