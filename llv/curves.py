"""Low-loss curves between two minima (Garipov et al., 2018, "Loss Surfaces, Mode Connectivity,
and Fast Ensembling of DNNs"): train a curve θ(t), t ∈ [0, 1], from θ_A to θ_B, and compare the
loss along it with the loss along the straight line.

Two curves, each with one trained control point θ_M:

- ``bezier``: the quadratic Bézier curve θ(t) = (1−t)²·θ_A + 2t(1−t)·θ_M + t²·θ_B;
- ``polychain``: a polygonal chain with one bend, θ_A → θ_M for t < ½, θ_M → θ_B after.

Only θ_M is trained (it starts at the midpoint of the line), on the mean training loss at a
curve point whose t is drawn uniformly per batch; the ends are fixed tensors and the caller's
models are never modified. Every curve point is c_A·θ_A + c_M·θ_M + c_B·θ_B with coefficients
that sum to one (:func:`path_coefficients`), so t = 0 and t = 1 are θ_A and θ_B bit for bit,
the curve lies in the plane through A, M and B (:meth:`Connection.plane`), and the line is the
path with c_M = 0.

Along t the curve and the line are evaluated alike: BatchNorm statistics re-estimated at each
t on the training data (``bn="recompute"``, as ``torch.optim.swa_utils.update_bn``), or the
stored statistics interpolated between A and B (``bn="stored"``). A path's barrier is the
largest loss along it minus the mean of the two ends' losses.

With ``checkpoint_dir`` the control point, the optimizer and every random stream are saved
after each epoch (``curve_epoch_NNN.pt``, atomically); a later call with the same settings
resumes from the last one, and the result equals an uninterrupted run bit for bit.

``llv.connect`` is this module's :func:`connect` (the module is not named ``connect``: importing
a submodule sets the package attribute of its name, which would hide the function).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from llv.batches import as_split_batches, per_example_values, split_batch, to_device
from llv.console import log
from llv.errors import LlvError
from llv.losses import check_loss, per_example_loss
from llv.params import ParameterSpace, flatten, values_of

PATHS = ("bezier", "polychain")
BN_MODES = ("recompute", "stored")
OPTIMIZERS = ("sgd", "adam")
CHECKPOINT = re.compile(r"^curve_epoch_(\d+)\.pt$")
LABELS = ("A", "B", "M")
"""How figures name the two ends and the control point."""


def path_coefficients(path: str, t) -> np.ndarray:
    """(k, 3) coefficients (c_A, c_M, c_B) of the curve points at ``t``; each row sums to 1.

    >>> path_coefficients("bezier", [0.0, 0.5, 1.0]).tolist()
    [[1.0, 0.0, 0.0], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]
    >>> path_coefficients("polychain", [0.25, 0.75]).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    >>> path_coefficients("line", [0.25]).tolist()
    [[0.75, 0.0, 0.25]]
    """
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    if path == "bezier":
        return np.stack([(1 - t) ** 2, 2 * t * (1 - t), t ** 2], axis=1)
    if path == "polychain":
        first = t < 0.5
        return np.stack([np.where(first, 1 - 2 * t, 0.0), np.where(first, 2 * t, 2 - 2 * t),
                         np.where(first, 0.0, 2 * t - 1)], axis=1)
    if path == "line":
        return np.stack([1 - t, np.zeros_like(t), t], axis=1)
    raise LlvError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")


def barrier(losses) -> float:
    """The largest loss along a path minus the mean of its two ends' losses.

    >>> barrier([1.0, 3.0, 2.0])
    1.5
    """
    losses = np.asarray(losses, dtype=np.float64)
    return float(np.max(losses) - 0.5 * (losses[0] + losses[-1]))


# ------------------------------------------------------------------------------ result


@dataclass
class CurvePlane:
    """The plane through A, B and the control point M, with both paths in its coordinates.

    Attributes:
        directions: :class:`llv.direction.Directions` of kind ``plane`` (x along θ_B − θ_A),
            to compute a surface with ``llv.surface(model_a, data, directions=...)``.
        vertices: (3, 2) coordinates of A, B and M (rows in :data:`LABELS` order).
        curve, line: (n, 2) coordinates of the curve's and the line's points at ``t``.
    """

    directions: object
    vertices: np.ndarray
    curve: np.ndarray
    line: np.ndarray

    def extent(self, margin: float = 0.2) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((xmin, xmax), (ymin, ymax))`` around the three points with ``margin`` × their span."""
        points = np.vstack([self.vertices, self.curve])
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.maximum(high - low, 1e-12)
        return tuple((float(lo - margin * s), float(hi + margin * s))  # type: ignore[return-value]
                     for lo, hi, s in zip(low, high, span))


@dataclass
class Connection:
    """The trained curve between two models and the straight line, evaluated along t.

    Attributes:
        t: the evaluated t values in [0, 1].
        curve, line: metric name (``<split>_loss``, ``<split>_acc``, ``<split>_loss_se``) ->
            values along t for each path.
        control: θ_M as a state dict of the models' architecture (the trained parameters;
            floating buffers at the midpoint of A's and B's, integer buffers A's), with every
            key of ``state_dict()``: a tied tensor's alias holds its first name's tensor.
        path: ``bezier`` or ``polychain``.
        history: the mean training loss of each epoch.
        attrs: the settings and the barriers (``curve_barrier_<split>_loss``, ...).
    """

    t: np.ndarray
    curve: dict[str, np.ndarray]
    line: dict[str, np.ndarray]
    control: dict[str, torch.Tensor]
    path: str = "bezier"
    history: np.ndarray = field(default_factory=lambda: np.zeros(0))
    attrs: dict = field(default_factory=dict)

    @property
    def split(self) -> str:
        """The first split (the training data when there are several)."""
        return next(k for k in self.curve if k.endswith("_loss"))[: -len("_loss")]

    @property
    def curve_loss(self) -> np.ndarray:
        return self.curve[f"{self.split}_loss"]

    @property
    def line_loss(self) -> np.ndarray:
        return self.line[f"{self.split}_loss"]

    @property
    def curve_acc(self) -> np.ndarray | None:
        return self.curve.get(f"{self.split}_acc")

    @property
    def line_acc(self) -> np.ndarray | None:
        return self.line.get(f"{self.split}_acc")

    @property
    def barriers(self) -> dict[str, float]:
        """``<path>_<split>_loss`` -> barrier, for both paths and every split."""
        return {f"{name}_{metric}": barrier(values[metric])
                for name, values in (("curve", self.curve), ("line", self.line))
                for metric in values if metric.endswith("_loss")}

    @property
    def curve_barrier(self) -> float:
        return barrier(self.curve_loss)

    @property
    def line_barrier(self) -> float:
        return barrier(self.line_loss)

    def save(self, path: str | Path) -> Path:
        """Write both paths to an HDF5 file and θ_M beside it as a checkpoint
        (``<stem>_control.pt``, loadable by :func:`llv.checkpoint.load_state_dict`)."""
        from llv.fsio import atomic_write
        from llv.h5 import atomic_h5, encode_attr

        path = Path(path)
        control_path = path.with_name(f"{path.stem}_control.pt")
        buffer = io.BytesIO()
        torch.save({"state_dict": {k: v.detach().cpu() for k, v in self.control.items()},
                    "epoch": int(self.attrs.get("epochs", 0)), "path": self.path,
                    "metrics": self.barriers}, buffer)
        atomic_write(control_path, lambda handle: handle.write(buffer.getbuffer()), "control point")
        with atomic_h5(path, "curve file") as f:
            f.create_dataset("t", data=self.t)
            f.create_dataset("history", data=np.asarray(self.history, dtype=np.float64))
            for name, values in (("curve", self.curve), ("line", self.line)):
                group = f.create_group(name)
                for metric, array in values.items():
                    group.create_dataset(metric, data=np.asarray(array))
            attrs = {**self.attrs, **{f"{k.split('_', 1)[0]}_barrier_{k.split('_', 1)[1]}": v
                                      for k, v in self.barriers.items()},
                     "kind": "connect", "path": self.path, "control_file": control_path.name}
            for key, value in attrs.items():
                f.attrs[key] = encode_attr(value)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Connection:
        """Read a file written by :meth:`save` (and its control point, when it is beside it)."""
        from llv.checkpoint import load_state_dict
        from llv.h5 import open_h5, read_attrs

        path = Path(path)
        with open_h5(path, "a curve file") as f:
            if "curve" not in f or "t" not in f:
                raise LlvError(f"{path} is not a curve file (llv.curves): no 'curve' group")
            attrs = read_attrs(f)
            t, history = f["t"][()], f["history"][()]
            curve = {k: f["curve"][k][()] for k in f["curve"]}
            line = {k: f["line"][k][()] for k in f["line"]}
        control_path = path.with_name(str(attrs.get("control_file", "")))
        control = load_state_dict(control_path)[0] if control_path.is_file() else {}
        return cls(t, curve, line, control, str(attrs.get("path", "bezier")), history, attrs)

    def plot(self, ax=None, metric: str = "loss"):
        """Both paths' ``metric`` (``loss`` or ``acc``) along t, every split, in one figure;
        the barriers in the legend. Returns the Axes."""
        from llv.plot._figure import new_figure

        if ax is None:
            ax = new_figure(6.0, 4.2).add_subplot()
        colors = ("C0", "C3", "C2", "C1")
        splits = [k[: -len("_loss")] for k in self.curve if k.endswith("_loss")]
        for split, color in zip(splits, colors):
            key = f"{split}_{metric}"
            if key not in self.curve:
                continue
            note = (f" (barrier {barrier(self.curve[key]):.3g})", f" (barrier {barrier(self.line[key]):.3g})"
                    ) if metric == "loss" else ("", "")
            ax.plot(self.t, self.curve[key], color=color, lw=1.8, label=f"{split}, {self.path}{note[0]}")
            ax.plot(self.t, self.line[key], color=color, lw=1.2, ls="--", label=f"{split}, line{note[1]}")
        ax.set_xlabel("t")
        ax.set_ylabel("loss" if metric == "loss" else "accuracy (%)")
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["A", "0.25", "0.5", "0.75", "B"])
        ax.set_title(f"{self.path} curve vs straight line")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        return ax

    def plane(self, model_a: nn.Module, model_b: nn.Module | Mapping, *, orthogonalize: bool = True,
              type: str = "weights") -> CurvePlane:
        """The plane through A, B and M (Garipov et al.'s Fig. 1), see :func:`curve_plane`."""
        return curve_plane(model_a, model_b, self.control, self.path, self.t,
                           orthogonalize=orthogonalize, type=type)


def curve_plane(model_a: nn.Module, model_b: nn.Module | Mapping, control: Mapping, path: str = "bezier",
                t=None, *, orthogonalize: bool = True, type: str = "weights") -> CurvePlane:
    """The plane through θ_A, θ_B and the control point θ_M, and both paths in it.

    x runs along θ_B − θ_A; with ``orthogonalize`` (default) the basis is orthonormal, so the
    figure shows true distances. Every curve point c_A·θ_A + c_M·θ_M + c_B·θ_B lies in this
    plane, at c_A·A + c_M·M + c_B·B of the vertices' coordinates.
    """
    from llv import direction as dirs

    space = ParameterSpace.of(model_a, type)
    values_a = space.values(model_a)
    values = [values_of(other, space) for other in (model_b, control)]
    directions = dirs.plane_directions(space, values_a, *values, orthogonalize=orthogonalize)
    corners = np.asarray(directions.attrs["plane_coordinates"], dtype=np.float64)  # A, B, M
    directions.attrs["plane_labels"] = list(LABELS)
    t = np.linspace(0, 1, 61) if t is None else np.asarray(t, dtype=np.float64)
    # coefficient columns are (A, M, B); the corners' rows are (A, B, M)
    ordered = corners[[0, 2, 1]]
    return CurvePlane(directions, corners, path_coefficients(path, t) @ ordered,
                      path_coefficients("line", t) @ ordered)


def plot_curve_plane(surface, plane: CurvePlane, ax=None, metric: str = "train_loss", **options):
    """The surface over the plane through A, B and M with both paths and the three points drawn
    on it (Garipov et al.'s Fig. 1). ``options`` go to :func:`llv.plot.draw`. Returns the Axes."""
    from llv.plot import draw

    ax = draw("contourf" if options.pop("filled", True) else "contour", surface, ax=ax, metric=metric,
              **options)
    ax.plot(plane.curve[:, 0], plane.curve[:, 1], color="white", lw=2.2)
    ax.plot(plane.curve[:, 0], plane.curve[:, 1], color="black", lw=1.2, label="curve")
    ax.plot(plane.line[:, 0], plane.line[:, 1], color="black", lw=1.0, ls="--", label="line")
    mark_points(ax, plane.vertices, LABELS)
    ax.legend(fontsize=7, loc="upper right", framealpha=0.85)
    return ax


def mark_points(ax, coordinates, labels=None):
    """Mark and label points of a plane (the models of ``kind="plane"`` directions, whose
    ``attrs["plane_coordinates"]`` and ``attrs["plane_labels"]`` they are by default).

    ``coordinates`` may also be a :class:`llv.direction.Directions` or a surface computed along
    one (its ``directions``). Returns the Axes.
    """
    source = getattr(coordinates, "directions", None) or coordinates
    attrs = getattr(source, "attrs", None)
    if attrs is not None:
        labels = labels or list(attrs.get("plane_labels", LABELS))
        coordinates = attrs.get("plane_coordinates")
        if coordinates is None:
            return ax
    from llv.plot._figure import mark_points as draw_points

    draw_points(ax, coordinates, labels)
    return ax


# ------------------------------------------------------------------------------ training


@contextlib.contextmanager
def _train_mode(model: nn.Module) -> Iterator[None]:
    """The model in train mode for the duration; every submodule's own flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.train()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def device_for(model: nn.Module, device=None) -> torch.device:
    """``device`` (``auto``, ``cpu``, ``cuda:N``, ... as :func:`llv.device.resolve_device`), or
    where the model is when None."""
    if device is not None:
        from llv.device import resolve_device

        return resolve_device(device)
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy()).tobytes())
    return h.hexdigest()


def _last_checkpoint(folder: Path) -> tuple[int, Path] | None:
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT.match(p.name)))
    return found[-1] if found else None


def _save_state(folder: Path, epoch: int, state: dict) -> Path:
    from llv.fsio import atomic_write
    from llv.runlock import held_signals

    buffer = io.BytesIO()
    torch.save(state, buffer)
    with held_signals():
        return atomic_write(folder / f"curve_epoch_{epoch:03d}.pt",
                            lambda handle: handle.write(buffer.getbuffer()), "curve checkpoint")


def _batch_loss(outputs, batch, loss) -> torch.Tensor:
    if callable(loss):
        return per_example_values(loss, outputs, batch).mean()
    return per_example_loss(outputs, split_batch(batch)[2], loss).mean()


def train_control(model_a: nn.Module, values_a: dict, values_b: dict, batches, *, path: str,
                  epochs: int, lr: float, optimizer: str = "sgd", momentum: float = 0.9,
                  weight_decay: float = 0.0, seed: int = 0, loss="ce",
                  checkpoint_dir: str | Path | None = None, progress: bool = True
                  ) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Train θ_M (started at the midpoint) on the mean loss at θ(t), t ~ U(0, 1) per batch.

    ``values_a``/``values_b``: the two ends' parameters by name (fixed tensors on the device);
    ``batches``: the training :class:`llv.batches.Batches`, visited in a seeded order per epoch.
    Returns θ_M by name and the mean training loss of each epoch.
    """
    names = list(values_a)
    control = [(0.5 * (values_a[n] + values_b[n])).detach().clone().requires_grad_(True) for n in names]
    if optimizer == "sgd":
        opt = torch.optim.SGD(control, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(control, lr=lr, weight_decay=weight_decay)
    else:
        raise LlvError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    generator = torch.Generator().manual_seed(int(seed))
    settings = {"path": path, "lr": float(lr), "optimizer": optimizer, "momentum": float(momentum),
                "weight_decay": float(weight_decay), "seed": int(seed), "batches": len(batches),
                "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable"),
                "ends_sha256": _digest([*values_a.values(), *values_b.values()])}
    device = control[0].device if control else torch.device("cpu")
    cuda = [device.index or 0] if device.type == "cuda" else []
    history: list[float] = []
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    with torch.random.fork_rng(devices=cuda):  # dropout's draws: seeded, and the caller's kept
        torch.manual_seed(int(seed))
        start = 0
        found = _last_checkpoint(folder) if folder is not None and folder.is_dir() else None
        if found is not None:
            state = torch.load(found[1], map_location="cpu", weights_only=True)
            differ = {k: (state["settings"].get(k), v) for k, v in settings.items()
                      if state["settings"].get(k) != v}
            if differ:
                raise LlvError(f"{folder} holds a curve trained with other settings "
                               f"({', '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in differ.items())}); "
                               "use another checkpoint_dir")
            start = int(state["epoch"])
            with torch.no_grad():
                for tensor, name in zip(control, names):
                    tensor.copy_(state["control"][name])
            opt.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if cuda and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            history = list(state["history"])
            log.info(f"resuming the curve from {found[1]} (epoch {start} of {epochs})")
        wide = control[0].dtype if control else torch.float32
        buffers = {n: b.detach().to(device, wide if b.is_floating_point() else b.dtype)
                   for n, b in model_a.named_buffers()}
        with _train_mode(model_a):
            for epoch in range(start, int(epochs)):
                total = 0.0
                for index in torch.randperm(len(batches), generator=generator).tolist():
                    batch = batches.stored[index]
                    if not batches.resident:
                        batch = to_device(batch, batches.device, batches.float_dtype, batches.channels_last)
                    t = float(torch.rand((), generator=generator, dtype=torch.float64))
                    c_a, c_m, c_b = (float(c) for c in path_coefficients(path, t)[0])
                    params = {n: c_a * values_a[n] + c_m * m + c_b * values_b[n]
                              for n, m in zip(names, control)}
                    state = {**{n: b.clone() for n, b in buffers.items()}, **params}
                    args, kwargs, _ = split_batch(batch)
                    value = _batch_loss(functional_call(model_a, state, args, kwargs), batch, loss)
                    opt.zero_grad(set_to_none=True)
                    value.backward()
                    opt.step()
                    total += float(value.detach())
                history.append(total / max(len(batches), 1))
                if progress:
                    log.info(f"curve epoch {epoch + 1}/{epochs}: training loss {history[-1]:.6g}")
                if folder is not None:
                    _save_state(folder, epoch + 1, {
                        "epoch": epoch + 1, "settings": settings, "history": history,
                        "control": {n: m.detach().cpu().clone() for n, m in zip(names, control)},
                        "optimizer": opt.state_dict(), "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None})
    return {n: m.detach() for n, m in zip(names, control)}, history


# ------------------------------------------------------------------------------ the whole


def connect(model_a: nn.Module, model_b: nn.Module | Mapping, data, *, path: str = "bezier",
            epochs: int = 10, lr: float = 0.01, optimizer: str = "sgd", momentum: float = 0.9,
            weight_decay: float = 0.0, batch_size="auto", seed: int = 0, points: int = 61,
            bn: str = "recompute", checkpoint_dir: str | Path | None = None, loss="ce",
            accuracy=None, device=None, precision: str = "fp32", progress: bool = True) -> Connection:
    """Train a low-loss curve from ``model_a`` to ``model_b`` and evaluate it beside the line.

    Args:
        model_a, model_b: the two ends (``model_b`` may be a state dict); never modified.
        data: as :func:`llv.surface`'s; the ``train`` split (or the only data set) trains the
            curve and re-estimates BatchNorm statistics, every split is evaluated.
        path: ``bezier`` or ``polychain`` (see :mod:`llv.curves`).
        epochs, lr, optimizer, momentum, weight_decay: training of θ_M (``sgd`` or ``adam``,
            constant learning rate).
        batch_size: examples per batch, for training and evaluation (``"auto"``).
        seed: seeds the batch order, the t drawn per batch and dropout.
        points: t values evaluated in [0, 1].
        bn: ``recompute`` (statistics re-estimated at every evaluated t) or ``stored`` (A's and
            B's statistics interpolated linearly).
        checkpoint_dir: save the training state per epoch there and resume from it.
        loss, accuracy: as :func:`llv.surface`'s.

    Returns:
        :class:`Connection`: ``t``, the ``curve``'s and the ``line``'s metrics along t,
        ``barriers``, the ``control`` point; ``.save(path)``, ``.plot()``, ``.plane(a, b)``.
    """
    from llv.evaluate import PointEvaluator

    if path not in PATHS:
        raise LlvError(f"unknown path {path!r}; valid: {', '.join(PATHS)}")
    if bn not in BN_MODES:
        raise LlvError(f"unknown bn {bn!r}; valid: {', '.join(BN_MODES)}")
    if int(epochs) < 0 or int(points) < 2:
        raise LlvError(f"epochs must be at least 0 and points at least 2 (got {epochs}, {points})")
    check_loss(loss)
    device = device_for(model_a, device)
    wide = torch.float64 if precision == "fp64" else None
    splits = as_split_batches(data, batch_size=batch_size, device=device, float_dtype=wide)
    train = splits.get("train", next(iter(splits.values())))
    weights = ParameterSpace.of(model_a, "weights")
    ends = [dict(zip(weights.names, (t.to(device, wide or t.dtype) for t in values)))
            for values in (weights.values(model_a), values_of(model_b, weights))]
    control, history = train_control(model_a, *ends, train, path=path, epochs=int(epochs), lr=float(lr),
                                     optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                                     seed=seed, loss=loss, checkpoint_dir=checkpoint_dir,
                                     progress=progress)
    # θ_M as a whole state dict: its parameters, the ends' floating buffers at their midpoint
    states = ParameterSpace.of(model_a, "states")
    state_a, state_b = states.values(model_a), values_of(model_b, states)
    control_state = {}
    for name, a, b in zip(states.names, state_a, state_b):
        if name in control:
            control_state[name] = control[name].detach().cpu().to(a.dtype)
        elif a.is_floating_point():
            control_state[name] = 0.5 * (a + b)
        else:
            control_state[name] = a.clone()
    control_state = _with_aliases(model_a, control_state)
    space = weights if bn == "recompute" else states
    stack = torch.stack([flatten(space, [s[n] for n in space.names]).to(device, wide or torch.float32)
                         for s in (dict(zip(states.names, state_a)), control_state,
                                   dict(zip(states.names, state_b)))])
    zero = {n: torch.zeros(shape) for n, shape in zip(space.names, space.shapes)}
    evaluator = PointEvaluator(model_a, space, zero, stack, splits, loss=loss, precision=precision,
                               bn_data=train if bn == "recompute" else None, accuracy=accuracy,
                               device=device, fold=False)
    t = np.linspace(0.0, 1.0, int(points))
    curve = _evaluate(evaluator, path_coefficients(path, t))
    line = _evaluate(evaluator, path_coefficients("line", t))
    attrs = {"epochs": int(epochs), "lr": float(lr), "optimizer": optimizer, "momentum": float(momentum),
             "weight_decay": float(weight_decay), "seed": int(seed), "bn": bn, "points": int(points),
             "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable"),
             "splits": ",".join(splits)}
    result = Connection(t, curve, line, control_state, path, np.asarray(history, dtype=np.float64), attrs)
    if progress:
        from llv.console import print_table

        print_table(f"{path} curve vs line", ["figure", "value"],
                    [(f"{k.replace('_', ' ', 1)} barrier", v) for k, v in result.barriers.items()])
    return result


def _with_aliases(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (by the names of ``ParameterSpace.of(model, "states")``, which keeps a tied
    tensor under its first name only) with every key of ``model.state_dict()`` in its order: an
    alias of a tied tensor (a language model's output layer sharing the embedding) holds its
    kept name's tensor, so the checkpoint loads strictly and the alias equals its kept name."""
    kept: dict[int, str] = {}
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        first = kept.setdefault(id(tensor), name) if isinstance(tensor, torch.Tensor) else name
        if first in state:
            out[name] = state[first]
    return out


def _evaluate(evaluator, coefficients: np.ndarray) -> dict[str, np.ndarray]:
    values = evaluator.evaluate(torch.from_numpy(coefficients))
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in values.items()}
