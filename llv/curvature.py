"""Curvature of the training loss at a point: Hessian-vector products and their estimators.

:class:`HessianOperator` is the Hessian of the mean loss over a data set with respect to
chosen tensors of a model, as a matrix-free operator: it never forms the matrix, it only
multiplies it onto vectors (one pass over the data per product). On top of it:

- :func:`extreme_eigenvalues`, :func:`top_eigenpairs`, :func:`bottom_eigenpairs`: Lanczos
  with full reorthogonalization and thick restart, on the operator's device (paper §6);
  :meth:`HessianOperator.as_linear_operator` serves scipy's ``eigsh`` as well;
- :func:`hutchinson_trace`: the trace from Rademacher probes, with its standard error;
- :func:`spectral_density` and :func:`smooth_density`: stochastic Lanczos quadrature
  (Ghorbani, Krishnan and Xiao, 2019; PyHessian's ``density``).

The loss is the mean over the N examples of :func:`llv.losses.per_example_loss` (``"ce"``,
``"mse"``: mean over the C classes of (fₙ,c − onehot(yₙ)_c)²) or of a callable's
per-example losses: exactly the loss that surfaces show, so dᵀHd is the curvature of the
surface along d.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 1, bias=False)
    >>> inputs, targets = torch.eye(2), torch.zeros(2, dtype=torch.long)
    >>> op = HessianOperator(model, inputs, targets, loss="mse")  # H = 2/(NC) XᵀX = I
    >>> op.matvec(torch.tensor([1.0, 2.0]))
    tensor([1., 2.])
    >>> op.num_hvp
    1
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from llv.batches import as_batches, batch_size_of, per_example_values, pieces, split_batch
from llv.losses import check_loss, per_example_loss
from llv.params import ParameterSpace, eval_mode, flatten, unflatten

__all__ = [
    "HVP_METHODS",
    "spectrum_ends",
    "HessianOperator",
    "bottom_eigenpairs",
    "extreme_eigenvalues",
    "hutchinson_trace",
    "smooth_density",
    "spectral_density",
    "top_eigenpairs",
]

log = logging.getLogger("llv")

#: Ways to compute a Hessian-vector product; both are exact to rounding. Reverse-over-reverse
#: (double backward) is the default because it was the faster on CPU in every case timed
#: (torch 2.14, 1-2 threads, per product, reverse-over-reverse vs forward-over-reverse, i.e.
#: ``torch.func.jvp`` of ``torch.func.grad``): 30 vs 45 ms on a 64-128-128-10 tanh MLP with
#: 1024 examples; 0.10 vs 0.18 s on a conv-BN-linear net on 1024 digits; 1.2 vs 1.3 s on a
#: 3-conv net with BatchNorm on 256 CIFAR-sized images; 3.5 vs 12.7 ms on the tests' tiny MLP.
#: Forward-over-reverse stays available as a cross-check and for devices where it wins.
HVP_METHODS = ("reverse_over_reverse", "forward_over_reverse")


class HessianOperator:
    """Hessian of the mean training loss with respect to some tensors of a model.

    The model runs in eval mode (BatchNorm uses its running statistics; the caller's flags
    are restored after every call) through ``torch.func.functional_call``, so the point θ is
    whatever ``state`` holds, not necessarily the model's own tensors. The model is never
    modified.

    Args:
        model: the network.
        inputs: all N examples, (N, ...) — or, with ``targets=None``, any data llv takes
            (:func:`llv.batches.as_batches`: a DataLoader, a Dataset, an iterable of tuple or
            dict batches, or :class:`llv.batches.Batches`).
        targets: class indices (N,) or (N, T), or float targets (N, C) for ``"mse"``.
        wrt: names of the tensors (parameters or floating buffers) the Hessian is taken with
            respect to, in this order; default all of ``model.named_parameters()``.
        state: name -> tensor for parameters and buffers; entries missing here are taken
            from the model. Default: the model's own tensors.
        loss: ``"ce"``, ``"mse"`` (:mod:`llv.losses`), or a callable
            ``(outputs, batch) -> per-example losses``.
        batch_size: examples per forward pass for tensors (the chunks' products are summed
            exactly); loaders keep their own batches.
        dtype: cast the state and floating inputs to this dtype, e.g. ``torch.float64``.
        method: one of :data:`HVP_METHODS`.

    Attributes:
        n: the dimension (number of scalars in the ``wrt`` tensors).
        num_hvp: Hessian-vector products done so far.
        device: where the products are computed (the device of the ``wrt`` tensors).
        dtype: the dtype of the flat vectors.
    """

    def __init__(
        self,
        model: nn.Module,
        inputs,
        targets: Tensor | None = None,
        wrt: Sequence[str] | None = None,
        state: dict[str, Tensor] | None = None,
        loss="ce",
        batch_size: int = 1024,
        dtype: torch.dtype | None = None,
        *,
        method: str = "reverse_over_reverse",
    ) -> None:
        check_loss(loss)
        if method not in HVP_METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(HVP_METHODS)}")
        if isinstance(batch_size, int) and batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if targets is not None and (len(inputs) == 0 or len(inputs) != len(targets)):
            raise ValueError(
                f"need as many targets as inputs (>0), got {len(inputs)} and {len(targets)}"
            )
        self.model = model
        self._loss = loss
        self._method = method

        full = {name: t.detach() for name, t in model.named_parameters()}
        full.update({name: t.detach() for name, t in model.named_buffers()})
        if state is not None:
            unknown = sorted(set(state) - set(full))
            if unknown:
                raise ValueError(f"state has names the model does not: {', '.join(unknown[:5])}")
            full.update({name: t.detach() for name, t in state.items()})
        if dtype is not None:
            full = {k: t.to(dtype) if t.is_floating_point() else t for k, t in full.items()}
        self.wrt = list(wrt) if wrt is not None else [name for name, _ in model.named_parameters()]
        if not self.wrt:
            raise ValueError("wrt names no tensors")
        for name in self.wrt:
            if name not in full:
                raise ValueError(f"wrt names {name!r}, which the model does not have")
            if not full[name].is_floating_point():
                raise ValueError(f"wrt names {name!r}, which is not a floating-point tensor")
        wanted = set(self.wrt)
        self._primals = {name: full[name] for name in self.wrt}
        self._fixed = {k: t for k, t in full.items() if k not in wanted}
        first = self._primals[self.wrt[0]]
        self.device = first.device
        self.dtype = dtype if dtype is not None else first.dtype
        self._shapes = [t.shape for t in self._primals.values()]
        self._numels = [t.numel() for t in self._primals.values()]
        self.n = sum(self._numels)
        self.num_hvp = 0

        data = (inputs, targets) if targets is not None else inputs
        self.data = as_batches(data, batch_size=batch_size, device=self.device, float_dtype=dtype)
        self.num_examples = self.data.num_examples

    @classmethod
    def like(cls, other: HessianOperator, state: dict[str, Tensor] | None = None) -> HessianOperator:
        """The same loss, data and ``wrt`` at another point ``state`` (shares the data)."""
        op = cls.__new__(cls)
        op.__dict__.update(other.__dict__)
        full = {**other._fixed, **other._primals}
        if state is not None:
            full.update({k: t.detach().to(other.dtype) if t.is_floating_point() else t.detach()
                         for k, t in state.items()})
        op._primals = {name: full[name] for name in other.wrt}
        op._fixed = {k: t for k, t in full.items() if k not in set(other.wrt)}
        op.num_hvp = 0
        return op

    # -- flat vectors <-> named tensors -------------------------------------------------------

    @property
    def space(self) -> ParameterSpace:
        """The ``wrt`` tensors as a parameter space (for :func:`llv.params.flatten`)."""
        return ParameterSpace("wrt", list(self.wrt), list(self._shapes), [True] * len(self.wrt))

    def flatten(self, tensors: dict[str, Tensor]) -> Tensor:
        """Concatenate the ``wrt`` tensors of a name -> tensor dict into one flat vector."""
        return flatten(self.space, [tensors[name].to(self.dtype) for name in self.wrt])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat vector of length ``n`` into name -> tensor views shaped like ``wrt``."""
        if vector.shape != (self.n,):
            raise ValueError(
                f"expected a vector of length {self.n}, got shape {tuple(vector.shape)}"
            )
        return unflatten(self.space, vector)

    # -- the loss and its derivatives ---------------------------------------------------------

    def _chunk_loss(self, params: dict[str, Tensor], batch) -> Tensor:
        """The loss summed over one batch's examples."""
        args, kwargs, targets = split_batch(batch)
        outputs = torch.func.functional_call(self.model, {**self._fixed, **params}, args, kwargs)
        if callable(self._loss):
            return per_example_values(self._loss, outputs, batch).sum()
        return per_example_loss(outputs, targets, self._loss).sum()

    def loss_value(self) -> float:
        """The mean loss over all examples at the operator's point."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), eval_mode(self.model):
            for batch in self.data:
                total += self._chunk_loss(self._primals, batch).double()
        return float(total) / self.num_examples

    def gradient(self) -> Tensor:
        """The gradient of the mean loss, flat (length ``n``)."""
        total = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        for batch in self.data:
            leaves = [t.detach().requires_grad_(True) for t in self._primals.values()]
            with torch.enable_grad(), eval_mode(self.model):
                loss = self._chunk_loss(dict(zip(self.wrt, leaves)), batch)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
            total += torch.cat([g.reshape(-1) for g in grads])
        return total / self.num_examples

    def _hvp_reverse_over_reverse(self, tangents: dict[str, Tensor], batch):
        leaves = [t.detach().requires_grad_(True) for t in self._primals.values()]
        with torch.enable_grad():
            loss = self._chunk_loss(dict(zip(self.wrt, leaves)), batch)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
            # A gradient that is None or constant (loss linear in that tensor) adds nothing.
            pairs = [
                (g, v)
                for g, v in zip(grads, tangents.values())
                if g is not None and g.requires_grad
            ]
            if not pairs:
                return [torch.zeros_like(t) for t in leaves]
            return torch.autograd.grad(
                [g for g, _ in pairs],
                leaves,
                grad_outputs=[v for _, v in pairs],
                allow_unused=True,
                materialize_grads=True,
            )

    def _hvp_forward_over_reverse(self, tangents: dict[str, Tensor], batch):
        with torch.no_grad():
            gradient = torch.func.grad(lambda p: self._chunk_loss(p, batch))
            _, hv = torch.func.jvp(gradient, (self._primals,), (tangents,))
        return [hv[name] for name in self.wrt]

    def curvature_along(self, v: Tensor, examples_per_pass: int | None = None) -> float:
        """vᵀHv, the second derivative of the mean loss along ``v``, forward over forward.

        Two nested forward-mode passes (``torch.func.jvp`` of a ``jvp``) carry the first and
        second directional derivatives through one forward pass per batch: no graph is kept
        for a backward pass, so the memory is that of a forward pass with two tangents, not
        the double-backward graph a Hessian-vector product holds. Nested forward mode keeps the
        tangents of every layer's activations while a batch passes, so ``examples_per_pass``
        cuts the batches into smaller passes (the result does not depend on it beyond
        rounding). Not counted in ``num_hvp``.

        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> op = HessianOperator(model, x, torch.zeros(2, dtype=torch.long), loss="mse")
        >>> round(op.curvature_along(torch.tensor([0.0, 1.0])), 6)  # H = diag(1, 4)
        4.0
        """
        v = v.to(device=self.device, dtype=self.dtype).reshape(-1)
        tangents = self.unflatten(v)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad(), eval_mode(self.model), warnings.catch_warnings():
            # forward-mode rules of some ops are scripted inside torch, which warns about it
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            for whole in self.data:
                for batch in pieces(whole, examples_per_pass or batch_size_of(whole)):
                    # the tangents enter as the parameters' own: p + t·v through a scalar t put
                    # per-parameter arithmetic on doubly dual tensors (1.5-1.6x the time)
                    def slope(params, batch=batch):
                        return torch.func.jvp(lambda p: self._chunk_loss(p, batch), (params,), (tangents,))[1]

                    total += torch.func.jvp(slope, (self._primals,), (tangents,))[1].double()
        return float(total) / self.num_examples

    def matvec(self, v: Tensor) -> Tensor:
        """H v for a flat vector ``v`` of length ``n``; the result is flat, on ``device``."""
        v = v.to(device=self.device, dtype=self.dtype).reshape(-1)
        tangents = self.unflatten(v)
        hvp = (
            self._hvp_reverse_over_reverse
            if self._method == "reverse_over_reverse"
            else self._hvp_forward_over_reverse
        )
        total = torch.zeros(self.n, dtype=self.dtype, device=self.device)
        with eval_mode(self.model):
            for batch in self.data:
                total += torch.cat([t.reshape(-1) for t in hvp(tangents, batch)])
        self.num_hvp += 1
        return total / self.num_examples

    def to_dense(self) -> Tensor:
        """The full n×n Hessian from n products (for small n only), symmetrized."""
        eye = torch.eye(self.n, dtype=self.dtype, device=self.device)
        dense = torch.stack([self.matvec(e) for e in eye])
        return (dense + dense.T) / 2

    def as_linear_operator(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` (numpy float64 in and out)."""
        from scipy.sparse.linalg import LinearOperator

        def matvec(x: np.ndarray) -> np.ndarray:
            v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1))
            return self.matvec(v).to(torch.float64).cpu().numpy()

        return LinearOperator((self.n, self.n), matvec=matvec, rmatvec=matvec, dtype=np.float64)


# -- Lanczos ----------------------------------------------------------------------------------
#
# One Lanczos core serves every estimator: the basis lives on op.device, each new vector is
# orthogonalized against the whole basis twice ("twice is enough"), and the projected matrix
# T = VᵀHV is kept explicitly in float64 (tridiagonal up to rounding). Keeping T whole makes
# thick restart (Wu and Simon, 2000) a matter of replacing the basis by Ritz vectors and T by
# their Ritz values; the coupling to the next vector comes out of the next product.
#
# Why not scipy's eigsh (ARPACK)? One Krylov space serves both ends of the spectrum, and no
# implicit restart throws information away early. On a small conv net with BatchNorm trained
# on digits (n = 16842, float32, tol = 1e-3), λmax and λmin together took 33 products here
# against 62 for eigsh 'LA' + 'SA' (54 for 'BE'); the top 3 took 12 against 21; all agree with
# eigsh at tol = 1e-10 to 1e-6 relative. The vectors also never leave the device.


#: Matrices of this order or larger are decomposed aside (:func:`_stoppable`).
_ASIDE = 256


def _stoppable(fn, *args):
    """``fn(*args)``, where a stop (Ctrl-C; SIGTERM and SIGHUP under
    :func:`llv.runlock.stop_signals`) still ends the run at once.

    Python runs signal handlers only between bytecodes of the main thread, so one long C call —
    the eigendecomposition of a large dense Hessian, or of a large projected matrix — held a stop
    for minutes. The call runs in a worker thread (NumPy's and PyTorch's linear algebra release
    the GIL) while the main thread waits in short joins, in which the handler runs and raises;
    the abandoned worker is a daemon and ends with the process. Elsewhere than the main thread
    it is a plain call.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn(*args)
    out: dict = {}

    def work():
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            out["error"] = exc

    worker = threading.Thread(target=work, name="llv-linalg", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.05)
    if "error" in out:
        raise out["error"]
    return out["value"]


def _eigh(matrix: np.ndarray):
    """``np.linalg.eigh``, stoppable (:func:`_stoppable`) for a large matrix."""
    if len(matrix) < _ASIDE:
        return np.linalg.eigh(matrix)
    return _stoppable(np.linalg.eigh, matrix)


def _dense_is_cheaper(n: int, k: int) -> bool:
    # A Lanczos basis of ~20 vectors costs as many products as the dense matrix when n is no
    # larger; the dense route is exact and also gets multiplicities right.
    return n <= max(2 * k + 1, 20)


def _orthogonalize(w: Tensor, basis: Tensor) -> tuple[Tensor, Tensor]:
    """w minus its projection on the rows of ``basis``, twice; returns (w, the coefficients)."""
    coefficients = basis @ w
    w = w - basis.T @ coefficients
    correction = basis @ w
    return w - basis.T @ correction, coefficients + correction


def _expand(op: HessianOperator, basis: Tensor, projected: np.ndarray, j: int, v: Tensor):
    """Put unit vector v at row j of the basis, fill row and column j of T; return (w, ‖w‖)."""
    basis[j] = v
    w, column = _orthogonalize(op.matvec(v), basis[: j + 1])
    column = column.double().cpu().numpy()  # the one sync of the step
    projected[: j + 1, j] = column
    projected[j, : j + 1] = column
    return w, float(w.norm())


def _random_unit(op: HessianOperator, generator: torch.Generator, basis: Tensor) -> Tensor:
    """A random unit vector orthogonal to the rows of ``basis``."""
    w = torch.randn(op.n, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
    w, _ = _orthogonalize(w, basis)
    return w / w.norm()


def _breakdown(dtype: torch.dtype) -> float:
    """Below this ‖w‖ / ‖T‖ the Krylov space counts as invariant."""
    return 1e3 * torch.finfo(dtype).eps


def _lanczos_ends(
    op: HessianOperator,
    top: int,
    bottom: int,
    tol: float,
    maxiter: int | None,
    seed: int,
    max_basis: int,
    vectors: bool,
    start: Tensor | None = None,
    pairs: bool = False,
):
    """Thick-restart Lanczos for the ``top`` largest and ``bottom`` smallest eigenpairs.

    ``start`` (a vector of length n) replaces the seeded random start vector: a warm start,
    e.g. the sum of a neighbouring point's Ritz vectors.

    A Ritz value θ counts as converged when some unit vector y of the Krylov space has
    ‖Hy − θy‖ ≤ tol · max(|θ|, √eps · ‖T‖): tol relative, with a floor for eigenvalues near
    zero, which float32 products cannot resolve relative to themselves. For any unit y,
    ‖Hy − θy‖ bounds the distance from θ to an eigenvalue of H, whatever the spectrum's gaps.
    The Ritz vector is one such y (its residual comes from the recurrence); the best one, the
    refined Ritz vector, has the smallest singular value of [T − θI; ‖w‖ eⱼᵀ] as its residual
    (Jia, 1997; :func:`_refined_residual`), never larger and often smaller for an end inside
    a cluster, which stops such a run a few products earlier with the same guarantee. With
    ``pairs`` (the eigenvectors are the product) each Ritz pair itself must pass. (A test
    on a gap-sharpened bound, min(r, r²/δ) with δ from the other Ritz values, stopped earlier
    still but is not safe: while the Ritz gap is larger than the true one it passed values 4 %
    off at tol 1e-3 on a Hessian map; benchmarks/RESULTS.md.)

    Returns:
        (values ascending, (top + bottom) numpy; vectors as rows on op.device or None;
        converged: bool; the Ritz residuals ‖Hy − θy‖ of those values, from the run itself;
        the bounds on each value's distance to an eigenvalue, min(Ritz residual, refined)).
    """
    n, wanted = op.n, top + bottom
    size = min(n, max(max_basis, wanted + 3))
    limit = maxiter if maxiter is not None else max(1000, 10 * size)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.zeros(size, n, dtype=op.dtype, device=op.device)
    projected = np.zeros((size, size))
    floor = math.sqrt(torch.finfo(op.dtype).eps)
    if start is None or not bool(torch.isfinite(start).all()) or float(start.norm()) == 0.0:
        start = torch.randn(n, generator=generator, dtype=torch.float64).to(op.device, op.dtype)
    start = start.to(op.device, op.dtype).reshape(-1)
    v, j, used = start / start.norm(), 0, 0
    lost = 0.0  # the norms dropped at breakdowns, where H V = V T + w eⱼᵀ stops holding exactly
    while True:
        w, norm = _expand(op, basis, projected, j, v)
        used += 1
        theta, ritz = _eigh(projected[: j + 1, : j + 1])
        pick = np.r_[0:bottom, j + 1 - top : j + 1] if j + 1 >= wanted else np.arange(j + 1)
        residuals = norm * np.abs(ritz[j, pick])
        scale = np.abs(theta).max()
        allowed = tol * np.maximum(np.abs(theta[pick]), floor * scale)
        bounds = residuals.copy()
        if j + 1 >= wanted and not pairs:
            for i in np.flatnonzero(residuals > allowed):  # the Ritz vector is not enough
                refined = _refined_residual(projected[: j + 1, : j + 1], norm, theta[pick[i]])
                bounds[i] = min(residuals[i], refined + lost)
        converged = j + 1 >= wanted and bool(np.all(bounds <= allowed))
        if converged or j + 1 == n or used >= limit:
            break
        if norm <= _breakdown(op.dtype) * max(scale, norm):
            lost = math.hypot(lost, norm)
            v = _random_unit(op, generator, basis[: j + 1])
        else:
            v = w / norm
        j += 1
        if j == size:  # thick restart: keep the Ritz vectors at the wanted ends
            ends = 2 if top and bottom else 1
            extra = min(size // (2 * ends), (size - 1 - wanted) // ends)
            keep_bottom = bottom + extra if bottom else 0
            keep_top = top + extra if top else 0
            keep = np.r_[0:keep_bottom, size - keep_top : size]
            coefficients = np.ascontiguousarray(ritz[:, keep].T)
            basis[: len(keep)] = torch.from_numpy(coefficients).to(op.device, op.dtype) @ basis
            projected[:] = 0.0
            projected[np.arange(len(keep)), np.arange(len(keep))] = theta[keep]
            j = len(keep)
    values = theta[pick]
    rows = None
    if vectors:
        coefficients = np.ascontiguousarray(ritz[:, pick].T)
        rows = torch.from_numpy(coefficients).to(op.device, op.dtype) @ basis[: j + 1]
        rows = rows / rows.norm(dim=1, keepdim=True)
    return values, rows, converged or j + 1 == n, residuals, bounds


def _refined_residual(projected: np.ndarray, norm: float, theta: float) -> float:
    """min ‖Hy − θy‖ over unit vectors y of the Krylov space: with H V = V T + w eⱼᵀ, this is
    ‖[T − θI; ‖w‖ eⱼᵀ] s‖ minimized over unit s, the smallest singular value."""
    m = len(projected)
    stacked = np.zeros((m + 1, m))
    stacked[:m] = projected - theta * np.eye(m)
    stacked[m, m - 1] = norm
    if m < _ASIDE:
        return float(np.linalg.svd(stacked, compute_uv=False)[-1])
    return float(_stoppable(np.linalg.svd, stacked, False)[-1])


def _fix_signs(vectors: Tensor) -> Tensor:
    """Flip each row so that its entry of largest magnitude is positive (reproducible signs)."""
    index = vectors.abs().argmax(dim=1, keepdim=True)
    signs = torch.sign(vectors.gather(1, index))
    signs[signs == 0] = 1
    return vectors * signs


def _dense_ends(op: HessianOperator, top: int, bottom: int):
    dense = op.to_dense().double()  # n products, each a point where a stop is noticed
    values, vectors = (torch.linalg.eigh(dense) if op.n < _ASIDE
                       else _stoppable(torch.linalg.eigh, dense))
    pick = list(range(bottom)) + list(range(op.n - top, op.n))
    return values[pick].cpu().numpy(), vectors[:, pick].T.to(op.dtype)


def _eigenpairs(op: HessianOperator, top: int, bottom: int, tol: float, seed: int, max_basis: int):
    k = top + bottom
    if not 1 <= k <= op.n:
        raise ValueError(f"k must be between 1 and n={op.n}, got {k}")
    if _dense_is_cheaper(op.n, k):
        return _dense_ends(op, top, bottom)
    values, rows, converged, _, _ = _lanczos_ends(op, top, bottom, tol, None, seed, max_basis, True,
                                                  pairs=True)
    if not converged:
        raise RuntimeError(f"Lanczos did not converge to tol={tol} for {k} eigenpairs")
    return values, rows


def spectrum_ends(op: HessianOperator, top: int = 1, bottom: int = 1, tol: float = 1e-3,
                  seed: int = 0, *, start: Tensor | None = None, max_basis: int = 50,
                  maxiter: int | None = None, pairs: bool = False) -> dict:
    """The ``top`` largest and ``bottom`` smallest eigenpairs from ONE Krylov space.

    λmax, λmin and the top-k come from the same Lanczos run, so asking for all of them costs
    what the slowest to converge costs, not the sum. ``start`` warm-starts the run. ``tol``
    bounds each value's distance to an eigenvalue of H, relative (see :func:`_lanczos_ends`);
    with ``pairs``, each returned (value, vector)'s residual too, as the eigenvectors need when
    they are the product (the values alone may stop a few products earlier).

    Returns:
        ``{"top": values descending, "bottom": values ascending, "vectors": rows (top first,
        then bottom) on op.device, "residuals": ‖Hy − θy‖ / |θ| of each Ritz pair (top first,
        then bottom; from the run's own recurrence, no extra product), "error_bounds": the
        bound on each value's distance to an eigenvalue, relative (≤ residuals: the refined
        Ritz vector's residual where smaller; ≤ tol once converged), "num_hvp": int,
        "converged": bool}``.
    """
    if not 1 <= top + bottom <= op.n:
        raise ValueError(f"top + bottom must be between 1 and n={op.n}, got {top + bottom}")
    before = op.num_hvp
    if _dense_is_cheaper(op.n, top + bottom):
        values, rows = _dense_ends(op, top, bottom)
        converged, residuals = True, np.zeros(top + bottom)  # exact eigenpairs of the dense matrix
        bounds = residuals
    else:
        values, rows, converged, residuals, bounds = _lanczos_ends(op, top, bottom, tol, maxiter, seed,
                                                                   max_basis, True, start, pairs)
        if not converged:
            log.warning("Lanczos did not converge to tol=%g in %d products", tol, op.num_hvp - before)
    values = np.asarray(values)
    order = np.r_[bottom:bottom + top][::-1], np.arange(bottom)

    def relative(absolute) -> np.ndarray:  # top first, then bottom
        ratio = np.asarray(absolute, dtype=float) / np.maximum(np.abs(values), 1e-30)
        return np.concatenate([ratio[order[0]], ratio[order[1]]])

    return {"top": values[order[0]].copy(), "bottom": values[order[1]].copy(),
            "vectors": torch.cat([rows[order[0].copy()], rows[order[1]]]) if rows is not None else None,
            "residuals": relative(residuals), "error_bounds": relative(bounds),
            "num_hvp": op.num_hvp - before, "converged": bool(converged)}


def extreme_eigenvalues(
    op: HessianOperator,
    tol: float = 1e-3,
    maxiter: int | None = None,
    seed: int = 0,
    *,
    max_basis: int = 50,
) -> dict:
    """λmax and λmin of the Hessian from one thick-restart Lanczos run.

    Args:
        op: the Hessian.
        tol: a Ritz value θ is accepted when ‖Hy − θy‖ ≤ tol · max(|θ|, √eps · |θ|max) for
            its Ritz vector or its refined Ritz vector y, i.e. an eigenvalue of H lies that
            close, relative, with a floor for eigenvalues near zero.
        maxiter: at most this many Hessian-vector products (default max(1000, 10·max_basis));
            when they run out the eigenvalues are NaN and a warning is logged.
        seed: seed of the Gaussian start vector (drawn on CPU).
        max_basis: Lanczos vectors kept on the device (memory max_basis · n).

    Returns:
        ``{"lambda_max": float, "lambda_min": float, "num_hvp": int}``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> op = HessianOperator(model, x, torch.zeros(2, dtype=torch.long), loss="mse")
        >>> result = extreme_eigenvalues(op)  # H = 2/N XᵀX = diag(1, 4)
        >>> round(result["lambda_max"], 5), round(result["lambda_min"], 5)
        (4.0, 1.0)
    """
    before = op.num_hvp
    if _dense_is_cheaper(op.n, 2):
        values, _ = _dense_ends(op, 1, 1)
    else:
        values, _, converged, _, _ = _lanczos_ends(op, 1, 1, tol, maxiter, seed, max_basis, False)
        if not converged:
            log.warning(
                "Lanczos did not converge to tol=%g in %d products", tol, op.num_hvp - before
            )
            values = np.full(2, np.nan)
    return {
        "lambda_max": float(values[-1]),
        "lambda_min": float(values[0]),
        "num_hvp": op.num_hvp - before,
    }


def top_eigenpairs(
    op: HessianOperator, k: int = 3, tol: float = 1e-3, seed: int = 0, *, max_basis: int = 50
) -> tuple[np.ndarray, Tensor, int]:
    """The k largest (algebraic) eigenvalues and their eigenvectors.

    Single-vector Lanczos may report an eigenvalue of multiplicity > 1 only once (as ARPACK
    may); below ~20 dimensions the dense matrix is used and multiplicities are exact.

    Returns:
        ``(eigenvalues, eigenvectors, num_hvp)``: eigenvalues in descending order (numpy
        float64), unit eigenvectors as rows of a (k, n) tensor on ``op.device`` in
        ``op.dtype`` (sign fixed so each row's largest-magnitude entry is positive), and the
        number of Hessian-vector products used.

    Raises:
        RuntimeError: Lanczos did not converge.
    """
    before = op.num_hvp
    values, rows = _eigenpairs(op, k, 0, tol, seed, max_basis)
    return values[::-1].copy(), _fix_signs(rows.flip(0)), op.num_hvp - before


def bottom_eigenpairs(
    op: HessianOperator, k: int = 3, tol: float = 1e-3, seed: int = 0, *, max_basis: int = 50
) -> tuple[np.ndarray, Tensor, int]:
    """The k smallest (most negative) eigenvalues, ascending, and their eigenvectors.

    Same return layout as :func:`top_eigenpairs`, with the eigenvalues in ascending order
    (the most negative first).
    """
    before = op.num_hvp
    values, rows = _eigenpairs(op, 0, k, tol, seed, max_basis)
    return values.copy(), _fix_signs(rows), op.num_hvp - before


# -- trace ------------------------------------------------------------------------------------


def _rademacher(n: int, generator: torch.Generator, op: HessianOperator) -> Tensor:
    signs = torch.randint(0, 2, (n,), generator=generator, dtype=op.dtype) * 2 - 1
    return signs.to(op.device)


def hutchinson_trace(op: HessianOperator, probes: int = 100, seed: int = 0) -> dict:
    """tr(H) ≈ mean of zᵀHz over Rademacher probes z (drawn on CPU from a seeded generator).

    Returns:
        ``{"trace": float, "stderr": float, "num_hvp": int}``; ``stderr`` is the sample
        standard deviation of zᵀHz over sqrt(probes) (NaN for a single probe).
    """
    if probes < 1:
        raise ValueError(f"probes must be positive, got {probes}")
    before = op.num_hvp
    generator = torch.Generator().manual_seed(seed)
    samples = torch.empty(probes, dtype=torch.float64, device=op.device)
    for i in range(probes):
        z = _rademacher(op.n, generator, op)
        samples[i] = torch.dot(z, op.matvec(z))  # stays on the device: no sync per probe
    samples = samples.cpu()
    stderr = float(samples.std() / math.sqrt(probes)) if probes > 1 else float("nan")
    return {"trace": float(samples.mean()), "stderr": stderr, "num_hvp": op.num_hvp - before}


# -- spectral density -------------------------------------------------------------------------


def spectral_density(op: HessianOperator, runs: int = 4, steps: int = 64, seed: int = 0) -> dict:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    Each run starts Lanczos (full reorthogonalization, no restart) from a normalized
    Rademacher vector v and takes m = ``min(steps, n)`` steps; with T = U diag(θ) Uᵀ, the
    nodes are θ and the weights (U₀ⱼ)², which sum to 1. Then Σⱼ wⱼ f(θⱼ) ≈ vᵀ f(H) v, exactly
    for polynomials of degree below 2m and for every f when m = n, and its expectation over v
    is tr f(H) / n. If the Krylov space becomes invariant early, Lanczos goes on from a fresh
    orthogonal vector: the further nodes are eigenvalues with zero weight.

    Returns:
        ``{"nodes": (runs, m) array, "weights": (runs, m) array, "num_hvp": int}``, nodes
        ascending within each run.
    """
    if runs < 1 or steps < 1:
        raise ValueError(f"runs and steps must be positive, got {runs} and {steps}")
    before = op.num_hvp
    steps = min(steps, op.n)
    generator = torch.Generator().manual_seed(seed)
    nodes = np.zeros((runs, steps))
    weights = np.zeros((runs, steps))
    basis = torch.zeros(steps, op.n, dtype=op.dtype, device=op.device)
    for r in range(runs):
        start = _rademacher(op.n, generator, op)
        v = start / start.norm()
        projected = np.zeros((steps, steps))
        for j in range(steps):
            w, norm = _expand(op, basis, projected, j, v)
            if j + 1 == steps:
                break
            scale = np.abs(projected[: j + 1, : j + 1]).max()
            if norm <= _breakdown(op.dtype) * max(scale, norm):
                v = _random_unit(op, generator, basis[: j + 1])
            else:
                v = w / norm
        theta, vectors = _eigh(projected)
        nodes[r], weights[r] = theta, vectors[0] ** 2
    return {"nodes": nodes, "weights": weights, "num_hvp": op.num_hvp - before}


def smooth_density(nodes, weights, grid, sigma: float) -> np.ndarray:
    """The density on ``grid``: Gaussian kernels of width ``sigma`` at the nodes, averaged.

    ``nodes`` and ``weights`` are (runs, m) (or one run, (m,)); each run's weights sum to 1,
    so the result integrates to 1 over a grid that covers the nodes with a few sigma to spare.

    Example:
        >>> grid = np.linspace(-5.0, 5.0, 1001)
        >>> density = smooth_density([[-1.0, 1.0]], [[0.5, 0.5]], grid, sigma=0.5)
        >>> round(float(density.sum() * (grid[1] - grid[0])), 6)
        1.0
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    grid = np.asarray(grid, dtype=np.float64)
    density = np.zeros_like(grid)
    for run_nodes, run_weights in zip(nodes, weights):
        z = (grid[None, :] - run_nodes[:, None]) / sigma
        density += run_weights @ np.exp(-0.5 * z * z)
    return density / (len(nodes) * sigma * math.sqrt(2 * math.pi))
