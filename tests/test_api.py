"""The public Python API: the same numbers as the CLI, any data form, custom models and losses,
the mse convention shared with the Hessian, and no hidden state."""

import ast
import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import tiny_overrides
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import llv
from llv.checkpoint import load_into
from llv.config import compose
from llv.errors import LlvError
from llv.models import build_model
from llv.tasks import surface as surface_task

ROOT = Path(__file__).resolve().parents[1]


def small_problem(seed=0, n=60, classes=3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, classes))
    with torch.no_grad():  # BatchNorm statistics that differ from a fresh module's
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    inputs = torch.randn(n, 5, generator=torch.Generator().manual_seed(seed + 1))
    targets = torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed + 2))
    return model, inputs, targets


def fingerprint(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [(name, m.training) for name, m in model.named_modules()],
            {k: v.dtype for k, v in model.state_dict().items()})


def assert_unchanged(model, before):
    state, modes, dtypes = before
    now = model.state_dict()
    assert all(torch.equal(state[k], now[k]) for k in state)
    assert [(name, m.training) for name, m in model.named_modules()] == modes
    assert {k: v.dtype for k, v in now.items()} == dtypes


# ---------------------------------------------------------------------------- API = CLI


def test_api_and_cli_give_identical_surfaces(tmp_path):
    from conftest import save_tiny_checkpoint

    checkpoint = save_tiny_checkpoint(tmp_path)
    overrides = [*tiny_overrides(tmp_path), f"checkpoint={checkpoint}", "grid.x=-1:1:5",
                 "grid.y=-0.5:0.5:3", "direction.seed=3", "probe=false",
                 "summary.cross_check=false", f"out={tmp_path / 'cli'}"]
    cfg = compose("surface", overrides)
    path = surface_task.run(cfg)
    with h5py.File(path, "r") as f:
        cli = {k: f[k][()] for k in ("train_loss", "train_acc", "xcoordinates", "ycoordinates")}

    model = build_model(cfg.model)
    load_into(model, checkpoint)
    from llv.data import load_eval_data

    data = load_eval_data(cfg.dataset, "train", seed=int(cfg.seed))
    s = llv.surface(model, (data.inputs, data.targets), x=(-1, 1, 5), y=(-0.5, 0.5, 3), seed=3,
                    batch_size=16, progress=False)
    np.testing.assert_array_equal(s.x, cli["xcoordinates"])
    np.testing.assert_array_equal(s.y, cli["ycoordinates"])
    np.testing.assert_allclose(s["train_loss"], cli["train_loss"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(s["train_acc"], cli["train_acc"], rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- data forms


def test_dataloader_tensors_and_dataset_give_equal_surfaces():
    model, inputs, targets = small_problem()
    grid = dict(x=(-1, 1, 5), y=(-1, 1, 3), progress=False, seed=1)
    as_tensors = llv.surface(model, (inputs, targets), batch_size=16, **grid)
    dataset = TensorDataset(inputs, targets)
    as_dataset = llv.surface(model, dataset, batch_size=16, **grid)
    as_loader = llv.surface(model, DataLoader(dataset, batch_size=16), **grid)
    as_batches = llv.surface(model, [(inputs[i:i + 7], targets[i:i + 7]) for i in range(0, 60, 7)], **grid)
    for other in (as_dataset, as_loader, as_batches):
        np.testing.assert_allclose(other["train_loss"], as_tensors["train_loss"], rtol=1e-6)
        np.testing.assert_array_equal(other["train_acc"], as_tensors["train_acc"])


def test_a_shuffling_loader_is_frozen_to_one_order_and_pairs_inputs_with_their_labels():
    model, inputs, targets = small_problem()
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=8, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    grid = dict(x=(-1, 1, 7), y=None, progress=False, seed=2)
    shuffled = llv.surface(model, loader, **grid)
    exact = llv.surface(model, (inputs, targets), **grid)
    # same examples, other order: sums differ only by rounding, never by mispairing
    np.testing.assert_allclose(shuffled["train_loss"], exact["train_loss"], rtol=1e-5)
    np.testing.assert_array_equal(shuffled["train_acc"], exact["train_acc"])
    # and the order is frozen: the centre evaluated twice (probe) is bit-identical
    again = llv.surface(model, loader, **grid)
    np.testing.assert_allclose(again["train_loss"], shuffled["train_loss"], rtol=1e-5)


def test_split_mapping_names_the_metrics():
    model, inputs, targets = small_problem()
    s = llv.surface(model, {"train": (inputs[:40], targets[:40]), "test": (inputs[40:], targets[40:])},
                    x=(-1, 1, 3), y=None, progress=False)
    assert {"train_loss", "train_acc", "train_loss_se", "test_loss", "test_acc"} <= set(s.values)
    centre = llv.api.point_metrics(model, {"test": (inputs[40:], targets[40:])})
    assert s["test_loss"][1] == pytest.approx(centre["test_loss"], rel=1e-6)


def test_bad_data_is_one_line():
    model, _, _ = small_problem()
    with pytest.raises(LlvError, match="cannot use"):
        llv.surface(model, 42, progress=False)
    with pytest.raises(LlvError, match="no batches"):
        llv.surface(model, [], progress=False)


# ---------------------------------------------------------------------------- custom models


class DictModel(nn.Module):
    """A Hugging Face-style model: keyword inputs, an output object with ``.logits``."""

    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        if attention_mask is not None:
            hidden = hidden * attention_mask[..., None]

        class Output:
            pass

        out = Output()
        out.logits = self.head(hidden)
        return out


def token_batches(seed=0, n=12, length=6, vocab=11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length + 1), generator=g)
    return [{"input_ids": ids[i:i + 4, :-1], "attention_mask": torch.ones(len(ids[i:i + 4]), length),
             "labels": ids[i:i + 4, 1:]} for i in range(0, n, 4)]


def test_dict_batches_with_a_custom_loss_equal_a_direct_evaluation():
    torch.manual_seed(0)
    model = DictModel()
    batches = token_batches()

    def sequence_loss(outputs, batch):  # per-example: mean token cross-entropy
        logits = outputs.logits
        per_token = nn.functional.cross_entropy(logits.transpose(1, 2), batch["labels"], reduction="none")
        return per_token.mean(dim=1)

    s = llv.surface(model, batches, x=(-1, 1, 3), y=(-1, 1, 3), loss=sequence_loss, progress=False)
    assert "train_acc" not in s.values  # a custom loss has no built-in accuracy
    with torch.no_grad():
        direct = torch.cat([sequence_loss(model(b["input_ids"], b["attention_mask"]), b) for b in batches])
    assert s["train_loss"][1, 1] == pytest.approx(float(direct.mean()), rel=1e-6)
    # the named loss on the same dict batches (labels (B, T)): token-level cross-entropy, with accuracy
    named = llv.surface(model, batches, x=(-1, 1, 3), y=(-1, 1, 3), progress=False)
    np.testing.assert_allclose(named["train_loss"], s["train_loss"], rtol=1e-6)
    assert 0 <= named["train_acc"][1, 1] <= 100


def test_hessian_takes_dict_batches_and_a_custom_loss():
    torch.manual_seed(0)
    model = DictModel(vocab=5, width=3)
    batches = token_batches(vocab=5)
    h = llv.hessian(model, batches, dtype=torch.float64)
    dense = h.operator.to_dense()
    top = h.eigenvalues(k=2, tol=1e-8)
    np.testing.assert_allclose(top.values, torch.linalg.eigvalsh(dense).numpy()[::-1][:2], rtol=1e-6)
    assert top.num_hvp > 0 and np.all(top.residuals < 1e-5)


# ---------------------------------------------------------------------------- mse is consistent


def test_mse_second_difference_of_a_linear_model_equals_dtHd():
    """A linear model's mse surface is an exact quadratic: its second difference is dᵀHd."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    inputs, targets = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    model = model.double()
    d = llv.directions(model, ndim=2, seed=5, norm="layer", ignore="none")
    s = llv.surface(model, (inputs, targets), x=(-1, 1, 3), y=(-1, 1, 3), directions=d, loss="mse",
                    precision="fp64", progress=False)
    h = llv.hessian(model, (inputs, targets), loss="mse", dtype=torch.float64)
    loss = s["train_loss"]
    for axis, profile in ((0, loss[1, :]), (1, loss[:, 1])):
        v = torch.cat([t.reshape(-1).double() for t in d.axes[axis]])
        dHd = float(v @ h.matvec(v))
        second = float(profile[0] - 2 * profile[1] + profile[2])  # step 1
        assert second == pytest.approx(dHd, rel=1e-9)


# ---------------------------------------------------------------------------- no hidden state


def test_no_api_call_changes_the_callers_model_or_global_flags():
    model, inputs, targets = small_problem()
    model.train()  # the caller's mode must survive
    model[1].eval()  # and a mixed one too
    before = fingerprint(model)
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    data = (inputs, targets)
    llv.surface(model, data, x=(-1, 1, 3), y=(-1, 1, 3), precision="fp64", progress=False)
    assert_unchanged(model, before)
    llv.surface(model, data, x=(-1, 1, 3), y=None, bn="recompute", points_per_batch=2, progress=False)
    assert_unchanged(model, before)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.1)
    llv.interpolate(model, other, data, alphas=(0, 1, 3), progress=False)
    assert_unchanged(model, before)
    h = llv.hessian(model, data)
    h.eigenvalues(which="extremes")
    h.trace(probes=3)
    h.density(runs=1, steps=5)
    assert_unchanged(model, before)
    llv.directions(model, "hessian", data=data, ndim=2)
    assert_unchanged(model, before)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags


def test_interpolation_ends_are_each_models_own_loss():
    a, inputs, targets = small_problem(0)
    b, _, _ = small_problem(1)
    s = llv.interpolate(a, b, (inputs, targets), alphas=(0, 1, 3), progress=False)
    for model, value in ((a, s["train_loss"][0]), (b, s["train_loss"][-1])):
        assert value == pytest.approx(llv.api.point_metrics(model, (inputs, targets))["train_loss"], rel=1e-6)


# ---------------------------------------------------------------------------- results


def test_save_load_and_plot_round_trip(tmp_path):
    model, inputs, targets = small_problem()
    s = llv.surface(model, (inputs, targets), x=(-1, 1, 5), y=(-1, 1, 3), progress=False)
    path = s.save(tmp_path / "surface.h5")
    assert (tmp_path / "directions.h5").is_file()
    back = llv.load(path)
    np.testing.assert_array_equal(back["train_loss"], s["train_loss"])
    assert back.summary["train_centre_loss"] == pytest.approx(s["train_loss"][1, 2])
    d = llv.load(tmp_path / "directions.h5")
    assert d.digest() == s.directions.digest()
    again = llv.surface(model, (inputs, targets), x=(-1, 1, 5), y=(-1, 1, 3),
                        directions=llv.Directions.load(tmp_path / "directions.h5", model), progress=False)
    np.testing.assert_array_equal(again["train_loss"], s["train_loss"])
    ax = s.plot("contour")
    assert ax.figure is not None and len(ax.collections) > 0


def test_resume_through_the_api_equals_one_run(tmp_path):
    model, inputs, targets = small_problem()
    grid = dict(x=(-1, 1, 5), y=(-1, 1, 4), progress=False, path=tmp_path / "s.h5", chunk_points=3)
    part = llv.surface(model, (inputs, targets), stop_after=7, **grid)
    assert not part.complete and int(part.done.sum()) == 7
    whole = llv.surface(model, (inputs, targets), **grid)
    fresh = llv.surface(model, (inputs, targets), x=(-1, 1, 5), y=(-1, 1, 4), progress=False)
    assert whole.complete
    np.testing.assert_array_equal(whole["train_loss"], fresh["train_loss"])
    with pytest.raises(LlvError, match="direction sha256 differs"):
        llv.surface(model, (inputs, targets), seed=9, **grid)


def test_a_resume_with_another_model_is_refused(tmp_path):
    # dlayer directions do not depend on the weights, so only the model's own digest tells
    model, inputs, targets = small_problem()
    grid = dict(x=(-1, 1, 3), y=(-1, 1, 3), progress=False, norm="dlayer", path=tmp_path / "s.h5")
    llv.surface(model, (inputs, targets), stop_after=4, **grid)
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).mul_(3)
    with pytest.raises(LlvError, match="model sha256 differs"):
        llv.surface(other, (inputs, targets), **grid)
    assert llv.surface(model, (inputs, targets), **grid).complete  # the same model resumes
    kept = dict(x=(-1, 1, 3), y=None, progress=False, norm="dlayer", path=tmp_path / "h.h5")
    llv.hessian_map(model, (inputs, targets), stop_after=1, **kept)
    with pytest.raises(LlvError, match="model sha256 differs"):
        llv.hessian_map(other, (inputs, targets), **kept)


# ---------------------------------------------------------------------------- layering


def import_graph():
    """Module -> llv modules it imports (every import statement, also inside functions)."""
    graph = {}
    for path in (ROOT / "llv").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("llv")}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llv"):
                targets.add(node.module)
                targets |= {f"{node.module}.{a.name}" for a in node.names}
        graph[module] = targets
    return {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodule is not a cycle
            if state.get(nxt) == "open":
                raise AssertionError(" -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_config_lives_only_in_tasks_cli_and_config():
    allowed = ("llv.tasks", "llv.cli", "llv.config", "llv.schema", "llv.__main__")
    for path in (ROOT / "llv").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module.startswith(allowed):
            continue
        text = path.read_text()
        for forbidden in ("import omegaconf", "from omegaconf", "from llv.config", "from llv.tasks",
                          "from llv import config", "import hydra", "from hydra"):
            if forbidden in text and not (module == "llv.models.registry" and "hydra" in forbidden):
                raise AssertionError(f"{module} has '{forbidden}'")


def test_public_api_is_exported():
    for name in ("surface", "interpolate", "directions", "hessian", "trajectory", "load", "Surface"):
        assert name in llv.__all__ and callable(getattr(llv, name))


def test_extrapolated_batchnorm_variances_stay_positive_and_match_the_linear_rule_elsewhere():
    def net(seed):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.Tanh(), nn.Linear(7, 3))
        with torch.no_grad():
            m[1].running_mean.uniform_(-0.5, 0.5)
            m[1].running_var.uniform_(0.1, 3.0)
        return m

    a, b = net(0), net(1)
    inputs, targets = torch.randn(60, 5), torch.randint(0, 3, (60,))
    s = llv.interpolate(a, b, (inputs, targets), alphas=(-3, 4, 15), progress=False)
    assert np.isfinite(s["train_loss"]).all()
    assert s.attrs["bn_floored_points"] > 0
    floor = 1e-3 * torch.minimum(a[1].running_var, b[1].running_var)
    linear_only = 0
    for alpha, value in zip(s.x, s["train_loss"]):
        state = {k: (1 - alpha) * a.state_dict()[k] + alpha * b.state_dict()[k]
                 if a.state_dict()[k].is_floating_point() else a.state_dict()[k] for k in a.state_dict()}
        if bool((state["1.running_var"] >= floor).all()):  # the reference's linear rule applies
            model = copy.deepcopy(a)
            model.load_state_dict(state)
            direct = nn.functional.cross_entropy(model.eval()(inputs), targets).detach()
            assert value == pytest.approx(float(direct), rel=1e-5)
            linear_only += 1
        else:
            assert s.attrs["bn_floored_min"] <= alpha <= s.attrs["bn_floored_max"]
    assert 0 < linear_only < len(s.x)
    assert len(s.attrs["bn_floored_alphas"]) == s.attrs["bn_floored_points"] == len(s.x) - linear_only
    legend = [t.get_text() for t in s.plot().get_legend().get_texts()]
    assert any("held at its floor" in text for text in legend)  # the figure marks those α


def test_the_probe_does_not_hold_a_target_direction_to_a_normalization():
    from llv.probe import direction_norm_problems

    a, _, _ = small_problem(0)
    b, _, _ = small_problem(1)
    target = llv.directions(a, "target", ndim=1, target=b)  # biases move: θB − θA is not zero there
    assert direction_norm_problems(target, [t for t in a.state_dict().values()]) == []
    broken = llv.directions(a, "random", ndim=1)
    broken.axes[0][1] = torch.ones_like(broken.axes[0][1])  # a bias direction under ignore=biasbn
    assert any("not zero" in p for p in direction_norm_problems(broken, list(a.parameters())))
