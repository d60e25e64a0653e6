"""The compute device named by ``cfg.device``."""

from __future__ import annotations

from llv.console import LlvError


def resolve_device(spec: object = "auto"):
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a device.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    name = str(spec if spec is not None else "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise LlvError(f"unknown device '{spec}'; valid: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LlvError(f"device={spec} but CUDA is not available here; "
                           "use device=cpu or device=auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise LlvError(f"device={spec} but only {count} CUDA device(s) are visible "
                           f"(cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise LlvError(f"device={spec} but MPS is not available here; "
                       "use device=cpu or device=auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise LlvError(f"unsupported device '{spec}'; valid: auto, cpu, cuda, cuda:N, mps")
    return device
