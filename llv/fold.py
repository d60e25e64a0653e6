"""The fastest exact per-point forward: BatchNorm folded per point, the faster layout, compile.

In eval mode a BatchNorm layer is a fixed affine map per channel, ``y = s·(x − μ) + β`` with
``s = γ/√(σ² + ε)``. Where its input is the output of a convolution (or linear layer) and of
nothing else, and that output feeds nothing else, the pair is one layer with

    W' = W · s  (per output channel),    b' = β + (b − μ) · s,

and a point's forward pass skips one pass over every normalized activation. The folded
tensors are computed from each point's own tensors (``state``: perturbed weights, and the
perturbed or re-estimated running statistics with ``direction.type=states`` or BN
recomputation), so the folded forward is exact at every point, not only at the centre.

:class:`FoldedForward` finds the pairs with ``torch.fx`` and never guesses: a model it cannot
copy or trace, or a pattern it cannot prove (a BN fed by an addition, a conv whose output goes
elsewhere too, a layer called twice, a weight shared with another module, a layer or BN with
forward hooks, a pruned or parametrized weight) stays unfolded, and
:meth:`FoldedForward.explain` says why. A module with forward hooks is never rewritten, so its
hooks run and see the values they would see unfolded. The model passed in is never modified.

Two helpers choose the rest of the fast path at set-up: :func:`choose_memory_format` times one
batch in both layouts (``channels_last`` is faster on many CPUs, not all), and
:func:`compile_forward` compiles the per-point forward with ``torch.compile`` when the run has
enough passes to repay the compile time, falling back to eager with a reason.

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.ReLU())
>>> forward = FoldedForward(net)
>>> forward.folded_pairs
[FoldedPair(layer='0', norm='1')]
>>> state = {n: t.detach() for n, t in [*net.named_parameters(), *net.named_buffers()]}
>>> x = torch.randn(4, 1, 5, 5)
>>> bool(torch.allclose(forward(state, x), net.eval()(x), atol=1e-6))
True
"""

from __future__ import annotations

import copy
import operator
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.utils.parametrize
import torch.nn.utils.prune
from torch import nn
from torch.func import functional_call

__all__ = [
    "CompileChoice",
    "FoldedForward",
    "FoldedPair",
    "LayoutChoice",
    "choose_memory_format",
    "compile_forward",
    "estimate_compile_seconds",
]

#: layer type -> the BatchNorm type whose channels are that layer's output channels. Exact
#: types only: a subclass (a parametrized or weight-standardized conv) may compute something else.
FOLDABLE: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: nn.BatchNorm1d,
    nn.Conv2d: nn.BatchNorm2d,
    nn.Conv3d: nn.BatchNorm3d,
    nn.Linear: nn.BatchNorm1d,
}
#: BatchNorm1d reads channels from dim 1 of a 2-D or 3-D input, so a Linear on (N, L, C) or an
#: unbatched Conv1d would put the wrong axis there. These pairs are folded only once the first
#: call has seen the layer's output with this rank. (BatchNorm2d/3d accept only 4-D/5-D input,
#: where dim 1 is the conv's output channels.)
REQUIRED_OUTPUT_RANK: dict[type[nn.Module], int] = {nn.Conv1d: 3, nn.Linear: 2}
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class FoldedPair:
    """A layer (conv or linear) and the BatchNorm folded into it, by module name."""

    layer: str
    norm: str


@dataclass(frozen=True)
class _Fold:
    pair: FoldedPair
    eps: float
    weight_rank: int
    has_bias: bool
    affine: bool
    rank_to_check: int | None


class FoldedForward:
    """``functional_call(model.eval(), state, args, kwargs)`` with BatchNorm folded per point.

    Args:
        model: the network; it is deep-copied in eval mode and never modified.
        example_args: optional inputs to check the pairs whose shapes only a call can prove
            (Linear → BatchNorm1d, Conv1d → BatchNorm1d) now; without them the first call checks.
        example_kwargs: keyword inputs to go with ``example_args``.

    Attributes:
        folded_pairs: the pairs that are folded.
        not_folded: BatchNorm name (or ``"*"`` for the whole model) -> why it stays unfolded.
        module: the module that runs: the folded copy, or the eval-mode copy if nothing folds
            (the model itself if it cannot be copied; it then runs in eval mode, unfolded).
        inplace_activations: how many ReLUs of the folded copy run in place (their input is a
            new tensor nothing else reads; the values are the same to the bit).
        inplace_sums: how many sums ``a + b`` are written into an operand that is such a new
            tensor (a residual block's conv output; where the shapes or vmap forbid it at run
            time, the sum is made out of place).

    ``state`` maps the ORIGINAL model's parameter and buffer names to one point's tensors, as
    :func:`torch.func.functional_call` takes them; missing entries take the model's values.
    Several points at once: ``torch.func.vmap(forward, in_dims=(0, None))(states, x)`` with
    every state tensor shaped ``(k, *shape)`` (or close over the unperturbed ones).
    """

    def __init__(self, model: nn.Module, example_args: tuple | None = None,
                 example_kwargs: Mapping | None = None):
        self.not_folded: dict[str, str] = {}
        self._folds: list[_Fold] = []
        self.inplace_activations = self.inplace_sums = 0
        self._traced: torch.fx.GraphModule | None = None
        #: set when the model cannot be copied: it then runs as it is, unfolded, in eval mode
        self._original: nn.Module | None = None
        try:
            self._reference = copy.deepcopy(model).eval()
        except Exception as error:  # e.g. a pruned module's weight before any forward
            self._reference = self._original = model
            self.not_folded["*"] = (f"the model cannot be copied ({_error(error)}); it runs "
                                    f"unfolded, as it is")
        self._defaults = _full_state(self._reference)
        self._names = list(self._defaults)
        if "*" not in self.not_folded and _global_forward_hooks():
            self.not_folded["*"] = "global forward hooks are registered on all modules; nothing is folded"
        if "*" not in self.not_folded:
            try:
                self._traced = torch.fx.symbolic_trace(self._reference)
            except Exception as error:  # any tracing failure: run unfolded, say why
                self.not_folded["*"] = f"torch.fx cannot trace the model ({_error(error)}); nothing is folded"
        if self._traced is not None:
            self.not_folded.update(_hooks_traced_through(self._reference, self._traced))
        if "*" in self.not_folded:
            self._traced = None
        if self._traced is not None:
            self._folds = self._find_pairs(self._traced)
        self.module: nn.Module = self._reference
        self._folded_names: list[str] = self._names
        if not any(f.rank_to_check for f in self._folds):
            self._build()
        elif example_args is not None:
            self._check_ranks(self._defaults, tuple(example_args), dict(example_kwargs or {}))

    # ------------------------------------------------------------------ public

    @property
    def folded_pairs(self) -> list[FoldedPair]:
        """The folded pairs (a Linear or Conv1d pair counts once the first call has proved it)."""
        return [f.pair for f in self._folds if not f.rank_to_check]

    def __call__(self, state: Mapping[str, torch.Tensor], *args, **kwargs):
        if self._original is not None:
            return self._call_original(state, args, kwargs)
        if self._folds and _global_forward_hooks():  # registered since set-up: they must see the
            return functional_call(self._reference, dict(state), args, kwargs)  # unfolded modules
        if any(f.rank_to_check for f in self._folds):
            # the first call runs unfolded and proves (or drops) the shape-dependent pairs
            return self._check_ranks(state, args, kwargs)
        if not self._folds:
            return functional_call(self.module, dict(state), args, kwargs)
        return functional_call(self.module, self.fold_state(state), args, kwargs)

    def bind(self, state: Mapping[str, torch.Tensor]) -> Callable:
        """The forward at one point with its folded tensors computed once, for many batches:
        ``bind(state)(*args, **kwargs)`` is ``self(state, *args, **kwargs)``."""
        if (self._original is not None or any(f.rank_to_check for f in self._folds)
                or (self._folds and _global_forward_hooks())):
            return lambda *args, **kwargs: self(state, *args, **kwargs)
        folded = self.fold_state(state) if self._folds else dict(state)
        return lambda *args, **kwargs: functional_call(self.module, folded, args, kwargs)

    def fold_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The folded module's tensors from a state of the original model.

        Works on one point's tensors and on tensors with leading point dimensions ``(k, *shape)``
        (unperturbed ones may keep their plain shape: they broadcast). Folding is computed in
        float32 for 16-bit tensors and in the tensors' own precision otherwise; the results keep
        the layer's dtype.
        """
        merged = {**self._defaults, **state}
        if not self._folds:
            return merged
        out = {name: merged[name] for name in self._folded_names if name in merged}
        for fold in self._folds:
            layer, norm = fold.pair.layer, fold.pair.norm
            weight = merged[f"{layer}.weight"]
            dtype = torch.promote_types(weight.dtype, torch.float32)
            mean = merged[f"{norm}.running_mean"].to(dtype)
            scale = torch.rsqrt(merged[f"{norm}.running_var"].to(dtype) + fold.eps)
            if fold.affine:
                scale = merged[f"{norm}.weight"].to(dtype) * scale
            shift = merged[f"{layer}.bias"].to(dtype) - mean if fold.has_bias else -mean
            bias = shift * scale
            if fold.affine:
                bias = bias + merged[f"{norm}.bias"].to(dtype)
            per_channel = scale.reshape(*scale.shape[:-1], scale.shape[-1], *[1] * (fold.weight_rank - 1))
            out[f"{layer}.weight"] = (weight.to(dtype) * per_channel).to(weight.dtype)
            out[f"{layer}.bias"] = bias.to(weight.dtype)
        return out

    @property
    def copyable(self) -> bool:
        """Whether the model could be copied (else it runs as it is, and has no :meth:`replica`)."""
        return self._original is None

    def replica(self) -> FoldedForward:
        """The same forward on its own copies of the modules, to run beside this one on another
        thread (:func:`torch.func.functional_call` swaps a module's tensors while it runs).
        Call it after the first call, which proves the shape-dependent pairs."""
        if self._original is not None:
            raise ValueError("a model that cannot be copied has no replica")
        twin = copy.copy(self)
        twin._reference = copy.deepcopy(self._reference)
        twin.module = twin._reference if self.module is self._reference else copy.deepcopy(self.module)
        twin._folds = list(self._folds)
        twin.not_folded = dict(self.not_folded)
        return twin

    def explain(self) -> str:
        """What was folded into what, and why every other BatchNorm was not."""
        lines = [f"folded: {p.norm} into {p.layer}" for p in self.folded_pairs]
        lines += [f"pending: {f.pair.norm} into {f.pair.layer} (checked by the first call: "
                  f"the layer's output must be {f.rank_to_check}-D)"
                  for f in self._folds if f.rank_to_check]
        lines += [why if name == "*" else f"not folded: {name}: {why}" for name, why in self.not_folded.items()]
        return "\n".join(lines) if lines else "no BatchNorm layers: nothing to fold"

    # ------------------------------------------------------------------ finding the pairs

    def _find_pairs(self, traced: torch.fx.GraphModule) -> list[_Fold]:
        modules = dict(traced.named_modules())
        nodes = list(traced.graph.nodes)
        calls = Counter(n.target for n in nodes if n.op == "call_module")
        read_directly = {str(n.target).rpartition(".")[0] for n in nodes if n.op == "get_attr"}
        shared = _modules_with_shared_tensors(self._reference)
        folds, called = [], set()
        for node in nodes:
            if node.op != "call_module" or not isinstance(modules[node.target], nn.modules.batchnorm._BatchNorm):
                continue
            name = node.target
            called.add(name)
            if name in self.not_folded:
                continue
            why = self._why_not(node, modules, calls, read_directly, shared)
            if why:
                self.not_folded[name] = why
                continue
            layer_name = node.args[0].target
            layer, norm = modules[layer_name], modules[name]
            folds.append(_Fold(FoldedPair(layer_name, name), float(norm.eps), layer.weight.dim(),
                               layer.bias is not None, norm.weight is not None,
                               REQUIRED_OUTPUT_RANK.get(type(layer))))
        for name, module in self._reference.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and name not in called:
                self.not_folded.setdefault(name, "not called as a module by forward")
        return folds

    @staticmethod
    def _why_not(node, modules, calls, read_directly, shared) -> str:
        """Why the BatchNorm call ``node`` cannot be folded into its input layer ('' if it can)."""
        name, norm = node.target, modules[node.target]
        why = _why_computed(name, norm) or _why_hooked("it", norm)
        if why:
            return why
        if type(norm) not in BATCH_NORMS:
            return f"a {type(norm).__name__}, not one of {', '.join(t.__name__ for t in BATCH_NORMS)}"
        if calls[name] > 1:
            return f"called {calls[name]} times"
        if norm.running_mean is None or norm.running_var is None:
            return ("keeps no running statistics (track_running_stats=False): it normalizes with "
                    "batch statistics even in eval mode")
        if len(node.args) != 1 or node.kwargs:
            return "called with more than one argument"
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            return f"its input is {_describe(source)}, not the output of a convolution or linear layer"
        layer_name, layer = source.target, modules[source.target]
        why = _why_computed(layer_name, layer) or _why_hooked(layer_name, layer)
        if why:
            return why
        if type(layer) not in FOLDABLE:
            return (f"its input comes from {layer_name} ({type(layer).__name__}), not an exact "
                    f"{', '.join(t.__name__ for t in FOLDABLE)}")
        if FOLDABLE[type(layer)] is not type(norm):
            return f"{type(layer).__name__} -> {type(norm).__name__}: the channel axes differ"
        channels = layer.out_channels if hasattr(layer, "out_channels") else layer.out_features
        if channels != norm.num_features:
            return f"{layer_name} has {channels} output channels, the BatchNorm {norm.num_features}"
        if calls[layer_name] > 1:
            return f"{layer_name} is called {calls[layer_name]} times"
        if len(source.users) > 1:
            others = sorted(_describe(u) for u in source.users if u is not node)
            return f"the output of {layer_name} is also used by {', '.join(others)}"
        for module_name, module, tensors in ((layer_name, layer, ("weight", "bias")),
                                             (name, norm, ("weight", "bias", "running_mean", "running_var"))):
            for tensor in tensors:
                if getattr(module, tensor, None) is not None and not _registered(module, tensor):
                    return f"{module_name}.{tensor} is not a registered parameter or buffer"
        for module in (layer_name, name):
            if module in read_directly:
                return f"forward reads the tensors of {module} directly"
            if module in shared:
                return f"{module} shares a tensor with another module"
        return ""

    # ------------------------------------------------------------------ building the folded module

    def _build(self) -> None:
        if not self._folds:
            self.module, self._folded_names = self._reference, self._names
            return
        try:
            folded = copy.deepcopy(self._traced)
        except Exception as error:  # the traced copy cannot be copied again: run unfolded
            self.not_folded["*"] = f"the traced model cannot be copied ({_error(error)}); nothing is folded"
            self._folds = []
            self.module, self._folded_names = self._reference, self._names
            return
        graph = folded.graph
        by_name = {n.target: n for n in graph.nodes if n.op == "call_module"}
        for fold in self._folds:
            norm_node = by_name[fold.pair.norm]
            norm_node.replace_all_uses_with(norm_node.args[0])
            graph.erase_node(norm_node)
            folded.delete_submodule(fold.pair.norm)
            layer = folded.get_submodule(fold.pair.layer)
            if layer.bias is None:
                layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                                      device=layer.weight.device))
        self.inplace_sums = _sums_in_place(folded)
        self.inplace_activations = _activations_in_place(folded)
        graph.lint()
        folded.recompile()
        self._folded_names = list(_full_state(folded))
        # called without a state, the module computes the folded model at the original tensors
        folded.load_state_dict(self.fold_state({}), strict=False)
        self.module = folded.eval()

    def _check_ranks(self, state, args, kwargs):
        """Run unfolded once, drop the pairs whose layer output has the wrong rank, build."""
        ranks: dict[str, int] = {}
        hooks = []
        for fold in self._folds:
            if fold.rank_to_check:
                layer = self._reference.get_submodule(fold.pair.layer)
                hooks.append(layer.register_forward_hook(_rank_recorder(ranks, fold.pair.layer)))
        try:  # the eval-mode copy itself: every hook of the model runs as registered
            output = functional_call(self._reference, dict(state), args, kwargs)
        finally:
            for hook in hooks:
                hook.remove()
        kept = []
        for fold in self._folds:
            if fold.rank_to_check and ranks.get(fold.pair.layer) != fold.rank_to_check:
                seen = ranks.get(fold.pair.layer)
                self.not_folded[fold.pair.norm] = (
                    f"{fold.pair.layer}'s output is {seen}-D, so BatchNorm's channel axis is not "
                    f"its features" if seen is not None else f"{fold.pair.layer} was not called")
            else:
                kept.append(_Fold(fold.pair, fold.eps, fold.weight_rank, fold.has_bias, fold.affine, None))
        self._folds = kept
        self._build()
        return output

    def _call_original(self, state, args, kwargs):
        """The model that could not be copied, unfolded, in eval mode; its modes and the tensors
        its hooks store as plain attributes (a pruned module's ``weight``) are restored after."""
        modules = list(self._original.modules())
        modes = [m.training for m in modules]
        stored = [(m, key, value) for m in modules for key, value in vars(m).items()
                  if isinstance(value, torch.Tensor)]
        self._original.eval()
        try:
            return functional_call(self._original, dict(state), args, kwargs)
        finally:
            for module, training in zip(modules, modes):
                module.training = training
            for module, key, value in stored:
                setattr(module, key, value)


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def _forward_hook_kinds(module: nn.Module) -> list[str]:
    """The kinds of forward hooks on ``module`` (any of them changes or sees what it computes;
    backward hooks do not matter in eval)."""
    kinds = []
    if any(getattr(module, a, None) for a in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs")):
        kinds.append("forward pre-hooks")
    if any(getattr(module, a, None) for a in ("_forward_hooks", "_forward_hooks_with_kwargs",
                                              "_forward_hooks_always_called")):
        kinds.append("forward hooks")
    return kinds


def _has_forward_hooks(module: nn.Module) -> bool:
    return bool(_forward_hook_kinds(module))


def has_forward_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model`` has forward (pre-)hooks, or every module has (global
    hooks): copies of such a model run its hooks too."""
    return _global_forward_hooks() or any(_has_forward_hooks(m) for m in model.modules())


def _global_forward_hooks() -> bool:
    """Whether forward hooks for every module are registered (``register_module_forward_hook``)."""
    hooks = torch.nn.modules.module
    return any(getattr(hooks, a, None) for a in ("_global_forward_hooks", "_global_forward_pre_hooks",
                                                 "_global_forward_hooks_with_kwargs",
                                                 "_global_forward_hooks_always_called"))


def _why_hooked(name: str, module: nn.Module) -> str:
    kinds = _forward_hook_kinds(module)
    return f"{name} has {' and '.join(kinds)} (folding would change what they see)" if kinds else ""


def _why_computed(name: str, module: nn.Module) -> str:
    """Why a tensor of ``module`` is computed at each call ('' if none is): pruned or parametrized."""
    if torch.nn.utils.parametrize.is_parametrized(module):
        tensors = ", ".join(module.parametrizations)
        return f"{name} is parametrized (torch.nn.utils.parametrize): its {tensors} is computed at each call"
    if torch.nn.utils.prune.is_pruned(module):
        tensors = ", ".join(sorted({h._tensor_name for h in module._forward_pre_hooks.values()
                                    if isinstance(h, torch.nn.utils.prune.BasePruningMethod)}))
        return f"{name} is pruned (torch.nn.utils.prune): a hook computes its {tensors} at each call"
    return ""


def _registered(module: nn.Module, name: str) -> bool:
    """Whether ``module.<name>`` is the parameter or buffer registered under that exact name."""
    value = getattr(module, name)
    return module._parameters.get(name) is value or module._buffers.get(name) is value


def _hooks_traced_through(model: nn.Module, traced: torch.fx.GraphModule) -> dict[str, str]:
    """``{"*": why}`` if a module that torch.fx traces through (the model itself, a container, a
    block) has forward hooks: the traced copy would drop them or run them once on proxies."""
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    for name, module in model.named_modules():
        if name not in called and _has_forward_hooks(module):
            where = f"module {name}" if name else "the model itself"
            return {"*": f"{where} has {' and '.join(_forward_hook_kinds(module))}, and torch.fx "
                         f"traces through it; nothing is folded"}
    return {}


def _full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = {n: p.detach() for n, p in model.named_parameters()}
    state.update({n: b.detach() for n, b in model.named_buffers()})
    return state


#: layers whose output is always a new tensor (never a view of an input or of a parameter)
_FRESH_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d,
                  nn.BatchNorm3d)


def _add_into(fresh: torch.Tensor, other):
    """``fresh + other``, written into ``fresh`` when the shapes and dtypes allow it (the same
    bits: addition commutes exactly); ``fresh`` is a new tensor nothing else reads."""
    if (isinstance(fresh, torch.Tensor) and isinstance(other, torch.Tensor) and other.shape == fresh.shape
            and other.dtype == fresh.dtype):
        try:
            return fresh.add_(other)
        except RuntimeError:  # under vmap an unbatched tensor cannot take a batched one in place
            pass
    return fresh + other


_FRESH_FUNCTIONS = (operator.add, torch.add, _add_into)


def _is_fresh(module: torch.fx.GraphModule, node) -> bool:
    """Whether ``node`` is a new tensor (a conv, linear or BN output, or a sum) with one user."""
    return isinstance(node, torch.fx.Node) and len(node.users) == 1 and (
        (node.op == "call_module" and type(module.get_submodule(node.target)) in _FRESH_MODULES
         and not _has_forward_hooks(module.get_submodule(node.target)))
        or (node.op == "call_function" and node.target in _FRESH_FUNCTIONS and not node.kwargs))


def _sums_in_place(module: torch.fx.GraphModule) -> int:
    """``a + b`` written into ``a`` (or ``b``) where that operand is a new tensor nothing else
    reads, e.g. a residual block's conv output plus its shortcut. Returns the number rewritten."""
    graph, rewritten = module.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not operator.add or node.kwargs or len(node.args) != 2:
            continue
        a, b = node.args
        if _is_fresh(module, a):
            args = (a, b)
        elif _is_fresh(module, b):
            args = (b, a)
        else:
            continue
        _replace(graph, node, _add_into, args)
        rewritten += 1
    return rewritten


def _activations_in_place(module: torch.fx.GraphModule) -> int:
    """ReLUs computed in place where that changes no value: their input is a new tensor (a
    conv, linear or BatchNorm output, or a sum) that feeds the ReLU and nothing else.

    A ReLU that writes a new tensor must allocate and fill it (measured in an op-level profile
    of a ResNet-20 point over 256 images, one thread: 61–76 ms for the ReLUs out of place,
    18–23 ms in place, about a tenth of the point). Returns the number rewritten.
    """
    graph, rewritten = module.graph, 0
    for node in list(graph.nodes):
        is_module = (node.op == "call_module" and type(module.get_submodule(node.target)) is nn.ReLU
                     and not _has_forward_hooks(module.get_submodule(node.target)))
        is_function = node.op == "call_function" and node.target in (torch.relu, nn.functional.relu)
        if not (is_module or is_function) or len(node.args) != 1 or set(node.kwargs) - {"inplace"}:
            continue
        if not _is_fresh(module, node.args[0]):
            continue
        _replace(graph, node, torch.relu_, (node.args[0],))
        rewritten += 1
    return rewritten


def _replace(graph: torch.fx.Graph, node, function: Callable, args: tuple) -> None:
    """Put a call of ``function`` on ``args`` where ``node`` was, for every user of it."""
    with graph.inserting_after(node):
        replacement = graph.call_function(function, args)
    node.replace_all_uses_with(replacement)
    graph.erase_node(node)


def _rank_recorder(ranks: dict[str, int], name: str):
    def hook(_module, _inputs, output) -> None:  # returns None: the output stays as it is
        ranks.setdefault(name, output.dim())
    return hook


def _modules_with_shared_tensors(model: nn.Module) -> set[str]:
    """Names of modules owning a tensor that another name in the model also refers to."""
    owners: dict[int, list[str]] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False),
                         *model.named_buffers(remove_duplicate=False)]:
        owners.setdefault(id(tensor), []).append(name.rpartition(".")[0])
    return {owner for names in owners.values() if len(names) > 1 for owner in names}


def _describe(node) -> str:
    if not isinstance(node, torch.fx.Node):
        return f"a constant ({type(node).__name__})"
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op in ("call_function", "call_method"):
        target = getattr(node.target, "__name__", str(node.target))
        return f"`{target}`"
    if node.op == "placeholder":
        return f"the input `{node.target}`"
    return f"{node.op} {node.target}"


# ---------------------------------------------------------------------- memory layout


@dataclass(frozen=True)
class LayoutChoice:
    """The input layout to use, why, and the measured channels_last ÷ NCHW CPU-time ratio."""

    memory_format: torch.memory_format
    reason: str
    ratio: float | None = None


#: channels_last must be at least this much faster to be chosen (one batch timed at set-up
#: scatters by a few percent on a shared machine; a wrong pick then costs at most this much)
LAYOUT_MARGIN = 0.03


def choose_memory_format(forward: Callable[[torch.Tensor], object], inputs: torch.Tensor,
                         repeats: int = 3, margin: float = LAYOUT_MARGIN) -> LayoutChoice:
    """``channels_last`` if a forward pass on ``inputs`` is measurably faster in it, on CPU.

    The rule: 4-D inputs on the CPU are timed in both layouts (one warm-up each, then
    ``repeats`` alternating passes, the fastest CPU time of each); ``channels_last`` is chosen
    when it is at least ``margin`` faster. oneDNN's convolutions work in NHWC internally, so an
    NCHW input is reordered at every convolution: on the benchmark CPU channels_last took
    0.71–0.87× the time of NCHW on CIFAR ResNets (benchmarks/RESULTS.md), but that depends on
    the CPU and the network, hence a measurement rather than a fixed rule. Other inputs keep
    their layout (on CUDA the configured ``eval.channels_last`` stands).

    Args:
        forward: one pass, ``forward(x)`` (e.g. ``lambda x: folded(state, x)``).
        inputs: one batch as it will be evaluated (a few dozen images are enough).
    """
    if inputs.dim() != 4:
        return LayoutChoice(torch.contiguous_format, f"{inputs.dim()}-D inputs: no image layout to choose")
    if inputs.device.type != "cpu":
        return LayoutChoice(torch.contiguous_format, f"not measured on {inputs.device.type}")
    layouts = {torch.contiguous_format: inputs.contiguous(),
               torch.channels_last: inputs.contiguous(memory_format=torch.channels_last)}
    best = {layout: float("inf") for layout in layouts}
    with torch.no_grad():
        for x in layouts.values():
            forward(x)
        for rep in range(repeats):
            order = list(layouts.items()) if rep % 2 == 0 else list(reversed(layouts.items()))
            for layout, x in order:
                start = time.process_time()
                forward(x)
                best[layout] = min(best[layout], time.process_time() - start)
    ratio = best[torch.channels_last] / max(best[torch.contiguous_format], 1e-12)
    if ratio <= 1 - margin:
        return LayoutChoice(torch.channels_last, f"channels_last took {ratio:.2f}x the time of NCHW", ratio)
    return LayoutChoice(torch.contiguous_format,
                        f"channels_last took {ratio:.2f}x the time of NCHW (needs <= {1 - margin:.2f}x)", ratio)


# ---------------------------------------------------------------------- torch.compile


#: compile time assumed before compiling, seconds per convolution or linear layer and fixed:
#: measured 29 s for ResNet-20 (22 layers) and 69 s for ResNet-56 (58 layers) on the benchmark
#: CPU under load (benchmarks/RESULTS.md); the measured value is reported after compiling
COMPILE_SECONDS_PER_LAYER, COMPILE_SECONDS_FIXED = 1.2, 5.0
#: compiled ÷ eager time per pass assumed before compiling: 0.71 measured against fold +
#: channels_last on ResNet-20 and -56 (benchmarks/RESULTS.md), rounded up
COMPILED_RATIO_ESTIMATE = 0.75
COMPILE_MODES = ("auto", "on", "off")


def estimate_compile_seconds(model: nn.Module) -> float:
    """Seconds ``torch.compile`` of ``model``'s forward is assumed to take, before compiling.

    >>> estimate_compile_seconds(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)))
    7.4
    """
    layers = sum(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules())
    return round(COMPILE_SECONDS_FIXED + COMPILE_SECONDS_PER_LAYER * layers, 1)


@dataclass
class CompileChoice:
    """The forward to run and what the decision was based on: the compile in wall seconds, a
    pass in CPU seconds on a CPU (wall seconds on a GPU)."""

    forward: Callable
    compiled: bool
    reason: str
    compile_seconds: float = 0.0
    eager_seconds: float = float("nan")
    compiled_seconds: float = float("nan")
    details: dict = field(default_factory=dict)


def compile_forward(forward: Callable, args: tuple, passes: int, mode: str = "auto",
                    compile_seconds_estimate: float = 40.0,
                    compiled_ratio_estimate: float = COMPILED_RATIO_ESTIMATE,
                    rtol: float | None = None) -> CompileChoice:
    """``torch.compile(forward)`` when the run's ``passes`` repay the compile time, else eager.

    ``auto`` times one eager pass on ``args`` and compiles when ``passes`` × that pass ×
    (1 − ``compiled_ratio_estimate``) exceeds ``compile_seconds_estimate`` (for a model:
    :func:`estimate_compile_seconds`); ``on`` always
    compiles, ``off`` never. A compiled forward is kept only if its first call succeeds (that
    call's wall time is the reported compile time) and its output equals eager's to ``rtol``
    (1e-5 relative to the largest output for float32, 1e-10 for float64, 2e-2 for 16-bit);
    with ``auto`` its steady pass (best of two; CPU time on a CPU) must also beat eager's.
    Otherwise the eager forward runs, with the reason.

    Args:
        forward: ``forward(*args)`` (e.g. ``lambda state, x: folded(state, x)``).
        args: the arguments of one pass as the run will make it (same shapes and dtypes).
        passes: forward calls the run will make (points × batches per point).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode '{mode}'; valid: {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return CompileChoice(forward, False, "compile is off")
    with torch.no_grad():
        expected = forward(*args)  # the first pass: one-off costs (first-call set-up) left out
        eager = _pass_seconds(forward, args)
    saving = passes * eager * (1 - compiled_ratio_estimate)
    if mode == "auto" and saving < compile_seconds_estimate:
        return CompileChoice(forward, False,
                             f"{passes} passes x {eager:.3g} s would save about {saving:.0f} s, less "
                             f"than compiling costs (about {compile_seconds_estimate:.0f} s)",
                             eager_seconds=eager)
    try:
        compiled = torch.compile(forward, dynamic=False)
        with torch.no_grad():
            start = time.perf_counter()
            output = compiled(*args)
            _synchronize(output)
            compile_seconds = time.perf_counter() - start
            steady, eager = _pass_seconds(compiled, args), min(eager, _pass_seconds(forward, args))
            steady = min(steady, _pass_seconds(compiled, args))
    except Exception as error:  # a missing compiler, an unsupported op: eager still works
        message = " ".join(str(error).split())[:200]
        return CompileChoice(forward, False, f"torch.compile failed ({type(error).__name__}: {message})",
                             eager_seconds=eager)
    difference = _relative_difference(output, expected)
    tolerance = rtol if rtol is not None else _tolerance(expected)
    if not difference <= tolerance:
        return CompileChoice(forward, False, f"compiled output differs from eager by {difference:.2e} "
                             f"relative (> {tolerance:g})", compile_seconds, eager, steady)
    timing = f"a compiled pass takes {steady / eager:.2f}x eager"
    if mode == "auto" and steady > eager:
        return CompileChoice(forward, False, f"compiled in {compile_seconds:.1f} s, but {timing}",
                             compile_seconds, eager, steady)
    return CompileChoice(compiled, True, f"compiled in {compile_seconds:.1f} s; {timing}",
                         compile_seconds, eager, steady, {"relative_difference": difference})


def _synchronize(output) -> None:
    if any(t.is_cuda for t in _leaves(output)):
        torch.cuda.synchronize()


def _pass_seconds(forward: Callable, args: tuple) -> float:
    """One pass: CPU seconds of this process on a CPU (steady on a shared machine), wall
    seconds with a synchronization on a GPU."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    output = forward(*args)
    if any(t.is_cuda for t in _leaves(output)):
        torch.cuda.synchronize()
        return time.perf_counter() - start_wall
    return time.process_time() - start_cpu


def _leaves(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in _leaves(v)]
    if isinstance(output, (list, tuple)):
        return [t for v in output for t in _leaves(v)]
    return []


def _relative_difference(output, expected) -> float:
    """max |output − expected| ÷ max |expected| over all tensors of the outputs."""
    got, want = _leaves(output), _leaves(expected)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return float("inf")
    if not want:
        return 0.0
    error = max(float((g.double() - w.double()).abs().max()) if g.numel() else 0.0 for g, w in zip(got, want))
    scale = max(float(w.double().abs().max()) if w.numel() else 0.0 for w in want)
    return error / max(scale, 1e-30)


def _tolerance(expected) -> float:
    dtypes = {t.dtype for t in _leaves(expected)}
    if dtypes & {torch.float16, torch.bfloat16}:
        return 2e-2
    return 1e-10 if dtypes == {torch.float64} else 1e-5
