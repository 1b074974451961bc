"""The wide branch's input: each text as a bag of n-gram ids with TF-IDF weights (pure Python).

The chapter's N-gram representation, fed to a linear layer beside the RNN (``models/wide.py``).
Two kinds of n-grams, both taken from a text's tokens so that training and scoring see exactly
the same thing:

* ``w:`` word 1..``word_n``-grams of the tokenizer's tokens (``w:好吃``, ``w:很 好吃``);
* ``c:`` character 1..``char_n``-grams of the tokens joined (``c:好吃``): whitespace and
  stopwords are already gone, and they do not depend on how the text was segmented.

Which n-grams are features, and their IDF, come from the train split's n-gram table
(``zhflow.tasks.tables.select_ngram_features``). A document's weight for feature f is
``(1 + ln tf) * idf(f)`` (sublinear TF, as the TF-IDF + LinearSVC peer uses), L2-normalised
within each kind, so word and character evidence count alike whatever the text's length.

:class:`NgramFeaturizer` is picklable and imports neither torch nor polars: scoring runs it
in the segmentation workers, beside the token-id encoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

WORD, CHAR = "w", "c"
#: Word n-grams join their tokens with this (``zhflow.tasks.tables.NGRAM_SEPARATOR``).
WORD_JOIN = " "


@dataclass(frozen=True)
class NgramSpec:
    """Which n-grams the wide branch reads; part of the n-gram stage's cache key."""

    word_n: int = 2  # word 1-2-grams: the TF-IDF word peer's features
    char_n: int = 3  # character 1-3-grams: the TF-IDF character peer's features
    min_df: int = 2  # an n-gram in a single training text is noise, not evidence
    max_features: int = 500_000  # by document frequency; bounds the (F, C) weight table

    def __post_init__(self) -> None:
        for name in ("word_n", "char_n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
                raise ValueError(f"NgramSpec.{name} must be an integer in 0..5, got {value!r}")
        if self.word_n == 0 and self.char_n == 0:
            raise ValueError("NgramSpec needs word_n or char_n > 0")
        for name in ("min_df", "max_features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NgramSpec.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NgramSpec:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown NgramSpec keys: {', '.join(unknown)}")
        return cls(**data)


def word_ngram_keys(tokens: Sequence[str], n_max: int) -> Iterator[str]:
    for n in range(1, n_max + 1):
        for i in range(len(tokens) - n + 1):
            yield f"{WORD}:{WORD_JOIN.join(tokens[i : i + n])}"


def char_ngram_keys(tokens: Sequence[str], n_max: int) -> Iterator[str]:
    text = "".join(tokens)
    for n in range(1, n_max + 1):
        for i in range(len(text) - n + 1):
            yield f"{CHAR}:{text[i : i + n]}"


def smooth_idf(doc_freq: np.ndarray, n_docs: int) -> np.ndarray:
    """``ln((1 + N) / (1 + df)) + 1``: scikit-learn's smoothed IDF, never 0 or infinite."""
    return (np.log((1.0 + n_docs) / (1.0 + np.asarray(doc_freq, dtype=np.float64))) + 1.0).astype(
        np.float32
    )


@dataclass
class NgramFeaturizer:
    """Token lists → ragged TF-IDF bags: ``(ids int64, counts int64 per doc, weights float32)``.

    ``index`` maps feature keys (``w:...``, ``c:...``) to ids ``0..F-1``; ``idf`` is (F,).
    A document with no known n-gram gets an empty bag (the linear branch then gives its bias).
    """

    index: Mapping[str, int]
    idf: np.ndarray
    word_n: int
    char_n: int
    _is_word: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_features(self) -> int:
        return len(self.index)

    def _block(self, keys: Iterator[str]) -> tuple[np.ndarray, np.ndarray]:
        get = self.index.get
        found = [i for i in map(get, keys) if i is not None]
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        ids, tf = np.unique(np.asarray(found, dtype=np.int64), return_counts=True)
        weights = (1.0 + np.log(tf)) * self.idf[ids]
        norm = math.sqrt(float(np.dot(weights, weights)))
        return ids, (weights / norm).astype(np.float32)

    def bag(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = []
        if self.word_n:
            parts.append(self._block(word_ngram_keys(tokens, self.word_n)))
        if self.char_n:
            parts.append(self._block(char_ngram_keys(tokens, self.char_n)))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def word_counts(self, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Per row of ``__call__``'s output, how many of its bag's entries are word n-grams
        (they come first in a row: :meth:`bag`): the training split's view without them is
        the character n-grams alone (``zhflow.models.wide.without_word_ngrams``)."""
        if self._is_word is None:
            self._is_word = np.zeros(self.num_features, dtype=bool)
            for key, i in self.index.items():
                self._is_word[i] = key.startswith(f"{WORD}:")
        rows = np.repeat(np.arange(len(counts)), counts)
        return np.bincount(rows, weights=self._is_word[ids], minlength=len(counts)).astype(np.int64)

    def __call__(self, docs: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bags = [self.bag(d) for d in docs]
        counts = np.fromiter((len(b[0]) for b in bags), dtype=np.int64, count=len(bags))
        if not bags:
            return np.empty(0, np.int64), counts, np.empty(0, np.float32)
        ids = np.concatenate([b[0] for b in bags])
        weights = np.concatenate([b[1] for b in bags]).astype(np.float32, copy=False)
        return ids, counts, weights
