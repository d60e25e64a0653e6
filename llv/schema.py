"""Typed configuration: one dataclass per config node, checked when a config is composed.

Every key of every command's config (``conf/<command>.yaml``, ``common``, ``engine`` and the
groups) is a field of a dataclass below with a type, its default (the yaml's), a check (range or
choices) and a one-line doc. :func:`validate` walks a composed config and raises
:class:`~llv.errors.LlvError` with one line that names the first wrong key, what it expects and
what it got; :func:`describe` lists ``(key, default, doc)`` for ``llv <command> --help``.

The checks run after Hydra composes, not through Hydra's ConfigStore: several keys take one of
two types (``batch_size``: an integer or ``auto``; ``probe``: a bool or ``strict``), which
OmegaConf's structured configs cannot express, and presets add nodes of other commands (a
surface preset carries its training recipe). Keys a check does not know (added with ``+``) are
left alone. Nothing here imports torch, so ``llv <command> --help`` and ``--cfg`` stay instant.

>>> [row for row in describe("surface") if row[0] == "eval.batch_size"][0][1]
'auto'
>>> Integer(low=1, auto=True).expected
"an integer >= 1 or 'auto'"
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass, make_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from llv.errors import LlvError

MAX_GRID_POINTS = 10**8
"""More points than this would not fit in memory: each takes ~8 float64 values (coefficients,
losses, accuracies, standard errors, done flags), so 10^8 points are already ~6 GiB."""
_BYTES_PER_POINT = 64

SEED_LIMIT = 2**32  # numpy and scikit-learn take seeds below 2^32


# ------------------------------------------------------------------------------------ checks


def _show(value: Any) -> str:
    """A value as the user typed it, on one short line: null, true, 'abc', nan, [1, 2]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _real(value: Any) -> float | None:
    """``value`` as a float when it is a number, else None (bools and strings are not numbers:
    Hydra reads unquoted numbers as numbers, and the engine does not convert every key)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # an int beyond float's range is no finite number either
        return math.inf


def _whole(value: Any) -> int | None:
    """``value`` when it is an int (not a bool, not 5.0: some keys reach the engine unconverted)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Check:
    """What a key accepts: ``ok(value)`` and ``expected``, the words after "expected"."""

    expected = "a value"
    null = False

    def ok(self, value: Any) -> bool:
        """Any value (the base check, e.g. the items of a ``ListOf`` given no item check)."""
        return True

    def accepts(self, value: Any) -> bool:
        return (value is None and self.null) or (value is not None and self.ok(value))

    def _or_null(self, text: str) -> str:
        return f"null or {text}" if self.null else text


def _bounds(low, high, low_open, high_open) -> str:
    def text(x):
        return str(x) if isinstance(x, int) else f"{x:g}"

    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{text(low)}, {text(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {text(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {text(high)}"
    return ""


def _inside(x: float, low, high, low_open, high_open) -> bool:
    if low is not None and (x <= low if low_open else x < low):
        return False
    return not (high is not None and (x >= high if high_open else x > high))


@dataclass(frozen=True)
class Integer(Check):
    """A whole number in a range; optionally ``auto`` or null."""

    low: int | None = None
    high: int | None = None
    auto: bool = False
    null: bool = False

    @property
    def expected(self) -> str:
        bounds = _bounds(self.low, self.high, False, True)
        text = f"an integer{bounds}" + (" or 'auto'" if self.auto else "")
        return self._or_null(text)

    def ok(self, value: Any) -> bool:
        if self.auto and value == "auto":
            return True
        n = _whole(value)
        return n is not None and _inside(n, self.low, self.high, False, True)


@dataclass(frozen=True)
class Number(Check):
    """A finite real number in a range (nan and inf are never numbers of a config)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    null: bool = False

    @property
    def expected(self) -> str:
        return self._or_null(f"a finite number{_bounds(self.low, self.high, self.low_open, self.high_open)}")

    def ok(self, value: Any) -> bool:
        x = _real(value)
        return x is not None and math.isfinite(x) and _inside(x, self.low, self.high, self.low_open,
                                                                self.high_open)


@dataclass(frozen=True)
class Flag(Check):
    """true or false (not 1, 'yes' or 'maybe')."""

    null: bool = False

    @property
    def expected(self) -> str:
        return self._or_null("true or false")

    def ok(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class OneOf(Check):
    """One of fixed choices (``fold_case``: in any letter case, as the code lower-cases it)."""

    choices: tuple = ()
    null: bool = False
    fold_case: bool = False

    @property
    def expected(self) -> str:
        return self._or_null("one of " + ", ".join(_show(c) if not isinstance(c, str) else c
                                                   for c in self.choices))

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool):  # True == 1: a bool is only a choice when it is listed
            return any(c is value for c in self.choices)
        if self.fold_case and isinstance(value, str):
            value = value.lower()
        return isinstance(value, (str, int, float)) and any(
            c == value for c in self.choices if not isinstance(c, bool))


@dataclass(frozen=True)
class Option(Check):
    """A name the engine's registry knows: an option shipped in ``conf/<group>/``.

    A user's own option (``--config-dir``) is a file of any name that sets one of these (e.g.
    ``name: resnet56`` with other settings), so the shipped names are the valid ones."""

    group: str = ""

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(group_options(self.group))

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and value in group_options(self.group)


@dataclass(frozen=True)
class Pattern(Check):
    """A string matching a regular expression (``words``: how the expectation reads)."""

    regex: str = ""
    words: str = ""
    null: bool = False

    @property
    def expected(self) -> str:
        return self._or_null(self.words)

    def ok(self, value: Any) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None


@dataclass(frozen=True)
class PathText(Check):
    """A file or directory path (its type only: existence is checked by the task that uses it).

    Numbers are paths too (``out=2024`` is a directory named 2024); true, false, lists and
    mappings are not."""

    null: bool = True

    @property
    def expected(self) -> str:
        return self._or_null("a path")

    def ok(self, value: Any) -> bool:
        return isinstance(value, (str, int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ListOf(Check):
    """A list whose items all pass ``item``; at least ``min_len`` of them, distinct if asked."""

    item: Check = field(default_factory=Check)
    min_len: int = 0
    distinct: bool = False
    null: bool = False

    @property
    def expected(self) -> str:
        size = "a non-empty list" if self.min_len == 1 else (
            f"a list of at least {self.min_len}" if self.min_len else "a list")
        return self._or_null(f"{size} of {'distinct ' if self.distinct else ''}items, each "
                             f"{self.item.expected}")

    def ok(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)) or len(value) < self.min_len:
            return False
        if self.distinct and len({_show(v) for v in value}) != len(value):
            return False
        return all(self.item.accepts(v) for v in value)


@dataclass(frozen=True)
class Either(Check):
    """Passes when any of ``checks`` passes."""

    checks: tuple = ()

    @property
    def expected(self) -> str:
        return " or ".join(c.expected for c in self.checks)

    def ok(self, value: Any) -> bool:
        return any(c.accepts(value) for c in self.checks)


@dataclass(frozen=True)
class GridAxis(Check):
    """``'min:max:num'`` (finite min < max, or min == max for num = 1), ``auto`` / ``auto:num``
    (the range found at run time, ``grid.auto_*``) or null (no axis)."""

    null: bool = True

    @property
    def expected(self) -> str:
        return self._or_null("'min:max:num' (finite min < max, num >= 1), e.g. '-1:1:51', or auto / auto:num")

    def ok(self, value: Any) -> bool:
        from llv.grid import parse_axis  # torch-free: the one parser of grid specs

        if not isinstance(value, str):
            return False
        try:
            parse_axis(value)
        except LlvError:
            return False
        return True


@dataclass(frozen=True)
class Target(Check):
    """The ``module`` of ``model=custom``: a mapping with a ``_target_`` (a dotted name)."""

    @property
    def expected(self) -> str:
        return "a mapping with _target_ (e.g. {_target_: torchvision.models.resnet18})"

    def ok(self, value: Any) -> bool:
        return isinstance(value, Mapping) and isinstance(value.get("_target_"), str) and bool(
            value.get("_target_"))


@dataclass(frozen=True)
class FolderName(Check):
    """A suffix of a run folder's name (``name=``): one plain folder name, never a path. A '/',
    a '\\', '..' or a leading '.' would put the run outside ``outputs/<command>/`` or hide it."""

    null: bool = True

    @property
    def expected(self) -> str:
        return self._or_null("a plain folder-name suffix (no '/', '\\', '..', NUL or leading '.')")

    def ok(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return False
        text = str(value)
        return (text != "" and not text.startswith(".") and ".." not in text
                and not any(c in text for c in "/\\\0"))


@dataclass(frozen=True)
class TextMap(Check):
    """A mapping from names to paths (a preset's ``paths``)."""

    null: bool = True

    @property
    def expected(self) -> str:
        return self._or_null("a mapping of names to paths")

    def ok(self, value: Any) -> bool:
        return isinstance(value, Mapping) and all(PathText().accepts(v) for v in value.values())


# ------------------------------------------------------------------------------- field helpers


def setting(default: Any, check: Check, doc: str, optional: bool = False) -> Any:
    """A dataclass field: its yaml default, the check its values pass and its one-line doc.
    ``optional``: a composed config may lack the key (it is not in the yaml files); every other
    key must be there (a ``~key`` deletion is refused, :func:`validate` with ``complete``)."""
    return _field(default, {"check": check, "doc": doc, "optional": optional})


def node(cls: type, doc: str, null: bool = False, family: Callable[[Mapping], type] | None = None) -> Any:
    """A nested config node (``family``: picks the dataclass from the node, e.g. by its name)."""
    return _field(cls, {"node": cls, "doc": doc, "null": null, "family": family})


def _field(default: Any, metadata: dict) -> Any:
    if isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def variant(cls: type, name: str, **defaults: Any) -> type:
    """``cls`` with other defaults (a command's own defaults of a shared node).

    Nested nodes are given as dataclasses: ``variant(Engine, "X", grid=PointGrid)``.
    """
    known = {f.name: f for f in fields(cls)}
    unknown = set(defaults) - set(known)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    specs = []
    for key, default in defaults.items():
        metadata = dict(known[key].metadata)
        if "node" in metadata:
            metadata["node"] = default
        specs.append((key, known[key].type, _field(default, metadata)))
    return make_dataclass(name, specs, bases=(cls,))


@cache
def conf_dir() -> Path:
    """The config tree: ``llv/conf`` inside an installed wheel, else the repository's ``conf/``
    (as :func:`llv.config.conf_dir`, which imports this module, so not the reverse)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "surface.yaml").is_file():
            return candidate
    raise LlvError(f"llv's config files are missing (looked in {here / 'conf'} and {here.parent / 'conf'})")


def group_options(group: str) -> tuple[str, ...]:
    """The options of a config group: the file names in ``conf/<group>/``."""
    return tuple(sorted(p.stem for p in (conf_dir() / group).glob("*.yaml")))


# ---------------------------------------------------------------------------- choices of keys

DIRECTION_KINDS = ("random", "target", "plane", "pca", "hessian", "file")
DIRECTION_TYPES = ("weights", "states")
IGNORE = ("biasbn", "none")
LOSSES = ("ce", "mse")
PRECISIONS = ("fp32", "fp64", "tf32", "bf16")
BN_MODES = ("stored", "recompute")
SPLITS = ("train", "test")
HESSIAN_DTYPES = ("float32", "float64")
BACKENDS = ("auto", "none", "mpi", "torch")
OPTIMIZERS = ("sgd", "adam", "sam")
SAM_BASES = ("sgd", "adam")

_SEED = Integer(low=0, high=SEED_LIMIT)
_COUNT = Integer(low=1)
_POSITIVE = Number(low=0, low_open=True)
_NON_NEGATIVE = Number(low=0)
_BATCH = Integer(low=1, auto=True)
_SPLITS = ListOf(OneOf(SPLITS), min_len=1, distinct=True)
_DEVICE = Pattern(r"auto|cpu|mps|cuda(:\d+)?", "one of auto, cpu, cuda, cuda:N, mps")


# ------------------------------------------------------------------------------------- nodes


@dataclass
class Model:
    """``model``: a network of the registry, shaped by the data set (resnet*, vgg9, wrn*...)."""

    name: str = setting("resnet8", Option(group="model"), "model=<name>: conf/model/<name>.yaml")
    in_channels: int = setting("${dataset.in_channels}", _COUNT, "input channels (the data set's)")
    num_classes: int = setting("${dataset.num_classes}", _COUNT, "output classes (the data set's)")
    image_size: int | list[int] = setting(
        "${dataset.image_size}", Either((Integer(low=1), ListOf(Integer(low=1), min_len=2))),
        "input height = width, or [height, width] (the data set's)")


@dataclass
class MlpModel(Model):
    """``model=mlp``: flatten, fully connected layers with ReLU, logits."""

    hidden: list[int] = setting([64, 64], ListOf(Integer(low=1), null=True), "width of each hidden layer")


@dataclass
class CustomModel(Model):
    """``model=custom``: any ``torch.nn.Module`` built by Hydra's instantiate."""

    module: dict = setting({"_target_": "torchvision.models.resnet18", "num_classes": "${dataset.num_classes}"},
                           Target(), "the module: _target_ (a dotted name) and its keyword arguments")


@dataclass
class LanguageModel(Model):
    """``model=tiny_lm``: a small causal transformer, token ids -> next-token logits."""

    vocab_size: int = setting("${oc.select:dataset.vocab,256}", _COUNT, "token ids, from the data set")
    seq_len: int = setting("${oc.select:dataset.seq_len,64}", _COUNT, "learned positions = the longest input")
    d_model: int = setting(64, _COUNT, "width of the residual stream")
    num_layers: int = setting(2, _COUNT, "transformer blocks")
    num_heads: int = setting(4, _COUNT, "attention heads (divide d_model)")
    mlp_ratio: int = setting(4, _COUNT, "each block's MLP is d_model -> mlp_ratio * d_model -> d_model")
    tie_weights: bool = setting(False, Flag(), "true: output head = token embedding (GPT-2; learns slower at this size)")

    @staticmethod
    def check_node(value: Mapping, path: str) -> None:
        heads, width = _whole(value.get("num_heads")), _whole(value.get("d_model"))
        if heads and width and width % heads:
            raise LlvError(f"{path}.num_heads: expected a divisor of {path}.d_model={width}, got {heads}")


_MODEL_FAMILIES = {"mlp": MlpModel, "custom": CustomModel, "tiny_lm": LanguageModel}


def model_family(value: Mapping) -> type:
    """The dataclass of a ``model`` node: its family decides which keys it has."""
    return _MODEL_FAMILIES.get(value.get("name"), Model)


@dataclass
class Dataset:
    """``dataset``: keys every data set has (models take their shape from them)."""

    name: str = setting("digits", Option(group="dataset"), "dataset=<name>: conf/dataset/<name>.yaml")
    root: str = setting("data", PathText(), "folder the data set is read from (and downloaded into)")
    download: bool = setting(False, Flag(), "fetch the files with torchvision when they are missing")
    in_channels: int = setting(1, _COUNT, "image channels")
    image_size: int = setting(8, Integer(low=1), "image height = width in pixels")
    num_classes: int = setting(10, _COUNT, "number of classes")
    augment: bool = setting(False, Flag(), "random crop + flip when training")


@dataclass
class ImageDataset(Dataset):
    """``dataset``: images (cifar10, cifar100, mnist, fashion_mnist, folder), normalized per channel."""

    mean: list[float] = setting([0.3], ListOf(Number(), min_len=1), "per-channel mean (one value: all)")
    std: list[float] = setting([0.4], ListOf(_POSITIVE, min_len=1), "per-channel standard deviation")
    crop_padding: int = setting(1, Integer(low=0), "augmentation: zero padding before the random crop")
    hflip: bool = setting(False, Flag(), "augmentation: random horizontal flip")


@dataclass
class Digits(ImageDataset):
    """``dataset=digits``: scikit-learn's 8x8 digits, split by a seeded stratified draw."""

    test_fraction: float = setting(0.2, Number(low=0, high=1, low_open=True, high_open=True),
                                   "share of the images in the test split")
    split_seed: int = setting(0, _SEED, "seed of the train/test split")


@dataclass
class Synthetic(ImageDataset):
    """``dataset=synthetic``: seeded random images with a learnable labelling, any shape."""

    num_train: int = setting(512, _COUNT, "training images")
    num_test: int = setting(256, _COUNT, "test images")
    data_seed: int = setting(0, _SEED, "seed of the templates and images")


@dataclass
class Text(Dataset):
    """``dataset=text``: a plain-text file as next-token prediction."""

    path: str | None = setting(None, PathText(), "your own UTF-8 text file; null: the bundled text")
    unit: str = setting("bytes", OneOf(("bytes", "chars")), "bytes (token = byte) | chars (token = character)")
    vocab: int = setting(256, Integer(low=2), "number of token ids (256 for bytes; >= distinct characters for chars)")
    seq_len: int = setting(64, _COUNT, "tokens per sequence (the model's context)")
    test_fraction: float = setting(0.1, Number(low=0, high=1, low_open=True, high_open=True),
                                   "share of the sequences in the test split")
    split_seed: int = setting(0, _SEED, "seed of the train/test split")
    max_sequences: int | None = setting(None, Integer(low=2, null=True), "use only the first N sequences (null: all)")


_DATASET_FAMILIES = {"digits": Digits, "synthetic": Synthetic, "text": Text, "cifar10": ImageDataset,
                     "cifar100": ImageDataset, "mnist": ImageDataset, "fashion_mnist": ImageDataset,
                     "folder": ImageDataset}


def dataset_family(value: Mapping) -> type:
    """The dataclass of a ``dataset`` node: its family decides which keys it has."""
    return _DATASET_FAMILIES.get(value.get("name"), Dataset)


@dataclass
class Grid:
    """``grid``: the coefficients of the directions, ``min:max:num`` per axis."""

    x: str | None = setting("-1:1:21", GridAxis(),
                            "x axis 'min:max:num' (null: a single point; auto / auto:num: found by grid.auto_*)")
    y: str | None = setting("-1:1:21", GridAxis(), "y axis 'min:max:num' (null: a 1D grid; auto / auto:num)")
    auto_rise: float = setting(2.0, Number(low=1, low_open=True),
                               "auto axes end where the loss first reaches auto_rise x the centre loss")
    auto_add: float | None = setting(None, Number(low=0, low_open=True, null=True),
                                     "auto axes: the level is the centre loss + auto_add instead (null: use auto_rise)")
    auto_max: float = setting(10.0, _POSITIVE, "auto axes: the largest |coefficient| searched (a side below the level is capped there)")
    auto_tol: float = setting(0.01, _POSITIVE, "auto axes: the search's final bracket width (direction units)")
    auto_symmetric: bool = setting(True, Flag(),
                                   "auto axes: +- the larger crossing (the centre stays a grid point); false: each side its own")

    @staticmethod
    def check_node(value: Mapping, path: str) -> None:
        """Refuse a grid whose arrays would not fit in memory, naming its size."""
        from llv.grid import parse_axis

        nums = [parse_axis(value[a]).num for a in ("x", "y") if isinstance(value.get(a), str)]
        points = math.prod(nums) if nums else 1
        if points > MAX_GRID_POINTS:
            size = f"{nums[0]}x{nums[1]} points (x by y) = {points:,}" if len(nums) == 2 else f"{points:,} points"
            gib = points * _BYTES_PER_POINT / 2**30
            raise LlvError(f"{path}: {size} would need about {gib:,.0f} GiB of arrays; "
                           f"expected at most {MAX_GRID_POINTS:,} points")


PointGrid = variant(Grid, "PointGrid", x=None, y=None)
InterpolationGrid = variant(Grid, "InterpolationGrid", x="-0.5:1.5:401", y=None)


@dataclass
class Dist:
    """``dist``: how ranks of a distributed run talk."""

    backend: str = setting("auto", OneOf(BACKENDS), "auto (detects mpiexec / torchrun) | none | mpi | torch")
    timeout_s: float = setting(3600, _POSITIVE, "a rank silent this long stops the job (seconds)")


SingleDist = variant(Dist, "SingleDist", backend="none")


@dataclass
class Direction:
    """``direction``: the directions of the plot."""

    kind: str = setting("random", OneOf(DIRECTION_KINDS),
                        "random | target | plane (through checkpoint, checkpoint2, checkpoint3) | pca | hessian | file")
    type: str = setting("weights", OneOf(DIRECTION_TYPES),
                        "weights (parameters only) | states (full state_dict incl. BN statistics)")
    ignore: str = setting("biasbn", OneOf(IGNORE),
                          "biasbn (zero on 1-D tensors) | none (equal to theta there, as the reference)")
    seed: int = setting(0, _SEED, "seed of the x direction; y uses an independent stream")
    orthogonalize: bool = setting(False, Flag(), "Gram-Schmidt y against x")
    target: str | None = setting(None, PathText(), "second checkpoint for kind=target")
    ensemble: int = setting(1, _COUNT, "number of independent direction sets")
    norm: str = setting("filter", Option(group="norm"),
                        "norm=<name>: filter | layer | weight | dfilter | dlayer | none")


@dataclass
class Eval:
    """``eval``: how grid points are evaluated."""

    splits: list[str] = setting(["train"], _SPLITS, "[train] | [test] | [train, test]")
    max_samples: int | None = setting(None, Integer(low=1, null=True), "null = the whole split; else a seeded subset")
    batch_size: int | str = setting("auto", _BATCH, "examples per forward pass; auto: 1024 on GPU, "
                                    "~128k pixels per pass on CPU")
    points_per_batch: int = setting(1, _COUNT, "grid points per vmapped forward pass")
    precision: str = setting("fp32", OneOf(PRECISIONS), "fp32 | fp64 | tf32 | bf16")
    channels_last: bool | str = setting("auto", OneOf((True, False, "auto")),
                                        "channels-last memory format for image batches: auto (CPU, images >= 16x16) | true | false")
    bn: str = setting("stored", OneOf(BN_MODES), "stored (running statistics as trained) | recompute")
    bn_samples: int = setting(1024, _COUNT, "training images used by bn=recompute")
    chunk_points: int = setting(64, _COUNT, "points per storage write (and per distributed message)")
    fold: bool = setting(True, Flag(), "fold BatchNorm into the conv/linear before it at every point (exact)")
    compile: str = setting("auto", OneOf(("auto", "on", "off")),
                           "torch.compile the per-point forward: auto (when the grid repays it) | on | off")
    streams: int | str = setting("auto", _BATCH, "CPU: points (or one point's batches) run at once, each "
                                 "op on one thread: auto (torch threads) | N")
    approx: bool = setting(False, Flag(), "certified fast mode: each point on a seeded subset grown "
                           "until its s.e. is small")
    target_se: float = setting(0.005, Number(low=0, high=1, low_open=True),
                               "approx: a point's standard error <= target_se x the surface's loss range")
    approx_rel_tol: float | None = setting(None, Number(low=0, low_open=True, null=True),
                                           "approx: also s.e. <= approx_rel_tol x the point's loss "
                                           "(log-scale pictures)")
    approx_start: int = setting(128, Integer(low=2), "approx: first subset size (then doubled, up to "
                                "the whole split)")


@dataclass
class Hessian:
    """``hessian``: the Hessian of the training loss (llv hessian, direction.kind=hessian)."""

    max_samples: int | None = setting(512, Integer(low=1, null=True),
                                      "examples of eval.splits[0] in the loss (null: all)")
    batch_size: int | str = setting("auto", _BATCH, "examples per Hessian-vector-product pass (auto as eval.batch_size)")
    dtype: str = setting("float32", OneOf(HESSIAN_DTYPES), "float32 | float64")
    tol: float = setting(1e-3, Number(low=0, high=1, low_open=True, high_open=True),
                         "relative tolerance of the Lanczos eigenvalues")
    top_k: int = setting(3, _COUNT, "top eigenpairs")
    trace_probes: int = setting(50, _COUNT, "Hutchinson Rademacher probes")
    density_runs: int = setting(2, _COUNT, "stochastic Lanczos quadrature runs")
    density_steps: int = setting(48, _COUNT, "Lanczos steps per run")
    density_sigma: float = setting(0.01, _POSITIVE, "Gaussian smoothing (fraction of the spectrum's range)")
    compute: list[str] = setting(["extremes", "top_k", "trace", "density", "sharpness"],
                                 ListOf(OneOf(("extremes", "top_k", "trace", "density", "sharpness")),
                                        min_len=1, distinct=True),
                                 "what llv hessian computes at a point: extremes, top_k, trace, density, "
                                 "sharpness (extremes and top_k share one Lanczos run)")
    warm_start: bool = setting(True, Flag(), "grid maps: each point's Lanczos starts from its neighbour's Ritz vectors")


@dataclass
class Summary:
    """``summary``: the figures printed and stored after a surface."""

    eps: float = setting(0.1, _NON_NEGATIVE, "flatness radius: distance where loss first exceeds centre loss + eps")
    cross_check: bool = setting(True, Flag(), "second-difference curvature at the centre beside d^T H d (type=weights)")


@dataclass
class Sam:
    """``train.sam``: sharpness-aware minimization (``train.optimizer=sam``)."""

    base: str = setting("sgd", OneOf(SAM_BASES, fold_case=True), "optimizer that makes SAM's update: sgd | adam")
    rho: float = setting(0.05, _POSITIVE, "neighbourhood radius (ASAM papers use larger, e.g. 0.5-2)")
    adaptive: bool = setting(False, Flag(), "true = ASAM: ascent scaled elementwise by T = |w| + eta")
    eta: float = setting(0.01, _NON_NEGATIVE, "ASAM's offset in T (Kwon et al. 2021)")


@dataclass
class Train:
    """``train``: the training recipe (SPEC §3)."""

    optimizer: str = setting("sgd", OneOf(OPTIMIZERS, fold_case=True),
                             "sgd (Nesterov momentum) | adam (set lr ~1e-3) | sam (around train.sam.base)")
    lr: float = setting(0.1, _POSITIVE, "learning rate (paper: 0.1, 0.01 for deep _noshort nets)")
    momentum: float = setting(0.9, Number(low=0, high=1), "sgd only")
    nesterov: bool = setting(True, Flag(), "sgd only")
    weight_decay: float = setting(5e-4, _NON_NEGATIVE, "L2 added by the optimizer (paper: 5e-4)")
    batch_size: int = setting(128, _COUNT, "examples per step (paper: 128)")
    epochs: int = setting(40, Integer(low=0), "epochs to train (paper: 300)")
    milestones: list[int] = setting([20, 30, 37], ListOf(Integer(low=0)), "lr x gamma after these epochs")
    gamma: float = setting(0.1, _POSITIVE, "learning-rate factor at each milestone (paper: 0.1)")
    augment: bool = setting("${dataset.augment}", Flag(), "random crop + flip (the data set's default)")
    save_every: int = setting(1, _COUNT, "checkpoint every N epochs (epoch 0 and the last always)")
    resume: bool = setting(False, Flag(), "true: continue the run in out=RUN_DIR from its last checkpoint")
    num_workers: int = setting(0, Integer(low=0), "DataLoader worker processes (0 = in the main process)")
    sam: Sam = node(Sam, "SAM / ASAM settings", null=True)


@dataclass
class TrainEval:
    """``eval`` of ``llv train``: the train/test evaluation after each epoch."""

    batch_size: int = setting(1024, _COUNT, "examples per forward pass when evaluating train/test each epoch")


@dataclass
class Sharpness:
    """``sharpness``: measures at the point (docs/sharpness.md); not computed for grids."""

    enabled: bool = setting(True, Flag(), "false: eigenvalues, trace and density only")
    eps: float = setting(1e-3, _POSITIVE, "epsilon-sharpness box |delta_i| <= eps (|theta_i| + 1) (Keskar et al.)")
    rho: float = setting(0.05, _POSITIVE, "adaptive (ASAM) sharpness: ellipsoid |delta / (|theta| + eta)|_2 <= rho")
    eta: float = setting(0.01, _NON_NEGATIVE, "ASAM's offset in T = |theta| + eta (as train.sam.eta)")
    radius: float = setting(0.1, _POSITIVE, "random-direction increase at theta +- radius * d")
    directions: int = setting(8, _COUNT, "K random directions: direction.seed, ..., direction.seed + K - 1")
    steps: int = setting(20, _COUNT, "loss-and-gradient evaluations per ascent restart, at most")
    restarts: int = setting(2, _COUNT, "ascent starts: theta, then seeded random points of the set")


@dataclass
class Interpolation:
    """``interpolate``: options of llv interpolate."""

    recompute_bn: bool = setting(False, Flag(), "re-estimate BN statistics from training data at every a")


@dataclass
class Curve:
    """``curve``: a low-loss curve between the two models (llv interpolate path=bezier|polychain)."""

    epochs: int = setting(10, Integer(low=0), "epochs of training of the control point")
    lr: float = setting(0.01, _POSITIVE, "learning rate of the control point (constant)")
    optimizer: str = setting("sgd", OneOf(("sgd", "adam")), "sgd | adam")
    momentum: float = setting(0.9, _NON_NEGATIVE, "SGD momentum")
    weight_decay: float = setting(0.0, _NON_NEGATIVE, "L2 penalty on the control point")
    batch_size: int = setting(128, _COUNT, "training examples per step (one t drawn per step)")
    points: int = setting(61, Integer(low=2), "t values evaluated in [0, 1]")
    bn: str = setting("recompute", OneOf(("recompute", "stored")),
                      "recompute (BN statistics re-estimated at every t) | stored (interpolated)")
    plane: int = setting(0, Integer(low=0), "n > 0: also the n x n loss over the plane through A, B and M")


@dataclass
class Trajectory:
    """``trajectory``: options of llv trajectory."""

    epochs: list[int] | None = setting(None, ListOf(Integer(low=0), null=True),
                                       "list of epochs to use (default: every saved epoch); the last is theta_n")
    surface: bool = setting(True, Flag(), "also compute the loss surface over the path's box")
    margin: float = setting(0.2, _NON_NEGATIVE, "fraction of the box's width added on each side")
    center: bool = setting(False, Flag(), "false: PCA about theta_n (the plotted plane); true: centered")
    memory_mb: float = setting(2048, _POSITIVE, "rows of the path held at once; beyond it checkpoints are re-read")
    run_config: bool = setting(True, Flag(), "use the train run's model and dataset (its config.yaml)")


# ------------------------------------------------------------------------- commands' configs


@dataclass
class Common:
    """Keys shared by every compute subcommand (conf/common.yaml)."""

    command: str = setting("", Pattern(r"[a-z]+", "the subcommand's name"), "the subcommand (set by llv)")
    name: str | None = setting(None, FolderName(), "suffix of the run directory: outputs/<command>/<timestamp>_<name>")
    out: str | None = setting(None, PathText(), "explicit run directory (replaces outputs/<command>/<timestamp>)")
    outputs: str = setting("outputs", PathText(), "root of all run directories")
    seed: int = setting(0, _SEED, "global seed (data subsets, training)")
    device: str = setting("auto", _DEVICE, "auto (cuda if available, else cpu) | cpu | cuda | cuda:N | mps")
    # the data set first: the model's shape comes from it, and a wrong value is named where typed
    dataset: Dataset = node(Digits, "the data set (dataset=<name>)", family=dataset_family)
    model: Model = node(Model, "the network (model=<name>)", family=model_family)
    paths: dict | None = setting(None, TextMap(), "a preset's run directories, by command", optional=True)


@dataclass
class Engine(Common):
    """Keys shared by the grid-evaluating subcommands (conf/engine.yaml)."""

    checkpoint: str | None = setting(None, PathText(), "model to look at; default outputs/train/latest/final.pt")
    checkpoint2: str | None = setting(None, PathText(), "model B: direction.kind=plane's second vertex")
    checkpoint3: str | None = setting(None, PathText(), "model C: direction.kind=plane's third vertex")
    dir_file: str | None = setting(None, PathText(), "reuse an existing direction file (llv's or the reference's)")
    resume: str | None = setting(None, PathText(), "surface/hessian file to complete (computes only points not done)")
    plot: bool = setting(True, Flag(), "draw the default figure at the end of the run")
    probe: bool | str = setting(True, OneOf((True, False, "strict")),
                                "pre-flight checks before a grid run: true | false | strict")
    loss: str = setting("ce", OneOf(LOSSES), "ce (mean cross-entropy) | mse (on one-hot targets)")
    stop_after_points: int | None = setting(None, Integer(low=1, null=True),
                                            "end the run after this many points (resume later); for time-limited jobs")
    strict: bool = setting(True, Flag(), "false: evaluate a checkpoint with NaN/inf weights (its points are NaN) "
                           "instead of refusing it")
    direction: Direction = node(Direction, "the plot directions")
    eval: Eval = node(Eval, "evaluation of grid points")
    hessian: Hessian = node(Hessian, "the Hessian of the training loss")
    summary: Summary = node(Summary, "the figures printed after a surface")
    grid: Grid = node(Grid, "the grid (grid=<name>, or grid.x / grid.y)")
    dist: Dist = node(Dist, "distributed runs (dist=<name>)")


@dataclass
class TrainConfig(Common):
    """``llv train`` (conf/train.yaml)."""

    command: str = setting("train", OneOf(("train",)), "the subcommand (set by llv)")
    train: Train = node(Train, "the training recipe")
    eval: TrainEval = node(TrainEval, "evaluation after each epoch")
    dist: Dist = node(SingleDist, "distributed runs (training runs on one process)")


@dataclass
class DirectionConfig(variant(Engine, "DirectionBase", command="direction", dist=SingleDist)):
    """``llv direction`` (conf/direction.yaml)."""

    overwrite: bool = setting(False, Flag(), "true: replace a directions.h5 already in out= (else refused)")


SurfaceConfig = variant(Engine, "SurfaceConfig", command="surface")


@dataclass
class InterpolateConfig(variant(
        Engine, "InterpolateBase", command="interpolate", grid=InterpolationGrid,
        direction=variant(Direction, "InterpolateDirection", kind="target", type="states", norm="none"),
        eval=variant(Eval, "InterpolateEval", splits=["train", "test"]))):
    """``llv interpolate`` (conf/interpolate.yaml)."""

    checkpoint2: str | None = setting(None, PathText(), "model B")
    path: str = setting("line", OneOf(("line", "bezier", "polychain")),
                        "line (the paper's) | bezier | polychain: a trained low-loss curve (curve.*)")
    interpolate: Interpolation = node(Interpolation, "options of llv interpolate")
    curve: Curve = node(Curve, "training of a low-loss curve (path=bezier|polychain)")


@dataclass
class HessianConfig(variant(Engine, "HessianBase", command="hessian", grid=PointGrid)):
    """``llv hessian`` (conf/hessian.yaml)."""

    sharpness: Sharpness = node(Sharpness, "measures at the point (docs/sharpness.md)", null=True)


@dataclass
class TrajectoryConfig(variant(
        Engine, "TrajectoryBase", command="trajectory",
        direction=variant(Direction, "TrajectoryDirection", kind="pca", norm="none"))):
    """``llv trajectory`` (conf/trajectory.yaml)."""

    run: str | None = setting(None, PathText(), "a train run directory (default outputs/train/latest)")
    trajectory: Trajectory = node(Trajectory, "options of llv trajectory")


CONFIGS: dict[str, type] = {
    "train": TrainConfig,
    "direction": DirectionConfig,
    "surface": SurfaceConfig,
    "interpolate": InterpolateConfig,
    "hessian": HessianConfig,
    "trajectory": TrajectoryConfig,
}
"""The dataclass of each command's composed config."""


# --------------------------------------------------------------------------------- validation


def validate(command: str, cfg, complete: bool = False) -> None:
    """Check every key of ``cfg`` (a composed ``command`` config); one-line LlvError if wrong.

    Keys of other commands' nodes (a preset's training recipe in a surface config) are checked
    by those nodes' dataclasses; keys no dataclass knows (added with ``+``) are left alone.
    With ``complete`` (a config composed from the yaml files, :func:`llv.config.compose`) every
    key of the command's own nodes must be there: a required key deleted with Hydra's ``~key``
    is refused, naming it, instead of failing deep inside a run.

    >>> validate("surface", {"eval": {"batch_size": "abc"}})
    Traceback (most recent call last):
    ...
    llv.errors.LlvError: eval.batch_size: expected an integer >= 1 or 'auto', got 'abc'
    """
    if command not in CONFIGS:
        raise LlvError(f"unknown command '{command}'; valid: {', '.join(CONFIGS)}")
    values = _plain(cfg)
    if not isinstance(values, Mapping):
        raise LlvError(f"the {command} config is not a mapping of keys")
    if "command" in values and values["command"] != command:
        raise LlvError(f"command: expected '{command}', got {_show(values['command'])}")
    _check_node(CONFIGS[command], values, "", fallback=True)
    if complete:
        _check_present(CONFIGS[command], values, "", command)


def _check_present(cls: type, values: Mapping, path: str, command: str) -> None:
    """Every field of ``cls`` that is not ``optional`` is a key of ``values`` (nodes recursively).

    >>> from llv.config import compose
    >>> compose("train", ["~train.lr"])
    Traceback (most recent call last):
    ...
    llv.errors.LlvError: train.lr: llv train needs this key, but the config has none (deleted with ~train.lr?): give it a value (train.lr=VALUE) instead of deleting it
    """
    for f in fields(cls):
        key = f"{path}{f.name}"
        if f.name not in values:
            if f.metadata.get("optional"):
                continue
            raise LlvError(f"{key}: llv {command} needs this key, but the config has none (deleted "
                           f"with ~{key}?): give it a value ({key}=VALUE) instead of deleting it")
        meta, value = f.metadata, values[f.name]
        if "node" in meta and isinstance(value, Mapping):
            node_cls = meta["family"](value) if meta.get("family") else meta["node"]
            _check_present(node_cls, value, key + ".", command)


def _plain(cfg) -> Any:
    """A composed config as plain dicts and lists (interpolations resolved)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        return cfg
    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:  # OmegaConf raises several types; all mean a bad interpolation
        raise LlvError(f"config does not resolve: {' '.join(str(exc).split())}") from exc


@cache
def _fallback_fields() -> dict[str, Any]:
    """Top-level fields of every command: a preset may carry another command's nodes."""
    found: dict[str, Any] = {}
    for cls in CONFIGS.values():
        for f in fields(cls):
            found.setdefault(f.name, f)
    return found


def _check_node(cls: type, values: Mapping, path: str, fallback: bool = False) -> None:
    own = {f.name: f for f in fields(cls)}
    order = [k for k in own if k in values] + [k for k in values if k not in own]  # the dataclass's order
    for key in order:
        f = own.get(key) or (_fallback_fields().get(key) if fallback else None)
        if f is None:
            continue  # added with +: not ours to judge
        _check_value(f, values[key], f"{path}{key}")
    check_node = getattr(cls, "check_node", None)
    if check_node is not None:
        check_node(values, path.rstrip(".") or "config")


def _check_value(f, value: Any, key: str) -> None:
    meta = f.metadata
    if "node" in meta:
        if value is None and meta.get("null"):
            return
        if not isinstance(value, Mapping):
            keys = ", ".join(g.name for g in fields(meta["node"]))
            raise LlvError(f"{key}: expected a mapping of keys ({keys}), got {_show(value)}")
        cls = meta["family"](value) if meta.get("family") else meta["node"]
        _check_node(cls, value, key + ".")
        return
    check: Check = meta["check"]
    if not check.accepts(value):
        hint = ""
        if isinstance(value, bool) and isinstance(check, OneOf) and {"on", "off"} & set(check.choices):
            hint = " (YAML reads an unquoted on/off as true/false: quote it, 'off')"
        raise LlvError(f"{key}: expected {check.expected}, got {_show(value)}{hint}")


# ------------------------------------------------------------------------------------- docs


def describe(command: str, model: str | None = None, dataset: str | None = None) -> list[tuple[str, Any, str]]:
    """``(key, default, doc)`` for every key of ``command``'s config, nodes flattened with dots.

    ``model`` and ``dataset`` name options of those groups (their keys differ by family);
    by default the command's defaults (resnet8 on digits).

    >>> ("seed", 0, "global seed (data subsets, training)") in describe("train")
    True
    """
    if command not in CONFIGS:
        raise LlvError(f"unknown command '{command}'; valid: {', '.join(CONFIGS)}")
    families = {"model": model_family({"name": model}) if model else None,
                "dataset": dataset_family({"name": dataset}) if dataset else None}
    rows: list[tuple[str, Any, str]] = []
    _describe(CONFIGS[command], "", rows, families)
    chosen = {"model.name": model, "dataset.name": dataset}
    return [(key, chosen.get(key) or default, doc) for key, default, doc in rows]


def _describe(cls: type, prefix: str, rows: list, families: dict) -> None:
    for f in fields(cls):
        if f.name == "command":
            continue
        key = prefix + f.name
        if "node" in f.metadata:
            _describe(families.get(key) or f.metadata["node"], key + ".", rows, families)
        else:
            rows.append((key, _default(f), f.metadata["doc"]))


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    value = f.default_factory()
    return value if not is_dataclass(value) else None


def defaults(command: str) -> dict[str, Any]:
    """The default config of ``command`` as nested dicts (what its yaml files compose to)."""
    def walk(cls: type) -> dict:
        out = {}
        for f in fields(cls):
            out[f.name] = walk(f.metadata["node"]) if "node" in f.metadata else _default(f)
        return out

    return walk(CONFIGS[command])


__all__ = ["CONFIGS", "MAX_GRID_POINTS", "Check", "defaults", "describe", "validate"]
