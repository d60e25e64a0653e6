"""Data sets: exact pixels and labels from torchvision's on-disk formats, splits, subsets,
augmentation, synthetic data and the one-line errors users see."""

from __future__ import annotations

import dataclasses
import gc
import gzip
import pickle
import sys
import types
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from llv.config import conf_dir, group_options
from llv.console import LlvError
from llv.data import DATASET_NAMES, EvalData, clear_cache, load_eval_data, load_split
from llv.data import synthetic as synthetic_module
from llv.data.digits import split_indices

CIFAR10_MEAN = np.array([125.3, 123.0, 113.9]) / 255
CIFAR10_STD = np.array([63.0, 62.1, 66.7]) / 255


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def dataset_cfg(option: str, **overrides):
    """The shipped ``conf/dataset/<option>.yaml`` with ``overrides`` (as ``dataset.key=value``)."""
    cfg = OmegaConf.load(conf_dir() / "dataset" / f"{option}.yaml")
    return OmegaConf.merge(cfg, overrides)


def expected_normalized(pixels: np.ndarray, scale: float, mean, std) -> torch.Tensor:
    """Hand-computed ``(x / scale - mean) / std`` in float32 for N×C×H×W pixels."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return torch.from_numpy((pixels.astype(np.float32) / np.float32(scale) - mean) / std)


# ----------------------------------------------------------------- files in torchvision's formats


def write_cifar10(root: Path, per_batch: int = 3, seed: int = 0, bad_label: bool = False) -> dict:
    """CIFAR-10's python pickles (5 train batches, a test batch, batches.meta); returns the data."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {"train": [], "test": []}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        if bad_label:
            labels[0] = 12
        entry = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": ["x.png"] * per_batch,
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
        written["test" if name == "test_batch" else "train"].append((data, labels))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {
        split: (np.concatenate([d for d, _ in parts]), np.concatenate([lab for _, lab in parts]))
        for split, parts in written.items()
    }


def write_cifar100(root: Path, count: int = 4, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for split in ("train", "test"):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        fine = [99, 0] + rng.integers(0, 100, size=count - 2).tolist()
        entry = {"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}
        (folder / split).write_bytes(pickle.dumps(entry, protocol=4))
        written[split] = (data, np.array(fine))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    return written


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: Path, folder: str, counts=(5, 3), seed: int = 2, gzip_test: bool = True
) -> dict:
    """Raw idx files of ``<root>/<folder>/raw``; the test files gzipped (both are accepted)."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    written = {}
    for split, prefix, count in (("train", "train", counts[0]), ("test", "t10k", counts[1])):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        for stem, payload in (
            (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
            (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049)),
        ):
            if split == "test" and gzip_test:
                (raw / f"{stem}.gz").write_bytes(gzip.compress(payload))
            else:
                (raw / stem).write_bytes(payload)
        written[split] = (images, labels)
    return written


def write_image_folder(root: Path, size: int = 4, seed: int = 3) -> dict:
    """``<root>/{train,test}/{cat,dog}/*.png`` RGB images; returns {split: [(array HWC, label)]}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {"train": [], "test": []}
    for split, per_class in (("train", 3), ("test", 2)):
        for label, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                array = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                Image.fromarray(array, "RGB").save(root / split / name / f"{i:02d}.png")
                written[split].append((array, label))
    return written


# --------------------------------------------------------------------------------- data set list


def test_every_dataset_config_has_a_reader():
    assert set(DATASET_NAMES) == set(group_options("dataset"))
    for name in DATASET_NAMES:
        cfg = dataset_cfg(name)
        assert cfg.name == name
        if name == "text":  # token ids are never normalized
            assert "mean" not in cfg and "std" not in cfg and not cfg.augment
            continue
        assert len(cfg.mean) in (1, cfg.in_channels) and len(cfg.std) in (1, cfg.in_channels)


def test_cifar10_config_holds_the_reference_normalization():
    cfg = dataset_cfg("cifar10")
    np.testing.assert_allclose(cfg.mean, CIFAR10_MEAN, rtol=0, atol=1e-15)
    np.testing.assert_allclose(cfg.std, CIFAR10_STD, rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------------------- CIFAR


def test_cifar10_pixels_labels_and_layout_are_exact(tmp_path):
    written = write_cifar10(tmp_path)
    cfg = dataset_cfg("cifar10", root=str(tmp_path))
    for split, count in (("train", 15), ("test", 3)):
        data = load_eval_data(cfg, split)
        pixels, labels = written[split]
        assert data.inputs.shape == (count, 3, 32, 32) and data.inputs.dtype == torch.float32
        assert torch.equal(data.targets, torch.from_numpy(labels.astype(np.int64)))
        expected = expected_normalized(
            pixels.reshape(-1, 3, 32, 32), 255, CIFAR10_MEAN, CIFAR10_STD
        )
        assert torch.equal(data.inputs, expected)
    # Flat rows are channel-major: entry c*1024 + h*32 + w is channel c at row h, column w.
    train = load_eval_data(cfg, "train")
    flat = written["train"][0]
    n, c, h, w = 4, 2, 5, 30
    value = flat[n, c * 1024 + h * 32 + w]
    assert train.inputs[n, c, h, w].item() == pytest.approx(
        (value / 255 - CIFAR10_MEAN[c]) / CIFAR10_STD[c], abs=1e-6
    )


@pytest.mark.slow  # imports torchvision (seconds); the test above checks the same numbers
def test_cifar10_matches_torchvision_totensor_normalize_bit_for_bit(tmp_path):
    from PIL import Image
    from torchvision import transforms

    written = write_cifar10(tmp_path, per_batch=2)
    data = load_eval_data(dataset_cfg("cifar10", root=str(tmp_path)), "test")
    # What torchvision's CIFAR10 + the reference's transform produce: HWC PIL image, ToTensor, Normalize.
    pipeline = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Normalize(
                mean=[125.3 / 255, 123.0 / 255, 113.9 / 255],
                std=[63.0 / 255, 62.1 / 255, 66.7 / 255],
            ),
        ]
    )
    hwc = written["test"][0].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    reference = torch.stack([pipeline(Image.fromarray(image)) for image in hwc])
    assert torch.equal(data.inputs, reference)


def test_cifar100_reads_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    cfg = dataset_cfg("cifar100", root=str(tmp_path))
    for split in ("train", "test"):
        data = load_eval_data(cfg, split)
        pixels, fine = written[split]
        assert data.targets.tolist() == fine.tolist() and data.targets[0] == 99
        assert torch.equal(
            data.inputs, expected_normalized(pixels.reshape(-1, 3, 32, 32), 255, cfg.mean, cfg.std)
        )


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar100(tmp_path)
    evil = {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [0], "x": print}
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps(evil))
    with pytest.raises(LlvError, match=r"not a CIFAR pickle file .*builtins\.print"):
        load_eval_data(dataset_cfg("cifar100", root=str(tmp_path)), "test")


def test_labels_outside_num_classes_are_one_error(tmp_path):
    write_cifar10(tmp_path, bad_label=True)
    with pytest.raises(LlvError, match=r"labels .* range over \d+\.\.12, outside 0\.\.9"):
        load_eval_data(dataset_cfg("cifar10", root=str(tmp_path)), "test")


def fake_torchvision_datasets(monkeypatch, **classes):
    """Stand-ins for ``torchvision.datasets.<Class>`` (importing torchvision takes seconds)."""
    datasets = types.ModuleType("torchvision.datasets")
    package = types.ModuleType("torchvision")
    package.datasets = datasets
    for name, constructor in classes.items():
        setattr(datasets, name, constructor)
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_download_true_uses_torchvision_downloader(tmp_path, monkeypatch):
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, train, download))
        write_cifar10(Path(root))

    fake_torchvision_datasets(monkeypatch, CIFAR10=fake_cifar10)
    data = load_eval_data(dataset_cfg("cifar10", root=str(tmp_path), download=True), "train")
    assert calls == [(str(tmp_path), True, True)]
    assert len(data) == 15


def test_failed_download_is_one_error(tmp_path, monkeypatch):
    def offline(root, train, download):
        raise RuntimeError("no network")

    fake_torchvision_datasets(monkeypatch, MNIST=offline)
    with pytest.raises(LlvError, match=rf"downloading MNIST into {tmp_path} failed: no network"):
        load_eval_data(dataset_cfg("mnist", root=str(tmp_path), download=True), "train")


# ------------------------------------------------------------------------------- MNIST / Fashion


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")]
)
def test_mnist_idx_files_plain_and_gzipped(tmp_path, name, folder):
    written = write_mnist(tmp_path, folder)
    cfg = dataset_cfg(name, root=str(tmp_path))
    for split, count in (("train", 5), ("test", 3)):  # test files are .gz
        data = load_eval_data(cfg, split)
        images, labels = written[split]
        assert data.inputs.shape == (count, 1, 28, 28)
        assert data.targets.tolist() == labels.tolist()
        assert torch.equal(
            data.inputs, expected_normalized(images[:, None], 255, cfg.mean, cfg.std)
        )


def test_mnist_wrong_magic_number_is_one_error(tmp_path):
    write_mnist(tmp_path, "MNIST", gzip_test=False)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(5, np.uint8), 2051))
    with pytest.raises(
        LlvError,
        match=r"train-labels-idx1-ubyte is not an idx file .*magic number 2051, expected 2049",
    ):
        load_eval_data(dataset_cfg("mnist", root=str(tmp_path)), "train")


# ---------------------------------------------------------------------------------- image folder


def test_image_folder_pixels_labels_and_class_order(tmp_path):
    written = write_image_folder(tmp_path, size=4)
    cfg = dataset_cfg("folder", root=str(tmp_path), image_size=4, num_classes=2)
    for split in ("train", "test"):
        data = load_eval_data(cfg, split)
        arrays = np.stack([a for a, _ in written[split]]).transpose(0, 3, 1, 2)
        assert data.targets.tolist() == [label for _, label in written[split]]  # cat=0, dog=1
        assert torch.equal(data.inputs, expected_normalized(arrays, 255, cfg.mean, cfg.std))


def test_image_folder_converts_channels_and_resizes(tmp_path):
    from PIL import Image

    written = write_image_folder(tmp_path, size=6)
    gray = load_eval_data(
        dataset_cfg(
            "folder",
            root=str(tmp_path),
            image_size=6,
            num_classes=2,
            in_channels=1,
            mean=[0.5],
            std=[0.5],
        ),
        "test",
    )
    luma = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a, _ in written["test"]])[
        :, None
    ]
    assert torch.equal(gray.inputs, expected_normalized(luma, 255, [0.5], [0.5]))
    small = load_eval_data(
        dataset_cfg("folder", root=str(tmp_path), image_size=3, num_classes=2), "train"
    )
    assert small.inputs.shape == (6, 3, 3, 3)


def test_image_folder_class_count_must_match_config(tmp_path):
    write_image_folder(tmp_path)
    with pytest.raises(LlvError, match=r"has 2 classes \(cat, dog\) .* set dataset\.num_classes=2"):
        load_eval_data(dataset_cfg("folder", root=str(tmp_path), image_size=4), "train")


# ---------------------------------------------------------------------------------------- digits


def test_digits_split_sizes_stratified_and_exact():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    cfg = dataset_cfg("digits")
    train, test = load_eval_data(cfg, "train"), load_eval_data(cfg, "test")
    assert (len(train), len(test)) == (1437, 360)
    index = split_indices(bunch.target, 0.2, 0)
    assert set(index["train"].tolist()).isdisjoint(index["test"].tolist())
    assert len(set(index["train"].tolist()) | set(index["test"].tolist())) == 1797
    class_counts = np.bincount(bunch.target, minlength=10)
    test_counts = np.bincount(test.targets.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * class_counts) <= 1)
    expected = expected_normalized(bunch.images[index["test"].numpy()][:, None], 16, [0.3], [0.4])
    assert torch.equal(test.inputs, expected)
    assert test.inputs.shape == (360, 1, 8, 8)


def test_digits_split_is_deterministic_per_seed():
    first = load_eval_data(dataset_cfg("digits"), "test")
    clear_cache()
    again = load_eval_data(dataset_cfg("digits"), "test")
    other = load_eval_data(dataset_cfg("digits", split_seed=1), "test")
    assert first is not again and torch.equal(first.inputs, again.inputs)
    assert not torch.equal(first.targets, other.targets) or not torch.equal(
        first.inputs, other.inputs
    )
    assert len(load_eval_data(dataset_cfg("digits", test_fraction=0.5), "test")) == 899


# --------------------------------------------------------------------- subsets, cache, device, dtype


def test_max_samples_is_a_seeded_sorted_subset():
    cfg = dataset_cfg("digits")
    full = load_eval_data(cfg, "train")
    subset = load_eval_data(cfg, "train", max_samples=100, seed=7)
    clear_cache()
    again = load_eval_data(cfg, "train", max_samples=100, seed=7)
    other = load_eval_data(cfg, "train", max_samples=100, seed=8)
    assert len(subset) == 100 and torch.equal(subset.indices, again.indices)
    assert subset.indices.tolist() == sorted(subset.indices.tolist())
    expected = torch.randperm(1437, generator=torch.Generator().manual_seed(7))[:100].sort().values
    assert torch.equal(subset.indices, expected)
    assert torch.equal(subset.inputs, full.inputs[expected]) and torch.equal(
        subset.targets, full.targets[expected]
    )
    assert not torch.equal(subset.indices, other.indices)
    assert len(load_eval_data(cfg, "train", max_samples=10**6)) == 1437
    with pytest.raises(LlvError, match="max_samples must be at least 1"):
        load_eval_data(cfg, "train", max_samples=0)


def test_eval_data_is_cached_per_arguments_and_cast_after_normalizing():
    cfg = dataset_cfg("digits")
    first = load_eval_data(cfg, "test")
    assert load_eval_data(cfg, "test") is first
    double = load_eval_data(cfg, "test", dtype=torch.float64)
    assert double.inputs.dtype == torch.float64 and double is not first
    assert torch.equal(double.inputs, first.inputs.double())
    assert isinstance(first, EvalData) and (first.name, first.split) == ("digits", "test")
    sizes = [(x.shape[0], y.shape[0]) for x, y in first.batches(128)]
    assert sizes == [(128, 128), (128, 128), (104, 104)]


@pytest.fixture
def digits_reads(monkeypatch):
    """Every digits split the files are read into, as weak references (in reading order)."""
    from llv.data import loading

    reads = []
    source = loading.SOURCES["digits"]

    def read(cfg, split, files):
        raw = source.read(cfg, split, files)
        reads.append(weakref.ref(raw))
        return raw

    monkeypatch.setitem(loading.SOURCES, "digits", dataclasses.replace(source, read=read))
    return reads


def test_the_stored_split_is_not_kept_beside_the_evaluation_tensors(digits_reads):
    cfg = dataset_cfg("digits")
    data = load_eval_data(cfg, "test")
    gc.collect()
    assert len(digits_reads) == 1 and digits_reads[0]() is None  # only the tensors remain
    assert load_eval_data(cfg, "test") is data and len(digits_reads) == 1
    # another view of the split reads the files again (nothing else held the stored copy)
    load_eval_data(cfg, "test", dtype=torch.float64)
    assert len(digits_reads) == 2


def test_a_training_split_shares_its_stored_copy_with_evaluation(digits_reads):
    cfg = dataset_cfg("digits")
    split = load_split(cfg, "train", augment=True)
    full = load_eval_data(cfg, "train")
    subset = load_eval_data(cfg, "train", max_samples=100, seed=1)
    again = load_split(cfg, "train")
    assert len(digits_reads) == 1 and digits_reads[0]() is split.raw is again.raw
    assert torch.equal(subset.inputs, full.inputs[subset.indices])
    del split, again
    gc.collect()
    assert digits_reads[0]() is None  # training is over: the stored copy goes
    assert load_eval_data(cfg, "train") is full  # the tensors stay cached


def test_clear_cache_forgets_tensors_and_rewritten_files_are_read_again(tmp_path):
    written = write_mnist(tmp_path, "MNIST", counts=(5, 3))
    cfg = dataset_cfg("mnist", root=str(tmp_path))
    first = load_eval_data(cfg, "test")
    clear_cache()
    assert load_eval_data(cfg, "test") is not first
    written_again = write_mnist(tmp_path / "other", "MNIST", counts=(5, 4), seed=9)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / "MNIST/raw" / name).write_bytes((tmp_path / "other/MNIST/raw" / name).read_bytes())
    changed = load_eval_data(cfg, "test")
    assert len(changed) == 4 and torch.equal(
        changed.targets, torch.from_numpy(written_again["test"][1].astype(np.int64))
    )
    assert len(first) == len(written["test"][1]) == 3


def _imports(path: Path) -> set[str]:
    """Modules a source file imports (anywhere in it, lazy imports included)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_data_layer_has_no_import_cycle_and_no_configuration():
    import graphlib

    import llv.data

    package = Path(llv.data.__file__).parent
    modules = {p.stem: _imports(p) for p in package.glob("*.py") if p.stem != "__init__"}
    graph = {
        name: {other for other in modules if other != name and f"llv.data.{other}" in imports}
        for name, imports in modules.items()
    }
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError
    assert order.index("source") < order.index("loading") < order.index("evaluation")
    assert order.index("cache") < order.index("loading")
    for name, imports in modules.items():
        # configuration lives in llv/tasks and llv/config.py; the data layer takes mappings
        assert not {m.split(".")[0] for m in imports} & {"omegaconf", "hydra"}, name
        assert not any(m.startswith(("llv.config", "llv.tasks", "llv.session")) for m in imports)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_eval_data_on_the_gpu_equals_the_cpu():
    cfg = dataset_cfg("digits")
    cpu = load_eval_data(cfg, "train", max_samples=300, seed=3)
    gpu = load_eval_data(cfg, "train", max_samples=300, seed=3, device="cuda")
    assert gpu.inputs.is_cuda and gpu.targets.is_cuda
    assert torch.equal(gpu.inputs.cpu(), cpu.inputs) and torch.equal(gpu.targets.cpu(), cpu.targets)


# --------------------------------------------------------------------------- training view, augment


def test_training_split_without_augmentation_equals_eval_data():
    from torch.utils.data import DataLoader

    cfg = dataset_cfg("digits")
    split = load_split(cfg, "train", augment=False)
    image, label = split[5]
    assert isinstance(label, int) and image.dtype == torch.float32 and image.shape == (1, 8, 8)
    x, y = next(iter(DataLoader(split, batch_size=64, shuffle=False)))
    full = load_eval_data(cfg, "train")
    assert (
        torch.equal(x, full.inputs[:64])
        and torch.equal(y, full.targets[:64])
        and y.dtype == torch.int64
    )
    assert torch.equal(image, full.inputs[5]) and label == int(full.targets[5])


def _crop_flip_candidates(padded: torch.Tensor, size: int, padding: int):
    """Every crop (and its mirror image) of one padded C×H×W image: (how, K×C×size×size)."""
    how, crops = [], []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + size, left : left + size]
            how += [(top, left, False), (top, left, True)]
            crops += [crop, crop.flip(-1)]
    return how, torch.stack(crops)


def test_augmentation_is_a_crop_or_flip_of_the_zero_padded_original(tmp_path):
    from torch.utils.data import DataLoader

    from llv.data.source import channel_stats, normalize

    written = write_cifar10(tmp_path, per_batch=2)
    cfg = dataset_cfg("cifar10", root=str(tmp_path))
    split = load_split(cfg, "train", augment=True)
    plain = load_eval_data(cfg, "train")
    raw = torch.from_numpy(written["train"][0].reshape(-1, 3, 32, 32))
    stats = channel_stats(cfg.mean, 3, "mean"), channel_stats(cfg.std, 3, "std")
    # Zero padding before normalization, as RandomCrop(32, padding=4) pads the PIL image.
    padded = normalize(torch.nn.functional.pad(raw, (4, 4, 4, 4)), 255, *stats)
    candidates = [_crop_flip_candidates(padded[i], 32, 4) for i in range(len(split))]
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        for i in range(len(split)):
            image, label = split[i]
            assert image.shape == (3, 32, 32) and label == int(plain.targets[i])
            how, crops = candidates[i]
            matches = (crops == image).flatten(1).all(dim=1).nonzero().flatten().tolist()
            assert matches, "augmented image is not a crop/flip of the padded original"
            seen.add(how[matches[0]])
    assert {flip for _, _, flip in seen} == {False, True} and len(seen) > 20
    x, y = next(iter(DataLoader(split, batch_size=10, shuffle=False)))
    assert x.shape == (10, 3, 32, 32) and torch.equal(y, plain.targets[:10])
    assert not torch.equal(x, plain.inputs[:10])


def test_augmentation_is_reproducible_under_torch_manual_seed():
    cfg = dataset_cfg("synthetic", image_size=8, num_train=16)
    split = load_split(cfg, "train", augment=True)
    torch.manual_seed(123)
    first = split.batch(range(16))[0]
    torch.manual_seed(123)
    assert torch.equal(split.batch(range(16))[0], first)


# ------------------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize(
    ("channels", "size", "classes"), [(3, 32, 10), (1, 8, 2), (5, 7, 100), (2, 1, 3)]
)
def test_synthetic_shape_and_determinism(channels, size, classes):
    cfg = dataset_cfg(
        "synthetic",
        in_channels=channels,
        image_size=size,
        num_classes=classes,
        num_train=40,
        num_test=24,
    )
    train = load_eval_data(cfg, "train")
    clear_cache()
    again = load_eval_data(cfg, "train")
    test = load_eval_data(cfg, "test")
    assert train.inputs.shape == (40, channels, size, size) and test.inputs.shape == (
        24,
        channels,
        size,
        size,
    )
    assert torch.equal(train.inputs, again.inputs) and torch.equal(train.targets, again.targets)
    assert 0 <= int(train.targets.min()) and int(train.targets.max()) < classes
    assert not torch.equal(train.inputs[:24], test.inputs)
    other = load_eval_data(
        dataset_cfg(
            "synthetic",
            in_channels=channels,
            image_size=size,
            num_classes=classes,
            num_train=40,
            data_seed=1,
        ),
        "train",
    )
    assert not torch.equal(train.inputs, other.inputs)


def test_synthetic_labels_are_an_argmax_of_a_fixed_linear_map():
    cfg = dataset_cfg("synthetic", in_channels=2, image_size=6, num_classes=7, num_train=200)
    train = load_eval_data(cfg, "train")  # mean 0, std 1: inputs are the pixels
    templates = synthetic_module.templates(2, 6, 7, seed=0)
    assert torch.equal(synthetic_module.label_images(train.inputs, templates), train.targets)
    counts = torch.bincount(train.targets, minlength=7)
    assert int(counts.min()) >= 10  # every class present, roughly balanced


def test_synthetic_labels_are_learnable_by_a_linear_classifier():
    cfg = dataset_cfg(
        "synthetic", in_channels=3, image_size=8, num_classes=10, num_train=600, num_test=300
    )
    train, test = load_eval_data(cfg, "train"), load_eval_data(cfg, "test")

    def features(x):
        return torch.cat([x.flatten(1), torch.ones(len(x), 1)], dim=1).double()

    # Ridge regression onto one-hot labels, fitted on train, scored on the unseen test split.
    a, onehot = features(train.inputs), torch.nn.functional.one_hot(train.targets, 10).double()
    weights = torch.linalg.solve(
        a.T @ a + 1e-3 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ onehot
    )
    accuracy = (
        (features(test.inputs) @ weights).argmax(dim=1).eq(test.targets).double().mean().item()
    )
    assert accuracy > 0.9


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw"),
        ("fashion_mnist", "FashionMNIST/raw"),
    ],
)
def test_missing_data_set_names_the_path_and_the_fix(tmp_path, name, where):
    with pytest.raises(LlvError) as error:
        load_eval_data(dataset_cfg(name, root=str(tmp_path)), "train")
    message = str(error.value)
    assert f"{tmp_path}/{where}" in message and "dataset.download=true" in message
    assert "\n" not in message


def test_missing_image_folder_names_the_path(tmp_path):
    with pytest.raises(LlvError, match=rf"{tmp_path}/train does not exist"):
        load_split(dataset_cfg("folder", root=str(tmp_path)), "train")


def test_unknown_split_and_dataset_are_one_error():
    with pytest.raises(LlvError, match=r"unknown split 'val'; valid splits: train, test"):
        load_eval_data(dataset_cfg("digits"), "val")
    with pytest.raises(LlvError, match=r"unknown split"):
        load_split(dataset_cfg("digits"), "validation")
    with pytest.raises(
        LlvError, match=r"unknown dataset 'imagenet'; valid options: digits, cifar10"
    ):
        load_eval_data(dataset_cfg("digits", name="imagenet"), "train")


@pytest.mark.parametrize(
    ("name", "override", "needle"),
    [
        (
            "cifar10",
            {"in_channels": 1},
            "CIFAR-10 has in_channels=3, image_size=32, num_classes=10, but the config says dataset.in_channels=1",
        ),
        (
            "digits",
            {"image_size": 28},
            "digits has in_channels=1, image_size=8, num_classes=10, but the config says dataset.image_size=28",
        ),
        ("mnist", {"num_classes": 100}, "dataset.num_classes=100"),
        (
            "cifar100",
            {"num_classes": 10},
            "num_classes=100, but the config says dataset.num_classes=10",
        ),
    ],
)
def test_config_inconsistent_with_the_data_set_is_one_error(tmp_path, name, override, needle):
    with pytest.raises(LlvError) as error:
        load_eval_data(dataset_cfg(name, root=str(tmp_path), **override), "train")
    assert needle in str(error.value)


def test_mean_and_std_must_fit_the_channels():
    with pytest.raises(
        LlvError, match=r"dataset\.mean has 2 values but the images have 3 channels"
    ):
        load_eval_data(dataset_cfg("synthetic", mean=[0.1, 0.2], num_train=4), "train")
    with pytest.raises(LlvError, match=r"dataset\.std must be positive"):
        load_split(dataset_cfg("synthetic", std=[0.0], num_train=4), "train")
