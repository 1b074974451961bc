"""In-domain pretraining: word2vec embeddings from all the text at hand (pure functions).

Nothing pretrained for Chinese can be downloaded here, so zhflow learns its own: gensim's
word2vec (skip-gram, negative sampling) over the train split's tokens plus any unlabeled
text the user has (``zhflow run --unlabeled PATH``: the corpora scored every night, say).
The vectors initialise the RNN's ``nn.Embedding`` rows of the tokens word2vec saw; the rest
keep their random init. Then training proceeds as usual (the embeddings are fine-tuned).

Honest figures: an unlabeled text identical (after normalisation) to a valid or test text
is dropped before pretraining, so no test text reaches the model through its embeddings.

Deterministic for a seed: one worker thread, and a hash of our own for gensim's per-word
initial vectors (its default, Python's ``hash``, changes with every process).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PretrainSpec:
    """word2vec settings; part of the pretrain stage's cache key."""

    window: int = 5  # word2vec's default context: enough for short reviews
    epochs: int = 5  # word2vec's default passes
    min_count: int = 2  # a token seen once gets no reliable vector
    negative: int = 5  # negative samples per positive pair (gensim's default)
    skip_gram: bool = True  # better than CBOW for the rare words of small corpora

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stable_hash(text: str) -> int:
    """gensim's ``hashfxn``: the same initial vectors in every process (unlike ``hash``)."""
    return zlib.crc32(text.encode("utf-8"))


def train_word_vectors(
    docs: Iterable[Sequence[str]], dim: int, seed: int, spec: PretrainSpec = PretrainSpec()
) -> Any:
    """A trained gensim ``KeyedVectors`` of width ``dim`` over ``docs`` (token lists)."""
    from gensim.models import Word2Vec

    sentences = [list(d) for d in docs if d]
    if not sentences:
        raise ValueError("no text to pretrain on")
    model = Word2Vec(
        sentences=sentences,
        vector_size=dim,
        window=spec.window,
        min_count=spec.min_count,
        negative=spec.negative,
        sg=1 if spec.skip_gram else 0,
        epochs=spec.epochs,
        seed=seed,
        workers=1,  # more threads make the result depend on their timing
        hashfxn=stable_hash,
    )
    return model.wv


def align_to_vocab(vectors: Any, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(V, E)`` float32 rows in vocabulary-id order and a (V,) bool mask of the rows found.

    Tokens word2vec never kept (specials, rare words) get a zero row and ``found`` False."""
    dim = int(vectors.vector_size)
    matrix = np.zeros((len(tokens), dim), dtype=np.float32)
    found = np.zeros(len(tokens), dtype=bool)
    for i, token in enumerate(tokens):
        if token in vectors.key_to_index:
            matrix[i] = vectors[token]
            found[i] = True
    return matrix, found
