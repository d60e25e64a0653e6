"""The model zoo: the reference's checkpoint layout, every model on every data shape, no-skip nets."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from llv.config import compose
from llv.console import LlvError
from llv.models import MODEL_NAMES, build_model

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "reference_model_keys.json").read_text(encoding="utf-8")
)
REFERENCE_NAMES = [name for name in MODEL_NAMES if name in REFERENCE]
CONF_MODEL = Path(__file__).resolve().parents[1] / "conf" / "model"

# Data-set shapes: (in_channels, image_size, num_classes), as digits, MNIST, CIFAR-10 and a
# small CIFAR-100-like set.
SHAPES = {
    "digits": (1, 8, 10),
    "mnist": (1, 28, 10),
    "cifar10": (3, 32, 10),
    "small100": (3, 16, 100),
}
# Each code path runs by default on the shapes below (CIFAR basic blocks with and without
# skips, VGG, MLP on every shape; DenseNet, wide, ImageNet-style and bottleneck blocks on the
# smallest); deeper or wider twins of the same code, and the other shapes, under the slow marker.
ALL = tuple(SHAPES)
FAST_SHAPES = {
    "resnet8": ALL,
    "resnet8_noshort": ALL,
    "resnet20": ALL,
    "resnet20_noshort": ALL,
    "vgg9": ALL,
    "mlp": ALL,
    "densenet121": ("digits",),
    "wrn56_2": ("digits",),
    "resnet18": ("digits",),
    "resnet50_noshort": ("digits",),
}
LARGE = 8_000_000  # parameters; real-weight load tests of bigger nets are slow
LANGUAGE_MODELS = ("tiny_lm",)  # read token ids, not images: tested on their own below


def _cfg(name, shape="cifar10", **options):
    in_channels, image_size, num_classes = SHAPES[shape]
    return {
        "name": name,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
        **options,
    }


def _layout(net):
    return [
        [k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in net.state_dict().items()
    ]


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_state_dict_layout_equals_the_reference(name):
    with torch.device("meta"):  # layout only: no memory, no init cost
        net = build_model(_cfg(name))
    expected = REFERENCE[name]
    assert _layout(net) == expected["state_dict"]
    assert [k for k, _ in net.named_parameters()] == expected["parameter_order"]
    assert sum(p.numel() for p in net.parameters()) == expected["parameters"]


def test_every_paper_model_is_in_the_reference_file():
    paper = {"resnet20", "resnet56", "resnet110", "vgg9", "densenet121"}
    paper |= {f"wrn56_{k}" for k in (2, 4, 8)}
    paper |= {f"{n}_noshort" for n in paper if n.startswith(("resnet", "wrn"))}
    assert paper <= set(REFERENCE_NAMES)
    assert set(REFERENCE) <= set(MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "published"), [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)]
)
def test_paper_parameter_counts(name, published):
    # He et al.'s CIFAR-10 sizes, to the precision they were published with.
    with torch.device("meta"):
        count = sum(p.numel() for p in build_model(_cfg(name)).parameters())
    assert count == pytest.approx(published, rel=0.02)


def _reference_state_dict(name, generator):
    tensors = {}
    for key, shape, dtype in REFERENCE[name]["state_dict"]:
        if dtype == "int64":
            tensors[key] = torch.randint(0, 100, shape, dtype=torch.int64, generator=generator)
        else:
            tensors[key] = torch.randn(shape, generator=generator)
    return tensors


def _load_cases():
    for name in REFERENCE_NAMES:
        marks = [pytest.mark.slow] if REFERENCE[name]["parameters"] > LARGE else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_load_cases()))
def test_reference_shaped_checkpoint_loads_strictly(name):
    state = _reference_state_dict(name, torch.Generator().manual_seed(0))
    net = build_model(_cfg(name))
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", [n for n in REFERENCE_NAMES if REFERENCE[n]["parameters"] > LARGE])
def test_large_reference_checkpoint_layout_loads_strictly_on_meta(name):
    with torch.device("meta"):
        net = build_model(_cfg(name))
        state = {
            k: torch.empty(s, dtype=getattr(torch, d)) for k, s, d in REFERENCE[name]["state_dict"]
        }
    net.load_state_dict(state, strict=True, assign=True)
    bad = dict(state)
    bad.pop(REFERENCE[name]["parameter_order"][-1])
    with pytest.raises(RuntimeError, match="Missing key"):
        net.load_state_dict(bad, strict=True, assign=True)


def _shape_cases():
    for name in MODEL_NAMES:
        if name == "custom" or name in LANGUAGE_MODELS:
            continue
        for shape in SHAPES:
            fast = shape in FAST_SHAPES.get(name, ())
            yield pytest.param(
                name, shape, marks=[] if fast else [pytest.mark.slow], id=f"{name}-{shape}"
            )


@pytest.mark.parametrize(("name", "shape"), list(_shape_cases()))
def test_every_model_trains_on_every_data_shape(name, shape):
    torch.manual_seed(0)
    in_channels, image_size, num_classes = SHAPES[shape]
    net = build_model(_cfg(name, shape))
    images = torch.randn(2, in_channels, image_size, image_size)
    logits = net(images)
    assert logits.shape == (2, num_classes)
    nn.functional.cross_entropy(logits, torch.tensor([0, num_classes - 1])).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(
    ("shape", "fc_inputs"),
    [("cifar10", 4096), ("mnist", 4096), ("digits", 256), ("small100", 1024)],
)
def test_vgg9_fc_input_follows_the_image_size(shape, fc_inputs):
    with torch.device("meta"):
        net = build_model(_cfg("vgg9", shape))
    assert net.fc[0].in_features == fc_inputs


def test_models_are_deterministic_under_a_seed():
    torch.manual_seed(3)
    a = build_model(_cfg("resnet8", "digits")).state_dict()
    torch.manual_seed(3)
    b = build_model(_cfg("resnet8", "digits")).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_reference_initialisation():
    torch.manual_seed(0)
    net = build_model(_cfg("vgg9"))
    conv = net.features[7]  # 64 -> 128 channels, 3x3
    fan_in = 64 * 3 * 3
    assert float(conv.weight.detach().std()) == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert not conv.bias.detach().any()
    bn = net.features[8]
    assert torch.equal(bn.weight, torch.ones(128)) and torch.equal(bn.bias, torch.zeros(128))
    assert float(net.fc[0].weight.detach().std()) == pytest.approx(1e-3, rel=0.05)
    assert not net.classifier.bias.detach().any()


def test_mlp_is_kaiming_initialised_without_batch_norm():
    torch.manual_seed(0)
    net = build_model(_cfg("mlp", "mnist", hidden=[128, 32]))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [128, 32, 10]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert float(linears[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / 784), rel=0.05)


def _zero_last_bn(block):
    last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    nn.init.zeros_(last_bn.weight)
    nn.init.zeros_(last_bn.bias)


@pytest.mark.parametrize(
    ("name", "channels", "image_size"),
    [("resnet8", 16, 8), ("wrn56_2", 32, 4), ("resnet50", 256, 4)],
)
def test_noshort_removes_the_skip_connection(name, channels, image_size):
    # With the residual branch's last BN zeroed, a block computes relu(x + 0) with its skip
    # and relu(0) = 0 (or plain 0 for the reference's bottleneck) without it.
    x = torch.randn(2, channels, image_size, image_size)
    outputs = {}
    for variant in (name, f"{name}_noshort"):
        block = build_model(_cfg(variant)).layer1[-1].eval()
        _zero_last_bn(block)
        with torch.no_grad():
            outputs[variant] = block(x)
    assert torch.equal(outputs[name], torch.relu(x))
    assert float(outputs[f"{name}_noshort"].abs().max()) == 0.0


@pytest.mark.parametrize("name", ["resnet20", "wrn56_2"])
def test_noshort_is_the_same_net_without_shortcut_modules(name):
    with torch.device("meta"):
        short, noshort = build_model(_cfg(name)), build_model(_cfg(f"{name}_noshort"))
    without = {k for k in short.state_dict() if ".shortcut." not in k}
    assert set(noshort.state_dict()) == without
    assert not any(".shortcut." in k for k in noshort.state_dict())


@pytest.mark.parametrize(
    "name", ["resnet8", "vgg9", "mlp", pytest.param("densenet121", marks=pytest.mark.slow)]
)
def test_vmap_over_parameter_sets_matches_a_loop(name):
    # The engine evaluates several grid points at once with functional_call + vmap.
    torch.manual_seed(0)
    net = build_model(_cfg(name, "digits")).eval()
    params = dict(net.named_parameters())
    buffers = dict(net.named_buffers())
    stacked = {k: torch.stack([v.detach(), 1.1 * v.detach()]) for k, v in params.items()}
    x = torch.randn(3, 1, 8, 8)

    def forward(p):
        return torch.func.functional_call(net, {**p, **buffers}, (x,))

    batched = torch.vmap(forward)(stacked)
    with torch.no_grad():
        looped = torch.stack([forward({k: v[i] for k, v in stacked.items()}) for i in range(2)])
    assert batched.shape == (2, 3, 10)
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)


def test_custom_torchvision_resnet18():
    cfg = _cfg("custom", module={"_target_": "torchvision.models.resnet18", "num_classes": 7})
    net = build_model(cfg)
    assert type(net).__name__ == "ResNet" and net.fc.out_features == 7
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_custom_sequential():
    module = {
        "_target_": "torch.nn.Sequential",
        "_args_": [
            {"_target_": "torch.nn.Flatten"},
            {"_target_": "torch.nn.Linear", "in_features": 64, "out_features": 10},
        ],
    }
    net = build_model(_cfg("custom", "digits", module=module))
    assert isinstance(net, nn.Sequential) and isinstance(net[1], nn.Linear)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (None, "_target_"),
        ({"_target_": "torch.nn.NoSuchLayer"}, "torch.nn.NoSuchLayer"),
        ({"_target_": "torch.zeros", "_args_": [3]}, "not a torch.nn.Module"),
    ],
)
def test_custom_errors_are_one_line(module, needle):
    with pytest.raises(LlvError, match=needle) as info:
        build_model(_cfg("custom", module=module))
    assert "\n" not in str(info.value)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(LlvError) as info:
        build_model(_cfg("resnet57"))
    message = str(info.value)
    assert "\n" not in message and "'resnet57'" in message
    assert all(name in message for name in MODEL_NAMES)


@pytest.mark.parametrize(
    "bad", [{"in_channels": 0}, {"image_size": 0}, {"image_size": [8, 8, 8]}, {"image_size": "big"}]
)
def test_bad_shapes_are_user_errors(bad):
    with pytest.raises(LlvError):
        build_model({**_cfg("resnet8", "digits"), **bad})


def test_rectangular_images():
    net = build_model({**_cfg("vgg9", "digits"), "image_size": [8, 20]})
    assert net(torch.randn(2, 1, 8, 20)).shape == (2, 10)


def test_every_model_name_has_a_config_option_and_back():
    assert {p.stem for p in CONF_MODEL.glob("*.yaml")} == set(MODEL_NAMES)


@pytest.mark.parametrize(
    ("overrides", "shape"),
    [
        ([], (2, 1, 8, 8)),
        (["model=vgg9", "dataset=cifar100"], (2, 3, 32, 32)),
        (["model=custom", "dataset=cifar100"], (2, 3, 32, 32)),  # num_classes interpolated
    ],
)
def test_composed_config_builds_the_model(overrides, shape):
    cfg = compose("surface", overrides)
    net = build_model(cfg.model).eval()
    assert net(torch.randn(*shape)).shape == (2, cfg.dataset.num_classes)


# ------------------------------------------------------------------------- the language model


def _tiny_lm(**options):
    torch.manual_seed(0)
    return build_model({"name": "tiny_lm", "vocab_size": 50, "seq_len": 12, **options}).eval()


@pytest.mark.parametrize("tie_weights", [False, True])
def test_tiny_lm_maps_token_ids_to_next_token_logits(tie_weights):
    net = _tiny_lm(tie_weights=tie_weights)
    tokens = torch.randint(50, (3, 12), generator=torch.Generator().manual_seed(1))
    assert net(tokens).shape == (3, 12, 50)
    assert net(tokens[:, :5]).shape == (3, 5, 50)  # shorter sequences use the first positions
    # tied: the head is the embedding itself, one parameter fewer of vocab x d_model
    untied = sum(p.numel() for p in _tiny_lm(tie_weights=False).parameters())
    assert sum(p.numel() for p in net.parameters()) == untied - 50 * 64 * tie_weights


def test_tiny_lm_is_causal():
    # the logits at position t depend on tokens 0..t only: changing token 7 leaves 0..6 alone
    net = _tiny_lm()
    tokens = torch.randint(50, (2, 12), generator=torch.Generator().manual_seed(2))
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 50
    with torch.no_grad():
        before, after = net(tokens), net(changed)
    assert torch.equal(before[:, :7], after[:, :7])
    assert (before[:, 7:] - after[:, 7:]).abs().amax(dim=-1).min() > 0
    # and position t equals a forward pass of the prefix alone
    with torch.no_grad():
        torch.testing.assert_close(net(tokens[:, :4]), before[:, :4], rtol=1e-5, atol=1e-6)


def test_tiny_lm_attention_equals_a_per_position_loop():
    # brute-force reference: each position's attention over positions 0..t, one at a time
    net = _tiny_lm(num_heads=2)
    attention = net.blocks[0].attention
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fast = attention(x)
        q, k, v = attention.qkv(x).split(64, dim=-1)
        rows = []
        for t in range(6):
            heads = []
            for h in range(2):
                part = slice(32 * h, 32 * (h + 1))
                weights = (q[:, t, part, None] * k[:, : t + 1, part].transpose(1, 2)).sum(1)
                weights = (weights / math.sqrt(32)).softmax(dim=-1)  # B x (t+1)
                heads.append((weights[:, :, None] * v[:, : t + 1, part]).sum(1))
            rows.append(attention.proj(torch.cat(heads, dim=-1)))
    torch.testing.assert_close(fast, torch.stack(rows, dim=1), rtol=1e-5, atol=1e-6)


def test_tiny_lm_runs_under_vmap_and_double_backward():
    # grid points are vmapped over parameter sets; Hessians take gradients of gradients
    net = _tiny_lm()
    params = {k: v.detach() for k, v in net.named_parameters()}
    stacked = {k: torch.stack([v, 1.1 * v]) for k, v in params.items()}
    tokens = torch.randint(50, (3, 12), generator=torch.Generator().manual_seed(4))

    def forward(p):
        return torch.func.functional_call(net, p, (tokens,))

    batched = torch.vmap(forward)(stacked)
    with torch.no_grad():
        looped = torch.stack([forward({k: v[i] for k, v in stacked.items()}) for i in range(2)])
    torch.testing.assert_close(batched, looped, rtol=1e-4, atol=1e-5)

    weight = dict(net.named_parameters())["blocks.0.attention.qkv.weight"]
    loss = nn.functional.cross_entropy(net(tokens).flatten(0, 1), tokens.roll(-1, 1).flatten())
    (grad,) = torch.autograd.grad(loss, weight, create_graph=True)
    direction = torch.randn_like(weight)
    (hvp,) = torch.autograd.grad((grad * direction).sum(), weight)
    assert torch.isfinite(hvp).all() and hvp.abs().sum() > 0


def test_tiny_lm_refuses_images_and_long_sequences():
    net = _tiny_lm()
    with pytest.raises(LlvError, match="tiny_lm reads token ids .* use dataset=text"):
        net(torch.randn(2, 1, 8, 8))
    with pytest.raises(LlvError, match="tiny_lm has 12 positions, got sequences of 13"):
        net(torch.zeros(1, 13, dtype=torch.int64))
    with pytest.raises(LlvError, match="num_heads=3 must divide d_model=64"):
        _tiny_lm(num_heads=3)


def test_tiny_lm_takes_vocab_and_context_from_the_text_dataset():
    cfg = compose("train", ["model=tiny_lm", "dataset=text", "dataset.seq_len=32", "dataset.vocab=300"])
    assert (cfg.model.vocab_size, cfg.model.seq_len) == (300, 32)
    net = build_model(cfg.model)
    assert net(torch.zeros(1, 32, dtype=torch.int64)).shape == (1, 32, 300)
