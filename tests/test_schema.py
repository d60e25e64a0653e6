"""Typed configuration (llv/schema.py): every key of every command is checked when the config is
composed, a wrong value is one line naming the key, and no valid config is refused."""

import copy
import math
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from llv import config, schema
from llv.config import compose
from llv.errors import LlvError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# ------------------------------------------------------------------------ the bad-input matrix

# (command, overrides, the key the one-line message must name)
BAD = [
    # surface: the keys of common.yaml and engine.yaml
    ("surface", ["eval.batch_size=abc"], "eval.batch_size"),
    ("surface", ["eval.batch_size=0"], "eval.batch_size"),
    ("surface", ["eval.batch_size=1.5"], "eval.batch_size"),
    ("surface", ["seed=abc"], "seed"),
    ("surface", ["seed=-1"], "seed"),
    ("surface", ["stop_after_points=-1"], "stop_after_points"),
    ("surface", ["stop_after_points=abc"], "stop_after_points"),
    ("surface", ["stop_after_points=0"], "stop_after_points"),
    ("surface", ["probe=maybe"], "probe"),
    ("surface", ["probe=1"], "probe"),
    ("surface", ["plot=maybe"], "plot"),
    ("surface", ["summary.eps=nan"], "summary.eps"),
    ("surface", ["summary.eps=-0.1"], "summary.eps"),
    ("surface", ["summary.cross_check=2"], "summary.cross_check"),
    ("surface", ["eval.chunk_points=0"], "eval.chunk_points"),
    ("surface", ["eval.points_per_batch=0"], "eval.points_per_batch"),
    ("surface", ["eval.precision=fp16"], "eval.precision"),
    ("surface", ["eval.bn=train"], "eval.bn"),
    ("surface", ["eval.compile=false"], "eval.compile"),  # the engine reads 'off', not false
    ("surface", ["eval.splits=[]"], "eval.splits"),
    ("surface", ["eval.splits=[val]"], "eval.splits"),
    ("surface", ["eval.splits=train"], "eval.splits"),
    ("surface", ["eval.splits=[train,train]"], "eval.splits"),
    ("surface", ["eval.max_samples=0"], "eval.max_samples"),
    ("surface", ["eval.bn_samples=0"], "eval.bn_samples"),
    ("surface", ["eval.channels_last=maybe"], "eval.channels_last"),
    ("surface", ["loss=nll"], "loss"),
    ("surface", ["direction.ensemble=0"], "direction.ensemble"),
    ("surface", ["direction.kind=gaussian"], "direction.kind"),
    ("surface", ["direction.type=params"], "direction.type"),
    ("surface", ["direction.ignore=bias"], "direction.ignore"),
    ("surface", ["direction.seed=1.5"], "direction.seed"),
    ("surface", ["direction.orthogonalize=yes"], "direction.orthogonalize"),
    ("surface", ["direction.norm=l2"], "direction.norm"),
    ("surface", ["direction.target=[a,b]"], "direction.target"),
    ("surface", ["device=gpu"], "device"),
    ("surface", ["device=cuda:x"], "device"),
    ("surface", ["dist.timeout_s=0"], "dist.timeout_s"),
    ("surface", ["dist.timeout_s=nan"], "dist.timeout_s"),
    ("surface", ["grid.x=-1:1:100000", "grid.y=-1:1:100000"], "grid"),
    ("surface", ["grid.x=-inf:inf:5"], "grid.x"),
    ("surface", ["checkpoint=true"], "checkpoint"),
    ("surface", ["out=[a]"], "out"),
    ("surface", ["name={a: 1}"], "name"),
    ("surface", ["dataset.num_classes=0"], "dataset.num_classes"),
    ("surface", ["dataset.std=[0.0]"], "dataset.std"),
    ("surface", ["dataset.mean=[nan]"], "dataset.mean"),
    ("surface", ["dataset.download=maybe"], "dataset.download"),
    ("surface", ["dataset.test_fraction=1.5"], "dataset.test_fraction"),
    ("surface", ["model.image_size=[8]"], "model.image_size"),
    ("surface", ["model=mlp", "model.hidden=[0]"], "model.hidden"),
    ("surface", ["model=custom", "model.module._target_=null"], "model.module"),
    ("surface", ["dataset=synthetic", "dataset.num_train=0"], "dataset.num_train"),
    ("surface", ["dataset=cifar10", "dataset.crop_padding=-1"], "dataset.crop_padding"),
    ("surface", ["dataset=text", "dataset.unit=words"], "dataset.unit"),
    ("surface", ["model=tiny_lm", "dataset=text", "model.num_heads=3"], "model.num_heads"),
    # direction
    ("direction", ["direction.ensemble=0"], "direction.ensemble"),
    ("direction", ["grid.y=-1:1:x"], "grid.y"),
    ("direction", ["dist.backend=nccl"], "dist.backend"),
    ("direction", ["seed=1e20"], "seed"),
    ("direction", ["overwrite=maybe"], "overwrite"),
    ("surface", ["strict=0"], "strict"),
    ("direction", ["seed=4294967296"], "seed"),
    ("surface", ["eval.max_samples=1e3"], "eval.max_samples"),  # reaches the data loader as is
    ("surface", ["eval.batch_size='64'"], "eval.batch_size"),
    ("hessian", ["hessian.tol='1e-3'"], "hessian.tol"),
    # interpolate
    ("interpolate", ["interpolate.recompute_bn=maybe"], "interpolate.recompute_bn"),
    ("interpolate", ["checkpoint2=[a]"], "checkpoint2"),
    ("interpolate", ["eval.splits=[train,valid]"], "eval.splits"),
    ("interpolate", ["grid.x=-0.5:1.5:1000000000"], "grid"),
    # hessian
    ("hessian", ["hessian.tol=nan"], "hessian.tol"),
    ("hessian", ["hessian.tol=0"], "hessian.tol"),
    ("hessian", ["hessian.top_k=0"], "hessian.top_k"),
    ("hessian", ["hessian.trace_probes=-5"], "hessian.trace_probes"),
    ("hessian", ["hessian.density_sigma=inf"], "hessian.density_sigma"),
    ("hessian", ["hessian.density_runs=0"], "hessian.density_runs"),
    ("hessian", ["hessian.dtype=float16"], "hessian.dtype"),
    ("hessian", ["hessian.batch_size=abc"], "hessian.batch_size"),
    ("hessian", ["hessian.max_samples=0"], "hessian.max_samples"),
    ("hessian", ["sharpness.eps=nan"], "sharpness.eps"),
    ("hessian", ["sharpness.directions=0"], "sharpness.directions"),
    ("hessian", ["sharpness.enabled=2"], "sharpness.enabled"),
    # train
    ("train", ["train.lr=nan"], "train.lr"),
    ("train", ["train.lr=0"], "train.lr"),
    ("train", ["train.epochs=-1"], "train.epochs"),
    ("train", ["train.batch_size=0"], "train.batch_size"),
    ("train", ["train.optimizer=rmsprop"], "train.optimizer"),
    ("train", ["train.momentum=1.5"], "train.momentum"),
    ("train", ["train.weight_decay=nan"], "train.weight_decay"),
    ("train", ["train.lr=1" + "0" * 400], "train.lr"),
    ("train", ["train.milestones=[a]"], "train.milestones"),
    ("train", ["train.optimizer=sam", "train.sam.rho=inf"], "train.sam.rho"),
    ("train", ["train.sam.base=rmsprop"], "train.sam.base"),
    ("train", ["train.num_workers=-1"], "train.num_workers"),
    ("train", ["train.save_every=0"], "train.save_every"),
    ("train", ["train.nesterov=maybe"], "train.nesterov"),
    ("train", ["eval.batch_size=auto"], "eval.batch_size"),
    ("train", ["seed=abc"], "seed"),
    ("train", ["dataset=text", "dataset.max_sequences=1"], "dataset.max_sequences"),
    # trajectory
    ("trajectory", ["trajectory.epochs=[a]"], "trajectory.epochs"),
    ("trajectory", ["trajectory.epochs=5"], "trajectory.epochs"),
    ("trajectory", ["trajectory.margin=nan"], "trajectory.margin"),
    ("trajectory", ["trajectory.memory_mb=0"], "trajectory.memory_mb"),
    ("trajectory", ["trajectory.surface=maybe"], "trajectory.surface"),
    ("trajectory", ["run=true"], "run"),
    ("trajectory", ["stop_after_points=-1"], "stop_after_points"),
]


def _case_id(case):
    return f"{case[0]}:{' '.join(case[1])}"


def test_the_matrix_covers_every_compute_command_with_at_least_60_cases():
    assert len(BAD) >= 60
    assert {command for command, _, _ in BAD} == set(config.COMMANDS)


@pytest.mark.parametrize(("command", "overrides", "key"), BAD, ids=[_case_id(c) for c in BAD])
def test_a_wrong_value_is_one_line_that_names_the_key(command, overrides, key):
    with pytest.raises(LlvError) as info:
        compose(command, overrides)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert re.search(rf"(^|[\s']){re.escape(key)}(:|=|\s|$)", message), message


@pytest.mark.parametrize(("override", "message"), [
    ("eval.batch_size=abc", "eval.batch_size: expected an integer >= 1 or 'auto', got 'abc'"),
    ("hessian.tol=nan", "hessian.tol: expected a finite number in (0, 1), got nan"),
    ("probe=maybe", "probe: expected one of true, false, strict, got 'maybe'"),
    ("eval.splits=[train,train]", "eval.splits: expected a non-empty list of distinct items, each one of "
                                  "train, test, got ['train', 'train']"),
    ("stop_after_points=-1", "stop_after_points: expected null or an integer >= 1, got -1"),
    ("seed=-1", "seed: expected an integer in [0, 4294967296), got -1"),
])
def test_the_message_says_what_was_expected_and_what_was_given(override, message):
    with pytest.raises(LlvError) as info:
        compose("surface", [override])
    assert str(info.value) == message


def test_a_grid_too_large_for_memory_is_refused_with_its_size():
    with pytest.raises(LlvError) as info:
        compose("surface", ["grid.x=-1:1:100000", "grid.y=-1:1:100000"])
    assert str(info.value) == ("grid: 100000x100000 points (x by y) = 10,000,000,000 would need about 596 GiB "
                               "of arrays; expected at most 100,000,000 points")
    with pytest.raises(LlvError, match=r"^grid: 200,000,000 points would need about 12 GiB"):
        compose("interpolate", ["grid.x=-0.5:1.5:200000000"])
    compose("surface", ["grid.x=-1:1:10000", "grid.y=-1:1:10000"])  # 10^8 points: the limit itself


# ----------------------------------------------------------------------- the command line


def _llv() -> list[str]:
    for candidate in (ROOT / ".venv" / "bin" / "llv", Path(sys.executable).with_name("llv")):
        if candidate.is_file():
            return [str(candidate)]
    return [sys.executable, "-m", "llv"]


CLI = [
    ("surface", ["eval.batch_size=abc"], "eval.batch_size"),
    ("surface", ["seed=abc"], "seed"),
    ("surface", ["stop_after_points=-1"], "stop_after_points"),
    ("surface", ["probe=maybe"], "probe"),
    ("surface", ["grid.x=-1:1:100000", "grid.y=-1:1:100000"], "grid"),
    ("interpolate", ["eval.chunk_points=0"], "eval.chunk_points"),
    ("hessian", ["hessian.tol=nan"], "hessian.tol"),
    ("train", ["train.lr=nan"], "train.lr"),
    ("direction", ["direction.ensemble=0"], "direction.ensemble"),
    ("trajectory", ["summary.eps=nan"], "summary.eps"),
]


@pytest.mark.parametrize(("command", "overrides", "key"), CLI, ids=[_case_id(c) for c in CLI])
def test_the_cli_refuses_a_wrong_value_with_exit_2_one_line_and_no_files(command, overrides, key, tmp_path):
    result = subprocess.run([*_llv(), command, *overrides], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert 1 <= len(lines) <= 3 and key in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # no run directory, no outputs/, no latest link


# ------------------------------------------------------------------------- no false refusals


GOOD = [
    ("surface", {"eval": {"batch_size": "auto", "max_samples": None, "splits": ["train", "test"]}}),
    ("surface", {"eval": {"batch_size": 1, "max_samples": 1, "splits": ["test"]}}),
    ("surface", {"probe": "strict", "plot": False}),
    ("surface", {"probe": False}),
    ("surface", {"device": "cuda:3"}),  # whether it exists is the task's question
    ("surface", {"device": "mps"}),
    ("surface", {"out": 2024, "name": 7, "checkpoint": "", "dir_file": "a b/ü.h5"}),
    ("surface", {"seed": 0, "stop_after_points": 1}),
    ("surface", {"seed": 4294967295, "direction": {"seed": 1000}}),
    ("surface", {"hessian": {"tol": 1e-12, "max_samples": None}, "train": {"lr": 1}}),
    ("surface", {"grid": {"x": "0:0:1", "y": None}}),
    ("surface", {"grid": {"x": "-1e30:1e30:3", "y": None}}),
    ("surface", {"summary": {"eps": 0}}),
    ("surface", {"model": {"name": "resnet8", "image_size": [8, 6]}}),
    ("surface", {"model": {"name": "mlp", "hidden": []}}),
    ("surface", {"model": {"name": "custom", "module": {"_target_": "nets.Tiny", "delay": 0.05}}}),
    ("surface", {"dataset": {"name": "synthetic", "mean": [0.0], "std": [1.0], "num_train": 40}}),
    ("surface", {"extra": "added with +", "eval": {"unknown": object()}}),  # + keys: not ours
    ("surface", {"paths": {"train": "outputs/experiments/train/x"}, "train": {"lr": 0.01}}),
    ("train", {"train": {"optimizer": "SGD", "sam": {"base": "Adam"}}}),  # the trainer lower-cases
    ("train", {"train": {"epochs": 0, "milestones": [], "momentum": 0.0, "sam": None}}),
    ("train", {"grid": {"x": None, "y": None}, "checkpoint": "x/final.pt"}),  # a preset's keys
    ("hessian", {"sharpness": None}),
    ("trajectory", {"trajectory": {"epochs": [0, 4, 9], "memory_mb": 0.5}}),
    ("trajectory", {"trajectory": {"epochs": None}}),
]


@pytest.mark.parametrize(("command", "values"), GOOD, ids=[f"{c}:{v}"[:60] for c, v in GOOD])
def test_valid_edge_values_pass(command, values):
    schema.validate(command, values)


def _option(group: str, option: str, dataset: dict) -> dict:
    """The node ``group=option`` puts in a config, resolved beside ``dataset`` (models take its shape)."""
    node = OmegaConf.load(CONF / group / f"{option}.yaml")
    small = OmegaConf.create({"dataset": dataset, group: node} if group != "dataset" else {"dataset": node})
    OmegaConf.resolve(small)
    return OmegaConf.to_container(small[group])


@pytest.fixture(scope="module")
def composed_defaults():
    return {command: compose(command) for command in config.COMMANDS}


def test_every_command_validates_with_every_option_of_every_group(composed_defaults):
    """The faithful version (Hydra composing each pair) is tests/test_config.py's
    test_every_option_of_every_group_composes, which validates through compose."""
    digits = OmegaConf.to_container(composed_defaults["surface"].dataset)
    nodes = {(group, option): _option(group, option, digits) for group in ("model", "dataset", "norm", "grid", "dist")
             for option in config.group_options(group)}
    checked = 0
    for command, cfg in composed_defaults.items():
        defaults = OmegaConf.to_container(cfg, resolve=True)
        assert defaults["dataset"] == digits
        for group in (g for g in config.command_groups(command) if g != "experiment"):
            for option in config.group_options(group):
                values = copy.deepcopy(defaults)
                node = copy.deepcopy(nodes[group, option])
                if group == "norm":  # '# @package direction'
                    values["direction"].update(node)
                else:
                    values[group] = node
                if group == "dataset":  # models take the data set's shape
                    values["model"].update({k: node[k] for k in ("in_channels", "num_classes", "image_size")})
                schema.validate(command, values)
                checked += 1
    assert checked > 200


def test_every_key_of_every_group_option_is_typed():
    for group, family in (("model", schema.model_family), ("dataset", schema.dataset_family)):
        for option in config.group_options(group):
            node = OmegaConf.load(CONF / group / f"{option}.yaml")
            known = {f.name for f in fields(family({"name": option}))}
            assert set(node.keys()) <= known, (group, option, set(node.keys()) - known)


def _flat(values, prefix=""):
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and key not in ("module", "paths"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_dataclass_defaults_are_the_yaml_defaults(composed_defaults):
    for command, cfg in composed_defaults.items():
        composed = _flat(OmegaConf.to_container(cfg, resolve=True))
        typed = _flat(schema.defaults(command))
        described = {key for key, _, _ in schema.describe(command)}
        assert set(composed) - {"command"} <= described, (command, set(composed) - described)
        assert set(composed) == set(typed) - {"paths"}, (command, set(composed) ^ set(typed))
        for key, value in composed.items():
            default = typed[key]
            if isinstance(default, str) and default.startswith("${"):
                continue  # the model's shape comes from the data set
            assert default == value or (isinstance(value, float) and math.isclose(default, value)), (
                command, key, default, value)


def test_every_key_has_a_one_line_doc_for_help():
    for command in config.COMMANDS:
        rows = schema.describe(command)
        assert len({key for key, _, _ in rows}) == len(rows)
        for key, _, doc in rows:
            assert doc and "\n" not in doc and len(doc) <= 160, (command, key, doc)
    mlp = dict((k, d) for k, d, _ in schema.describe("surface", model="mlp", dataset="synthetic"))
    assert mlp["model.hidden"] == [64, 64] and "dataset.num_train" in mlp and "dataset.split_seed" not in mlp
    assert mlp["model.name"] == "mlp" and mlp["dataset.name"] == "synthetic"
    surface = {k: d for k, d, _ in schema.describe("surface")}
    assert surface["eval.batch_size"] == "auto" and surface["grid.x"] == "-1:1:21"
    assert {k: d for k, d, _ in schema.describe("interpolate")}["direction.kind"] == "target"
    assert {k: d for k, d, _ in schema.describe("train")}["eval.batch_size"] == 1024


def test_the_enumerations_are_the_engines():
    """The schema cannot import the engine (torch); its choices must still be the engine's."""
    from llv import distributed, losses, training

    assert set(schema.LOSSES) == set(losses.LOSSES)
    assert set(schema.OPTIMIZERS) == set(training.OPTIMIZERS)
    assert set(schema.SAM_BASES) == set(training.SAM_BASES)
    assert set(schema.BACKENDS) == set(distributed.BACKENDS)


# ------------------------------------------------------------------------------ the presets


def _commands_of(preset: str) -> list[str]:
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    return re.findall(rf"^#   llv (\w+) experiment={re.escape(preset)}$", text, flags=re.M) or ["train"]


PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# One preset of each kind (train-only recipe, 1D/2D surfaces, interpolation, Hessian at a point
# and over a grid, trajectory, Adam, wide ResNets), each with every command it is meant for.
SAMPLE = ["paper_train", "fig1_resnet56_cpu", "fig2_vgg9_wd0_cpu", "fig3_vgg9_bs128_wd0_1d_none",
          "fig6_wrn56_1", "fig7_resnet56_cpu", "fig9_vgg9_bs8192_wd5e-4", "table1_resnet56_adam_bs128_wd0_cpu",
          "flat_vs_sharp_vgg9_sam"]


@pytest.mark.parametrize("preset", SAMPLE)
def test_a_preset_of_each_kind_validates_for_each_of_its_commands(preset):
    for command in _commands_of(preset):
        cfg = compose(command, [f"experiment={preset}"])
        assert cfg.command == command


@pytest.mark.slow
def test_every_preset_validates_for_each_of_its_commands():
    for preset in PRESETS:
        for command in _commands_of(preset):
            compose(command, [f"experiment={preset}"])


def test_composing_and_validating_import_no_torch():
    """Checks run before anything heavy: no torch, so a wrong value is refused in a second."""
    code = ("import sys; from llv.config import compose; from llv import schema; compose('surface'); "
            "schema.describe('hessian'); print(sorted(m for m in ('torch', 'h5py', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
