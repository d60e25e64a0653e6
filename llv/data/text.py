"""Plain text as next-token prediction: a file cut into fixed-length sequences of token ids.

The whole file becomes one stream of ids: its bytes (``dataset.unit=bytes``, 256 ids) or its
characters (``unit=chars``: the distinct characters of the file, numbered in code-point
order). The stream is cut into ``N = (length - 1) // seq_len`` consecutive, non-overlapping
sequences (at most ``max_sequences``); the target of each token is the token after it, so
``targets[:, :-1] == inputs[:, 1:]`` and ``targets[i, -1]`` is the first token of sequence
``i + 1``. A seeded permutation of the sequences puts ``round(test_fraction · N)`` of them in
``test`` and the rest in ``train``, each kept in text order.

Without ``dataset.path`` the text is the one bundled with llv (``llv/data/corpus/``: passages
of public-domain works, 26 KB), so ``dataset=text`` runs offline.

>>> ids = encode(b"abcabca", "bytes", 256)
>>> inputs, targets = cut(ids, seq_len=3, max_sequences=None)
>>> inputs.tolist(), targets.tolist()
([[97, 98, 99], [97, 98, 99]], [[98, 99, 97], [98, 99, 97]])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from llv.data.source import DataSource, TokenSplit, setting
from llv.errors import LlvError

CORPUS = Path(__file__).parent / "corpus"
BUNDLED = CORPUS / "public_domain.txt"
UNITS = ("bytes", "chars")


def text_file(cfg) -> Path:
    """``dataset.path`` (``~`` expanded) or, without one, the bundled text."""
    path = setting(cfg, "path", None)
    return Path(str(path)).expanduser() if path else BUNDLED


def check_config(cfg) -> None:
    """One-line errors for settings no text can satisfy (before any file is read)."""
    unit = str(setting(cfg, "unit", "bytes"))
    if unit not in UNITS:
        raise LlvError(f"dataset.unit must be one of {', '.join(UNITS)}, got {unit!r}")
    for key, least in (("seq_len", 1), ("vocab", 2)):
        if int(setting(cfg, key, least)) < least:
            raise LlvError(f"dataset.{key} must be at least {least}, got {setting(cfg, key)}")
    if not 0.0 < float(setting(cfg, "test_fraction", 0.1)) < 1.0:
        raise LlvError(
            f"dataset.test_fraction must be between 0 and 1, got {setting(cfg, 'test_fraction')}"
        )
    limit = setting(cfg, "max_sequences", None)
    if limit is not None and int(limit) < 2:
        raise LlvError(f"dataset.max_sequences must be at least 2 (or null for all), got {limit}")


def encode(data: bytes, unit: str, vocab: int) -> torch.Tensor:
    """The token ids (int64) of a file's ``data``; ``LlvError`` where an id would reach ``vocab``.

    >>> encode("héé".encode(), "chars", 2).tolist()
    [0, 1, 1]
    """
    if unit == "bytes":
        ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.int64)
        largest = int(ids.max()) if ids.numel() else -1
        if largest >= vocab:
            raise LlvError(
                f"the text holds byte {largest}, beyond dataset.vocab={vocab}: use vocab=256"
            )
        return ids
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LlvError(f"dataset.unit=chars needs UTF-8 text ({exc}); use unit=bytes") from None
    alphabet = sorted(set(text))
    if len(alphabet) > vocab:
        raise LlvError(
            f"the text has {len(alphabet)} distinct characters, more than dataset.vocab={vocab}: "
            f"set dataset.vocab={len(alphabet)} or more"
        )
    number = {char: i for i, char in enumerate(alphabet)}
    return torch.tensor([number[c] for c in text], dtype=torch.int64)


def cut(
    ids: torch.Tensor, seq_len: int, max_sequences: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive ``(inputs, targets)`` sequences, N×``seq_len`` each; targets shifted by one."""
    count = (int(ids.numel()) - 1) // seq_len
    if max_sequences is not None:
        count = min(count, int(max_sequences))
    if count < 2:
        raise LlvError(
            f"the text has {ids.numel()} tokens, too few for two sequences of dataset.seq_len="
            f"{seq_len} (a train and a test one): use a longer text or a smaller seq_len"
        )
    used = count * seq_len
    return ids[:used].view(count, seq_len).clone(), ids[1 : used + 1].view(count, seq_len).clone()


def split_indices(count: int, test_fraction: float, split_seed: int) -> dict[str, torch.Tensor]:
    """Sorted sequence indices of ``train`` and ``test``: a seeded draw, at least one in each.

    >>> parts = split_indices(10, 0.3, split_seed=0)
    >>> len(parts["train"]), len(parts["test"])
    (7, 3)
    """
    tests = min(max(round(count * float(test_fraction)), 1), count - 1)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(int(split_seed)))
    return {"test": order[:tests].sort().values, "train": order[tests:].sort().values}


def _locate(cfg, split: str) -> list[Path]:
    path = text_file(cfg)
    if not path.is_file():
        raise LlvError(f"dataset.path={setting(cfg, 'path')}: {path} is not a file")
    return [path]


def _read(cfg, split: str, files: Sequence[Path]) -> TokenSplit:
    (path,) = files
    ids = encode(
        path.read_bytes(), str(setting(cfg, "unit", "bytes")), int(setting(cfg, "vocab", 256))
    )
    inputs, targets = cut(ids, int(setting(cfg, "seq_len", 64)), setting(cfg, "max_sequences"))
    index = split_indices(
        len(inputs), float(setting(cfg, "test_fraction", 0.1)), int(setting(cfg, "split_seed", 0))
    )[split]
    return TokenSplit(inputs[index], targets[index])


SOURCE = DataSource("text", "text", None, _locate, _read, kind="tokens")
