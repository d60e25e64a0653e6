"""BatchNorm folded per point equals the unfolded eval-mode forward, and never folds wrongly.

The reference is the plain path of the evaluator: ``functional_call(model.eval(), state, x)``,
one point at a time. Errors are max |folded − reference| ÷ max |reference| over the logits.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from llv.fold import FoldedForward, choose_memory_format, compile_forward
from llv.models import build_model

MODELS = ["resnet8", "resnet8_noshort", "resnet20", "vgg9"]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


class Mixed(nn.Module):
    """Conv without bias, conv with bias, Linear -> BatchNorm1d, and a BN fed by an addition."""

    def __init__(self, size: int = 6):
        super().__init__()
        self.conv_plain = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn_plain = nn.BatchNorm2d(4)
        self.conv_bias = nn.Conv2d(4, 4, 3, padding=1, bias=True)
        self.bn_bias = nn.BatchNorm2d(4)
        self.conv_skip = nn.Conv2d(4, 4, 1)
        self.bn_sum = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * size * size, 6)
        self.bn_fc = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        a = F.relu(self.bn_plain(self.conv_plain(x)))
        b = F.relu(self.bn_bias(self.conv_bias(a)))
        c = F.relu(self.bn_sum(b + self.conv_skip(a)))
        return self.head(F.relu(self.bn_fc(self.fc(c.flatten(1)))))


class OutputUsedTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class SharedWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.other = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.other.weight = self.conv.weight

    def forward(self, x):
        return self.other(F.relu(self.bn(self.conv(x))))


class LinearOnSequence(nn.Module):
    """Linear over the last axis of (N, L, C), then BatchNorm1d over L: channel axes differ."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)
        self.bn = nn.BatchNorm1d(5)

    def forward(self, x):
        return self.bn(self.fc(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # torch.fx cannot trace a branch on a value
            x = -x
        return self.bn(self.conv(x))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.3 + 2 * torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.3 * torch.randn(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
    return model


def project_model(name: str, dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = build_model({"name": name, "in_channels": 3, "num_classes": 10, "image_size": 8})
    return randomize(model).to(dtype)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}


def points(model: nn.Module, k: int, states: bool = False, seed: int = 1) -> dict[str, torch.Tensor]:
    """k perturbed points as ``name -> (k, *shape)``: weights always, BN statistics if ``states``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state_of(model).items():
        if not t.is_floating_point():
            continue
        noise = torch.randn((k, *t.shape), generator=g, dtype=torch.float64).to(t.dtype)
        if name.endswith("running_var"):
            if states:
                out[name] = t * (1 + 0.2 * noise.abs())
        elif name.endswith("running_mean"):
            if states:
                out[name] = t + 0.2 * noise
        else:
            out[name] = t + 0.1 * noise * t.abs().mean()
    return out


def reference(model: nn.Module, state: dict, x: torch.Tensor) -> torch.Tensor:
    return functional_call(copy.deepcopy(model).eval(), state, (x,))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", MODELS)
def test_folded_equals_unfolded_at_one_point(name, dtype):
    model = project_model(name, dtype)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    forward = FoldedForward(model)
    state = {**state_of(model), **{n: t[0] for n, t in points(model, 1, states=True).items()}}
    x = torch.randn(5, 3, 8, 8, dtype=dtype)
    with torch.no_grad():
        want = reference(model, state, x)
        for _ in range(2):  # the first call of VGG-9 runs unfolded to check its Linear -> BN1d
            got = forward(state, x)
            assert relative_error(got, want) <= TOLERANCE[dtype]
    assert forward.folded_pairs
    assert len(forward.folded_pairs) == sum(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                            for m in model.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in forward.module.modules())
    # the model is untouched: values, dtypes, mode
    after = model.state_dict()
    assert after.keys() == before.keys()
    for n, t in before.items():
        assert after[n].dtype == t.dtype and torch.equal(after[n], t)
    assert model.training


@pytest.mark.parametrize("states", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_folded_equals_unfolded_for_a_batch_of_points_under_vmap(name, states):
    """As the evaluator batches points: perturbed tensors (k, ...), the others closed over."""
    model = project_model(name)
    forward = FoldedForward(model)
    fixed = state_of(model)
    batch = points(model, 3, states=states)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = torch.stack([reference(model, {**fixed, **{n: t[i] for n, t in batch.items()}}, x)
                            for i in range(3)])
        many = vmap(lambda params, x: forward({**fixed, **params}, x), in_dims=(0, None))
        for _ in range(2):
            assert relative_error(many(batch, x), want) <= 1e-5


def test_fold_state_takes_leading_point_dimensions():
    """fold_state on (k, ...) tensors equals fold_state of each point, stacked."""
    model = project_model("resnet8")
    forward = FoldedForward(model)
    batch = points(model, 3, states=True)
    folded = forward.fold_state(batch)
    for i in range(3):
        one = forward.fold_state({n: t[i] for n, t in batch.items()})
        for name, tensor in one.items():
            assert torch.allclose(folded[name][i] if folded[name].dim() > tensor.dim() else folded[name],
                                  tensor, rtol=1e-6, atol=1e-7), name
    assert "bn1.running_mean" not in folded and "conv1.bias" in folded


def test_hand_made_net_folds_what_is_exact_and_keeps_the_addition():
    model = randomize(Mixed())
    model.train()  # a model in training mode is evaluated in eval mode, as the evaluator does
    forward = FoldedForward(model)
    x = torch.randn(7, 3, 6, 6)
    state = state_of(model)
    with torch.no_grad():
        want = reference(model, state, x)
        first, second = forward(state, x), forward(state, x)
    assert relative_error(first, want) <= 1e-5 and relative_error(second, want) <= 1e-5
    assert {(p.layer, p.norm) for p in forward.folded_pairs} == {
        ("conv_plain", "bn_plain"), ("conv_bias", "bn_bias"), ("fc", "bn_fc")}
    assert "bn_sum" in forward.not_folded and "`add`" in forward.not_folded["bn_sum"]
    assert "not folded: bn_sum" in forward.explain()
    assert model.training and model.bn_sum.training  # the mode of the model is its own


@pytest.mark.parametrize("net, norm, words", [
    (OutputUsedTwice, "bn", "also used by"),
    (SharedWeight, "bn", "shares a tensor"),
    (LinearOnSequence, "bn", "3-D"),
])
def test_patterns_that_are_not_exact_stay_unfolded(net, norm, words):
    torch.manual_seed(0)
    model = randomize(net())
    forward = FoldedForward(model)
    x = torch.randn(4, 5, 5) if net is LinearOnSequence else torch.randn(4, 3, 6, 6)
    state = state_of(model)
    with torch.no_grad():
        want = reference(model, state, x)
        for _ in range(2):
            assert relative_error(forward(state, x), want) <= 1e-6
    assert forward.folded_pairs == []
    assert words in forward.not_folded[norm]


def test_a_model_fx_cannot_trace_runs_unfolded_with_the_reason():
    model = randomize(DataDependent())
    forward = FoldedForward(model)
    x = torch.randn(3, 3, 6, 6)
    with torch.no_grad():
        assert relative_error(forward(state_of(model), x), reference(model, state_of(model), x)) == 0
    assert forward.folded_pairs == [] and "cannot trace" in forward.explain()


def test_linear_pairs_are_checked_by_example_args_at_set_up():
    model = randomize(Mixed())
    unchecked = FoldedForward(model)
    assert ("fc", "bn_fc") not in {(p.layer, p.norm) for p in unchecked.folded_pairs}
    assert "pending: bn_fc into fc" in unchecked.explain()
    forward = FoldedForward(model, example_args=(torch.randn(2, 3, 6, 6),))
    assert ("fc", "bn_fc") in {(p.layer, p.norm) for p in forward.folded_pairs}
    assert "pending" not in forward.explain()


def test_module_alone_is_the_folded_model_at_its_own_tensors():
    model = project_model("resnet8")
    forward = FoldedForward(model)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert relative_error(forward.module(x), copy.deepcopy(model).eval()(x)) <= 1e-5


def test_bf16_autocast_folded_is_as_accurate_as_unfolded():
    """Folding is computed in float32 before autocast casts the conv weights to bf16."""
    model = project_model("resnet20")
    forward = FoldedForward(model)
    state = state_of(model)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        exact = reference(model, state, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            folded = forward(state, x)
            unfolded = reference(model, state, x)
    assert folded.dtype == unfolded.dtype
    assert relative_error(folded, exact) <= max(2 * relative_error(unfolded, exact), 1e-2)
    assert relative_error(folded, exact) <= 5e-2


def test_compile_auto_stays_eager_when_few_passes_would_not_repay_it():
    model = project_model("resnet8")
    forward = FoldedForward(model)
    args = (state_of(model), torch.randn(2, 3, 8, 8))
    choice = compile_forward(forward, args, passes=1, mode="auto")
    assert not choice.compiled and choice.forward is forward and "less than compiling" in choice.reason
    assert not compile_forward(forward, args, passes=10**9, mode="off").compiled


@pytest.mark.slow
def test_compiled_forward_equals_eager():
    model = project_model("resnet8")
    forward = FoldedForward(model)
    state = state_of(model)
    x = torch.randn(4, 3, 8, 8)
    choice = compile_forward(lambda s, x: forward(s, x), (state, x), passes=1, mode="on")
    other = {**state, **{n: t[0] for n, t in points(model, 1, states=True).items()}}
    with torch.no_grad():
        for s in (state, other):  # a new point is new tensors, not a new graph
            assert relative_error(choice.forward(s, x), reference(model, s, x)) <= 1e-5
    assert choice.compiled or "failed" in choice.reason or "differs" in choice.reason


def test_memory_format_rule():
    model = project_model("resnet8")
    forward = FoldedForward(model)
    state = state_of(model)
    flat = choose_memory_format(lambda x: x.sum(), torch.randn(4, 10))
    assert flat.memory_format == torch.contiguous_format and flat.ratio is None
    choice = choose_memory_format(lambda x: forward(state, x), torch.randn(8, 3, 8, 8), repeats=1)
    assert choice.ratio > 0
    assert (choice.memory_format == torch.channels_last) == (choice.ratio <= 0.97)


class ReluInputsUsedElsewhere(nn.Module):
    """ReLUs that must not overwrite their input: it is used again, or it is the caller's."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 36, 2)

    def forward(self, x):
        y = self.bn(self.conv(x))  # folded: y is the conv's output
        z = F.relu(y) + y  # y is used again after the ReLU
        return self.head(F.relu(z.flatten(1))) + F.relu(x).mean()  # a view; the caller's input


def test_relus_run_in_place_only_where_no_value_changes(monkeypatch):
    import llv.fold as fold

    model = randomize(Mixed())
    forward = FoldedForward(model)
    with torch.no_grad():
        forward(state_of(model), torch.randn(2, 3, 6, 6))  # the first call proves the Linear pair
    # every ReLU of Mixed reads a conv, linear or BatchNorm output used by nothing else
    assert forward.inplace_activations == 4
    net = randomize(build_model({"name": "resnet20", "in_channels": 3, "num_classes": 10, "image_size": 8}))
    monkeypatch.setattr(fold, "_activations_in_place", lambda module: 0)
    monkeypatch.setattr(fold, "_sums_in_place", lambda module: 0)
    out_of_place = FoldedForward(net)
    monkeypatch.undo()
    in_place = FoldedForward(net)
    assert in_place.inplace_activations == 19 and out_of_place.inplace_activations == 0
    assert in_place.inplace_sums == 9 and out_of_place.inplace_sums == 0  # one per residual block
    x, state = torch.randn(5, 3, 8, 8), state_of(net)
    with torch.no_grad():
        assert torch.equal(in_place(state, x), out_of_place(state, x))  # bit for bit

    guarded = randomize(ReluInputsUsedElsewhere())
    forward = FoldedForward(guarded)
    assert forward.folded_pairs and forward.inplace_activations == 0
    x = torch.randn(3, 3, 6, 6)
    kept = x.clone()
    with torch.no_grad():
        assert relative_error(forward(state_of(guarded), x), reference(guarded, state_of(guarded), x)) <= 1e-6
    assert torch.equal(x, kept)  # the caller's input is never overwritten


class SumOfBranches(nn.Module):
    """A conv branch plus a folded conv + BN branch: the sum is written into the plain branch."""

    def __init__(self):
        super().__init__()
        self.plain = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.plain(x) + self.bn(self.conv(x))


def test_a_sum_in_place_falls_back_where_vmap_cannot_write_it():
    # under vmap only the folded branch's tensors vary per point: the plain branch is the same
    # for every point (unbatched) and cannot take the batched sum in place, so it is added out
    # of place, with the same values
    model = randomize(SumOfBranches())
    forward = FoldedForward(model)
    assert forward.folded_pairs and forward.inplace_sums == 1
    fixed = state_of(model)
    varying = {n: torch.stack([t, 1.1 * t, 0.9 * t]) for n, t in fixed.items() if n.startswith(("conv", "bn"))}
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        want = torch.stack([reference(model, {**fixed, **{n: t[i] for n, t in varying.items()}}, x)
                            for i in range(3)])
        got = vmap(lambda params, x: forward({**fixed, **params}, x), in_dims=(0, None))(varying, x)
        assert relative_error(got, want) <= 1e-6
        assert torch.equal(forward(fixed, x), forward(fixed, x))  # one point: written in place


def test_add_into_writes_only_a_tensor_of_the_result_shape_and_dtype():
    from llv.fold import _add_into

    a = torch.ones(2, 3)
    assert _add_into(a, torch.full((2, 3), 2.0)) is a and torch.equal(a, torch.full((2, 3), 3.0))
    row = torch.ones(3)
    out = _add_into(row, torch.ones(2, 3))  # the sum is larger than the operand: a new tensor
    assert out is not row and out.shape == (2, 3) and torch.equal(row, torch.ones(3))
    half = torch.ones(3, dtype=torch.float16)
    assert _add_into(half, torch.ones(3)).dtype == torch.float32 and half.dtype == torch.float16
    assert _add_into(3, 4) == 7 and torch.equal(_add_into(2, torch.ones(2)), torch.full((2,), 3.0))


# ---------------------------------------------------------------------- hooks, pruning, parametrizations


def mlp() -> nn.Sequential:
    """Linear → BatchNorm1d → ReLU → Linear, in eval mode, the pair foldable as it is."""
    torch.manual_seed(0)
    return randomize(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))).eval()


def surface_loss(model: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> float:
    """The loss at the centre, as ``llv.surface`` computes it (BatchNorm folded by default)."""
    import llv

    return float(llv.surface(model, (X, Y), x=(0, 0, 1), y=None, progress=False)["train_loss"][0])


def inputs(seed: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)


def double_output(module, args, output):
    return 2 * output


HOOKS = {  # where the hook goes, how it is registered, and the words not_folded says for the BN "1"
    "forward hook on the layer": (lambda net: net[0].register_forward_hook(double_output), "0 has forward hooks"),
    "forward hook with kwargs on the layer": (
        lambda net: net[0].register_forward_hook(lambda m, a, k, o: o - 1, with_kwargs=True), "0 has forward hooks"),
    "always-called hook on the layer": (
        lambda net: net[0].register_forward_hook(double_output, always_call=True), "0 has forward hooks"),
    "pre-hook on the layer": (lambda net: net[0].register_forward_pre_hook(lambda m, a: (a[0] ** 2,)),
                              "0 has forward pre-hooks"),
    "pre-hook on the BatchNorm": (lambda net: net[1].register_forward_pre_hook(lambda m, a: (a[0] + 1,)),
                                  "it has forward pre-hooks"),
    "pre-hook with kwargs on the BatchNorm": (
        lambda net: net[1].register_forward_pre_hook(lambda m, a, k: ((-a[0],), k), with_kwargs=True),
        "it has forward pre-hooks"),
    "forward hook on the BatchNorm": (lambda net: net[1].register_forward_hook(double_output), "it has forward hooks"),
}


@pytest.mark.parametrize("case", list(HOOKS))
def test_a_layer_or_batchnorm_with_forward_hooks_is_not_folded_and_its_hook_runs(case):
    """The QA case: a hook doubling the Linear's output was dropped by the fold (loss 1.114
    instead of 1.119). A hooked pair stays unfolded, says why, and gives the plain values."""
    register, words = HOOKS[case]
    net = mlp()
    register(net)
    X, Y = inputs()
    forward = FoldedForward(net)
    with torch.no_grad():
        want = net(X)
        for _ in range(2):  # the first call proves the Linear pair's shapes, the second runs as built
            assert relative_error(forward(state_of(net), X), want) <= 1e-6
        truth = float(F.cross_entropy(want, Y))
    assert forward.folded_pairs == [] and words in forward.not_folded["1"]
    assert f"not folded: 1: {words}" in forward.explain()
    assert surface_loss(net, X, Y) == pytest.approx(truth, abs=1e-6)
    # a backward hook changes nothing in eval: the pair still folds
    plain = mlp()
    plain[0].register_full_backward_hook(lambda m, gi, go: None)
    folded = FoldedForward(plain, example_args=(X,))
    assert folded.folded_pairs and "1" not in folded.not_folded


@pytest.mark.parametrize("where", ["the model itself", "a block"])
def test_a_hook_on_a_module_fx_traces_through_disables_folding(where):
    """fx drops the model's own hooks and inlines a block's hooks once, on proxies."""
    torch.manual_seed(0)
    net = randomize(nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)), nn.ReLU(), nn.Linear(6, 3))).eval()
    (net if where == "the model itself" else net[0]).register_forward_hook(double_output)
    X, Y = inputs()
    forward = FoldedForward(net, example_args=(X,))
    with torch.no_grad():
        assert relative_error(forward(state_of(net), X), net(X)) <= 1e-6
        truth = float(F.cross_entropy(net(X), Y))
    assert forward.folded_pairs == [] and "traces through it; nothing is folded" in forward.not_folded["*"]
    assert ("module 0 has" if where == "a block" else "the model itself has") in forward.explain()
    assert surface_loss(net, X, Y) == pytest.approx(truth, abs=1e-6)


class HookedActivations(nn.Module):
    """conv → BN → ReLU (hooked) → conv (hooked) → ReLU → Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(4 * 36, 2)

    def forward(self, x):
        return self.head(self.relu2(self.conv2(self.relu(self.bn(self.conv(x))))).flatten(1))


def test_hooked_relus_and_convs_are_never_rewritten_and_their_hooks_see_the_unfolded_values():
    """A hook on the ReLU after a folded conv must run (not be fused or made in place away), and
    a hook keeping a conv's output must find it unchanged (no ReLU in place over it)."""
    torch.manual_seed(0)
    model = randomize(HookedActivations())
    seen: dict[str, list] = {"relu": [], "conv2": []}

    def on_relu(module, args, output):
        seen["relu"].append((args[0].clone(), output.clone()))
        return 0.5 * output

    model.relu.register_forward_hook(on_relu)
    model.conv2.register_forward_hook(lambda m, a, o: seen["conv2"].append(o))  # keeps the tensor itself
    forward = FoldedForward(model)
    assert [(p.layer, p.norm) for p in forward.folded_pairs] == [("conv", "bn")]
    assert forward.inplace_activations == 0
    x, state = torch.randn(3, 3, 6, 6), state_of(model)
    with torch.no_grad():
        want = reference(model, state, x)
        (relu_in, relu_out), conv2_out = seen["relu"].pop(), seen["conv2"].pop()
        got = forward(state, x)
        assert len(seen["relu"]) == len(seen["conv2"]) == 1  # both hooks ran, once
    assert relative_error(got, want) <= 1e-6
    assert relative_error(seen["relu"][0][0], relu_in) <= 1e-6 and relative_error(seen["relu"][0][1], relu_out) <= 1e-6
    assert (seen["conv2"][0] < 0).any() and relative_error(seen["conv2"][0], conv2_out) <= 1e-6


@pytest.mark.parametrize("forward_first", [False, True], ids=["right after pruning", "after a forward"])
def test_a_pruned_model_is_evaluated_exactly(forward_first):
    """Right after pruning the model cannot be deep-copied (its weight is computed from
    weight_orig by autograd); after a forward the pruned Linear has weight_orig, weight_mask and
    a pre-hook: neither may raise, both run unfolded, exactly."""
    import torch.nn.utils.prune as prune

    net = mlp()
    prune.l1_unstructured(net[0], "weight", amount=0.5)
    X, Y = inputs()
    if forward_first:
        with torch.no_grad():
            net(X)
    net.train()  # evaluated in eval mode; its own mode and tensors are left as they were
    weight = net[0].weight
    forward = FoldedForward(net)
    with torch.no_grad():
        got = [forward(state_of(net), X) for _ in range(2)]
    assert net.training and net[0].weight is weight
    net.eval()
    with torch.no_grad():
        want = net(X)
    assert all(relative_error(g, want) <= 1e-6 for g in got)
    assert forward.folded_pairs == []
    if forward_first:
        assert "0 is pruned" in forward.not_folded["1"] and "not folded: 1: 0 is pruned" in forward.explain()
    else:
        assert "cannot be copied" in forward.not_folded["*"] and "runs unfolded" in forward.explain()
    assert surface_loss(net, X, Y) == pytest.approx(float(F.cross_entropy(want, Y)), abs=1e-6)


def plain_attribute_weight(layer: nn.Module) -> None:
    weight = layer.weight.detach().clone()
    del layer.weight
    layer.weight = weight  # a tensor attribute: neither a parameter nor a buffer


@pytest.mark.parametrize("change, words", [
    (lambda layer: nn.utils.parametrizations.weight_norm(layer), "0 is parametrized"),
    (lambda layer: nn.utils.parametrizations.spectral_norm(layer), "0 is parametrized"),
    (plain_attribute_weight, "0.weight is not a registered parameter"),
], ids=["weight_norm", "spectral_norm", "plain attribute"])
def test_a_layer_whose_weight_is_not_its_own_parameter_is_not_folded(change, words):
    net = mlp()
    change(net[0])
    net.eval()
    X, Y = inputs()
    forward = FoldedForward(net, example_args=(X,))
    with torch.no_grad():
        want = net(X)
        assert relative_error(forward(state_of(net), X), want) <= 1e-6
    assert forward.folded_pairs == [] and words in forward.not_folded["1"]
    assert surface_loss(net, X, Y) == pytest.approx(float(F.cross_entropy(want, Y)), abs=1e-6)


def test_a_global_forward_hook_disables_folding():
    from torch.nn.modules.module import register_module_forward_hook

    model = project_model("resnet8")
    before = FoldedForward(model)  # built while no global hook is registered
    assert before.folded_pairs
    called: list[type] = []
    x, state = torch.randn(2, 3, 8, 8), state_of(model)
    handle = register_module_forward_hook(lambda m, a, o: called.append(type(m)))
    try:
        forward = FoldedForward(model)
        assert forward.folded_pairs == [] and "global forward hooks" in forward.explain()
        with torch.no_grad():
            want = reference(model, state, x)
            called.clear()
            assert relative_error(forward(state, x), want) <= 1e-6
            assert nn.BatchNorm2d in called  # every module ran, and its hook saw it
            called.clear()
            assert relative_error(before(state, x), want) <= 1e-6  # runs unfolded while it is there
            assert nn.BatchNorm2d in called
    finally:
        handle.remove()
    with torch.no_grad():
        assert relative_error(before(state, x), reference(model, state, x)) <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_bind_folds_once_and_gives_the_calls_values_to_the_bit(name, monkeypatch):
    """``bind(state)`` computes the folded tensors once for many batches; each batch's output is
    the per-call forward's to the bit, and the replica (another thread's copy) gives the same."""
    model = project_model(name)
    forward = FoldedForward(model)
    state = {**state_of(model), **{n: t[0] for n, t in points(model, 1, states=True).items()}}
    batches = [torch.randn(3, 3, 8, 8) for _ in range(3)]
    with torch.no_grad():
        forward(state, batches[0])  # the first call proves VGG-9's Linear -> BN1d pair
        want = [forward(state, x) for x in batches]
        folds = []
        original = FoldedForward.fold_state
        monkeypatch.setattr(FoldedForward, "fold_state",
                            lambda self, s: folds.append(1) or original(self, s))
        bound = forward.bind(state)
        got = [bound(x) for x in batches]
        twin = forward.replica()
        from_twin = [twin.bind(state)(x) for x in batches]
    assert len(folds) == 1 + len(batches)  # once for the bound point, once per twin bind
    for a, b, c in zip(want, got, from_twin):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert twin.module is not forward.module
    assert all(p is not q for p, q in zip(twin.module.parameters(), forward.module.parameters()))


def test_bind_with_a_global_hook_runs_the_hooked_unfolded_path():
    from torch.nn.modules.module import register_module_forward_hook

    model = project_model("resnet8")
    forward = FoldedForward(model)
    x, state = torch.randn(2, 3, 8, 8), state_of(model)
    called: list[type] = []
    handle = register_module_forward_hook(lambda m, a, o: called.append(type(m)))
    try:
        with torch.no_grad():
            out = forward.bind(state)(x)
            assert nn.BatchNorm2d in called
            assert relative_error(out, reference(model, state, x)) <= 1e-6
    finally:
        handle.remove()
