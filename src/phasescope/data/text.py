"""Text as windows of token ids: the embedded Tiny Shakespeare, and text files of the user's.

A corpus becomes :class:`~phasescope.data.base.Splits` whose samples are context windows: the
input of a sample is ``context`` consecutive token ids, its label the token that follows (a
causal language model's next-token prediction is a classification over the vocabulary). The
first 90% of the text is for training, the last 10% is held out (the usual split). Every
window of the training text is a training sample: ``x_train`` is a strided view of the token
stream (``unfold``), so a million windows cost the memory of the text alone; the measurement
takes seeded random windows (:mod:`phasescope.data.subsets`), whose offsets config.json records.

* ``shakespeare``: Tiny Shakespeare (1,115,394 characters of Shakespeare's plays, public domain;
  ``data/tinyshakespeare/input.txt`` of github.com/karpathy/char-rnn), shipped compressed in the
  package: no download. Characters are the tokens (65 of them).
* ``text``: a UTF-8 text file (``--data-dir FILE``), characters as tokens, the vocabulary the
  characters of the file. In the library, :func:`text_splits` takes any ``tokenizer`` with
  ``encode(str) -> list[int]`` and a vocabulary size (``len(tokenizer)`` or ``.vocab_size``),
  e.g. a Hugging Face tokenizer.

Per-window annotations for "the few" (``train_meta``/``test_meta``, followed by the per-sample
dynamics): ``offset``, where the window starts in its part of the text; ``target_frequency``, the share of the training text that is the window's next token,
and ``continuation_probability``, how often in the training text the window's last three tokens
are followed by that token (a 4-gram estimate of how predictable the continuation is; a rare
continuation has a low value).
"""
from __future__ import annotations

import lzma
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from .base import DataError, Splits

SHAKESPEARE = Path(__file__).parent / "text" / "tinyshakespeare.txt.xz"
SHAKESPEARE_SOURCE = ("Tiny Shakespeare (1,115,394 characters, public domain), data/tinyshakespeare/input.txt "
                      "of github.com/karpathy/char-rnn")
TEST_FRACTION = 0.1
NGRAM = 3  # tokens of context behind continuation_probability
MARKS = ("target_frequency", "continuation_probability")


class Tokenizer(Protocol):
    def encode(self, text: str) -> Sequence[int]: ...


class CharVocabulary:
    """Characters as tokens: id i is the i-th character of ``chars`` (sorted when built from a text)."""

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise DataError("a character vocabulary holds distinct single characters.")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
        table = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        order = np.argsort(table)
        pos = np.clip(np.searchsorted(table[order], points), 0, len(table) - 1)
        bad = table[order][pos] != points
        if bad.any():
            raise DataError(f"the character {chr(points[np.argmax(bad)])!r} is not in the vocabulary.")
        return order[pos].astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def vocabulary_size(tokenizer: Any) -> int:
    """``len(tokenizer)`` (a Hugging Face tokenizer counts its added tokens so), else ``.vocab_size``."""
    try:
        return int(len(tokenizer))
    except TypeError:
        pass
    size = getattr(tokenizer, "vocab_size", None)
    if size is None:
        raise DataError("the tokenizer has no size: give one with len(tokenizer) or .vocab_size.")
    return int(size)


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """The embedded Tiny Shakespeare, decompressed (once per process)."""
    with lzma.open(SHAKESPEARE, "rt", encoding="utf-8") as f:
        return f.read()


def _windows(ids: torch.Tensor, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of ``context`` ids and the id after it: a strided (n - context, context) view and (n - context,)."""
    return ids[:-1].unfold(0, context, 1), ids[context:]


def continuation_marks(train: np.ndarray, ids: np.ndarray, context: int, vocab: int,
                       n: int = NGRAM) -> dict[str, np.ndarray]:
    """Per window of ``ids`` (its next token at position j = i + context): the training-text frequency
    of that token, and P(token | the n tokens before it) counted on the training text ``train``."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64)
    nxt = ids[context:]
    freq = (counts / len(train))[nxt]
    if vocab ** (n + 1) >= 2 ** 62:  # codes would overflow: no n-gram estimate for huge vocabularies
        return {"target_frequency": freq, "continuation_probability": np.full(len(nxt), np.nan)}

    def codes(a: np.ndarray, length: int) -> np.ndarray:
        """Code of the `length`-gram starting at every position of ``a`` (base ``vocab``)."""
        out = np.zeros(len(a) - length + 1, dtype=np.int64)
        for k in range(length):
            out = out * vocab + a[k : len(a) - length + 1 + k]
        return out

    def count_of(table: np.ndarray, query: np.ndarray) -> np.ndarray:
        """How often each code of ``query`` occurs in ``table``."""
        keys, c = np.unique(table, return_counts=True)
        pos = np.clip(np.searchsorted(keys, query), 0, len(keys) - 1)
        return np.where(keys[pos] == query, c[pos], 0).astype(np.float64)

    # the (n+1)-gram ending at the next token, and its first n tokens, for positions context..end
    grams = codes(ids[context - n:], n + 1)
    prefix = grams // vocab
    full, head = count_of(codes(train, n + 1), grams), count_of(codes(train, n), prefix)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(head > 0, full / np.maximum(head, 1), np.nan)
    return {"target_frequency": freq, "continuation_probability": prob}


def text_splits(name: str, text: str, *, context: int = 64, tokenizer: Tokenizer | None = None,
                vocab_size: int | None = None, test_fraction: float = TEST_FRACTION, train_size: int | None = None,
                seed: int = 0, info: dict[str, Any] | None = None) -> Splits:
    """``text`` as :class:`Splits` of windows of ``context`` token ids (see the module docstring).

    ``tokenizer``: anything with ``encode(str) -> list[int]`` (its size from ``vocab_size``,
    ``len(tokenizer)`` or ``.vocab_size``); default: the characters of ``text``. ``train_size``: a
    seeded subset of that many training windows (default: every window of the first 90%).
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 1:
        raise DataError(f"context must be a positive number of tokens; got {context!r}.")
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be between 0 and 1; got {test_fraction}.")
    source = str((info or {}).get("source") or name)
    extra: dict[str, Any] = {}
    if tokenizer is None:
        vocab = CharVocabulary.from_text(text)
        ids, size, classes, kind = vocab.encode(text), len(vocab), list(vocab.chars), "characters"
        extra["vocabulary"] = "".join(vocab.chars)  # token i is character i
    else:
        ids = np.asarray(list(tokenizer.encode(text)), dtype=np.int64)
        size = int(vocab_size) if vocab_size is not None else vocabulary_size(tokenizer)
        decode = getattr(tokenizer, "decode", None)
        classes = [decode([i]) if decode else str(i) for i in range(size)] if size <= 1 << 16 else None
        kind = type(tokenizer).__name__
        if len(ids) and (ids.min() < 0 or ids.max() >= size):
            raise DataError(f"{source}: the tokenizer gave ids up to {int(ids.max())} but its vocabulary has {size}.")
    n_train = int(len(ids) * (1 - test_fraction))
    if n_train <= context or len(ids) - n_train <= context:
        raise DataError(f"{source}: {len(ids)} tokens are too few for windows of {context}: both the training "
                        f"({n_train}) and the held-out ({len(ids) - n_train}) part need more than {context}. Give a "
                        "longer text or a shorter --context.")
    train, test = ids[:n_train], ids[n_train:]
    x_train, y_train = _windows(torch.from_numpy(train), context)
    x_test, y_test = _windows(torch.from_numpy(test), context)
    train_meta = {**continuation_marks(train, train, context, size), "offset": np.arange(len(y_train))}
    test_meta = {**continuation_marks(train, test, context, size), "offset": np.arange(len(y_test))}
    about = {**(info or {}), "inputs": "tokens", "tokens": kind, "vocab_size": size, "context": context,
             "n_tokens": int(len(ids)), "split": {"train_tokens": int(n_train), "test_tokens": int(len(ids) - n_train),
                                                  "test_fraction": test_fraction},
             **extra, "marks": list(MARKS)}
    if train_size is not None:
        if train_size > len(y_train):
            raise DataError(f"{source}: train_size={train_size} is larger than the {len(y_train)} training windows.")
        keep = np.sort(np.random.default_rng(seed).choice(len(y_train), train_size, replace=False))
        x_train, y_train = x_train[torch.from_numpy(keep)], y_train[torch.from_numpy(keep)]
        train_meta = {k: v[keep] for k, v in train_meta.items()}
        about["train_size"] = int(train_size)
    return Splits(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                  classes=classes if classes is not None else [str(i) for i in range(size)],
                  mean=[0.0], std=[1.0], info=about, train_meta=train_meta, test_meta=test_meta)


def load_shakespeare(*, train_size: int | None = None, seed: int = 0, data_dir: Any = None, download: bool = False,
                     context: int = 64) -> Splits:
    return text_splits("shakespeare", shakespeare_text(), context=context, train_size=train_size, seed=seed,
                       info={"source": SHAKESPEARE_SOURCE})


def load_text_file(*, data_dir: Any = None, train_size: int | None = None, seed: int = 0, download: bool = False,
                   context: int = 64) -> Splits:
    if data_dir is None:
        raise DataError("--dataset text reads a text file: give it as --data-dir FILE.")
    path = Path(data_dir).expanduser()
    if not path.is_file():
        raise DataError(f"--dataset text: {path} is not a file; give a UTF-8 text file as --data-dir.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"--dataset text: {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    return text_splits("text", text, context=context, train_size=train_size, seed=seed, info={"source": str(path)})


def is_text(data: Splits) -> bool:
    """Whether ``data`` holds windows of token ids (a text dataset)."""
    return data.info.get("inputs") == "tokens"


def window_offsets(data: Splits, rows: np.ndarray, split: str) -> list[int]:
    """Offsets in the ``split``'s text (train: the first 90%; test: the held-out 10%) of the windows at
    ``rows``: such a window covers tokens offset..offset+context-1, and its label is token offset+context."""
    meta = data.train_meta if split == "train" else data.test_meta
    return [int(v) for v in np.asarray(meta["offset"])[np.asarray(rows, dtype=np.int64)]]
