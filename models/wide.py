"""The wide branch: a linear classifier over a bag of n-grams (the chapter's N-gram model).

    bag of n-gram ids + TF-IDF weights (ragged, per text) ──EmbeddingBag(sum)──▶ logits (B, C)

``nn.EmbeddingBag(F, C, mode="sum")`` with per-sample weights computes ``x @ W`` for the
sparse TF-IDF row ``x`` (F wide, a few hundred non-zeros) without ever building a dense
(B, F) matrix: the cost is the number of n-grams, not the feature count. This is the model
TF-IDF + a linear SVM is, trained with cross-entropy; ``models/rnn.py`` adds its logits
to the RNN's (see ``RNNClassifier``).

Bags travel ragged: ``ids`` (all rows' feature ids, row after row), ``counts`` (N,) and
``weights``; :func:`gather_bags` cuts one batch out of them as EmbeddingBag wants it.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn as nn


class Bags(NamedTuple):
    """One batch of bags, as ``nn.EmbeddingBag`` takes them."""

    indices: torch.Tensor  # (K,) int64 feature ids of all rows
    offsets: torch.Tensor  # (B,) int64 start of each row in ``indices``
    weights: torch.Tensor  # (K,) float32 TF-IDF weights

    def to(self, device: torch.device | str) -> Bags:
        return Bags(*(t.to(device, non_blocking=True) for t in self))


class RaggedBags(NamedTuple):
    """All rows' bags of one split: ``ids``/``weights`` (K,), ``counts`` (N,)."""

    ids: torch.Tensor
    counts: torch.Tensor
    weights: torch.Tensor

    @property
    def starts(self) -> torch.Tensor:
        return torch.cumsum(self.counts, 0) - self.counts


def gather_bags(bags: RaggedBags, rows: torch.Tensor, starts: torch.Tensor | None = None) -> Bags:
    """The bags of ``rows`` (any order) as one EmbeddingBag batch; ``starts`` = ``bags.starts``
    precomputed (pass it when gathering many batches from one split)."""
    rows = rows.to("cpu", torch.int64)
    starts = bags.starts if starts is None else starts
    counts = bags.counts[rows]  # (B,)
    offsets = torch.cumsum(counts, 0) - counts  # (B,) where each row starts in the batch
    # Position of every batch element in the split's flat arrays: row start + rank in row.
    total = int(counts.sum())
    shift = torch.repeat_interleave(starts[rows] - offsets, counts, output_size=total)
    flat = shift + torch.arange(total)
    return Bags(bags.ids[flat], offsets, bags.weights[flat])


def without_word_ngrams(bags: RaggedBags, word_counts: torch.Tensor) -> RaggedBags:
    """The same rows' bags with their word n-grams dropped: the character n-grams alone.

    ``word_counts`` (N,) says how many entries of each row's bag are word n-grams; they come
    first in a row (``zhflow.tasks.features.NgramFeaturizer.bag``). Each block is
    L2-normalised on its own, so the character entries keep their weights: a model fitted on
    these bags is the full model with the word rows of its table at zero."""
    word_counts = word_counts.to(torch.int64)
    rows = torch.repeat_interleave(torch.arange(bags.counts.shape[0]), bags.counts)  # (K,)
    rank = torch.arange(bags.ids.shape[0]) - bags.starts[rows]  # position within its row
    keep = rank >= word_counts[rows]
    return RaggedBags(bags.ids[keep], bags.counts - word_counts, bags.weights[keep])


def bag_matrix(bags: RaggedBags, num_features: int) -> torch.Tensor:
    """All rows' bags as one sparse CSR matrix (N, F): what a full-batch fit multiplies by.

    Built through COO so duplicate ids within a row are summed and columns come sorted."""
    n = bags.counts.shape[0]
    rows = torch.repeat_interleave(torch.arange(n), bags.counts)
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; the ops used here are not
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(
            torch.stack([rows, bags.ids]), bags.weights, (n, num_features), check_invariants=True
        )
        return coo.coalesce().to_sparse_csr()


def transpose_csr(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix.T`` as CSR, for the gradient ``X.T @ G`` of a full-batch fit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return matrix.to_sparse_coo().t().coalesce().to_sparse_csr()


class NgramLinear(nn.Module):
    """Logits = sum over a text's n-grams of weight x W[ngram] + b. Zero-initialised: training
    starts from the class prior, and no random draw is spent: torch's global generator, which
    the RNN's init and dropout draw from, is where it would be without this branch, so a seed
    trains the same RNN with or without it."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        # ``_weight`` skips EmbeddingBag's own init, a normal draw of F x C values (500k x C on
        # the demo) that would move the global generator and with it every dropout mask.
        self.bag = nn.EmbeddingBag(num_features, num_classes, mode="sum",
                                   _weight=torch.zeros(num_features, num_classes))  # fmt: skip
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Back to zero (the class prior): no random draw."""
        with torch.no_grad():
            self.bag.weight.zero_()
            self.bias.zero_()

    def forward(self, bags: Bags) -> torch.Tensor:
        out = self.bag(bags.indices, bags.offsets, per_sample_weights=bags.weights)  # (B, C)
        return out + self.bias
