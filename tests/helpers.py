"""Build small real artifacts with the pure functions (no Prefect): a trained bundle."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from models.rnn import RNNConfig
from tasks.bundle import seal_bundle, write_bundle
from tasks.encode import build_label_map, encode_labels, encode_tokens
from tasks.segment import TokenizerSpec, segment_texts
from tasks.tables import build_vocab, vocab_to_index
from tasks.train import TrainConfig, train_model
from tests.conftest import tiny_corpus_rows


def train_tiny_bundle(
    out: Path, epochs: int = 2, max_len: int = 24, extra: dict | None = None
) -> Path:
    rows = tiny_corpus_rows()
    spec = TokenizerSpec(engine="char")
    tokens = segment_texts([t for t, _ in rows], spec)
    vocab = build_vocab(pl.DataFrame({"tokens": tokens}), min_freq=1, max_vocab=1000)
    ids, lengths = encode_tokens(tokens, vocab_to_index(vocab), max_len)
    labels = build_label_map(lab for _, lab in rows)
    y = encode_labels((lab for _, lab in rows), labels)
    data = {"ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(y)}  # fmt: skip
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(labels), cell="lstm",
                    embedding_dim=16, hidden_size=16)  # fmt: skip
    result = train_model(cfg, TrainConfig(epochs=epochs, batch_size=16, seed=0), data, data,
                         log=None)  # fmt: skip
    write_bundle(out, result.state_dict, cfg, spec, vocab, labels, max_len, metrics={"n": 0},
                 extra=extra)  # fmt: skip
    seal_bundle(out)
    return out
