"""Build small real artifacts with the pure functions (no Prefect): a trained bundle."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from tests.conftest import tiny_corpus_rows
from zhflow.models.ensemble import MeanEnsemble
from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.tasks.bundle import seal_bundle, write_bundle
from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens
from zhflow.tasks.features import NgramSpec
from zhflow.tasks.segment import TokenizerSpec, segment_texts
from zhflow.tasks.tables import (
    build_vocab,
    featurizer_from_table,
    select_ngram_features,
    vocab_to_index,
)
from zhflow.tasks.train import TrainConfig, train_model


def train_tiny_bundle(
    out: Path,
    epochs: int = 2,
    max_len: int = 24,
    wide: bool = False,
    seed: int = 0,
    extra: dict | None = None,
    members: int = 1,
) -> Path:
    """A bundle trained on the tiny corpus; ``wide`` adds the n-gram branch (char 1-3);
    ``extra`` goes into its config.json (e.g. a training record); ``members`` > 1 makes it a
    seed ensemble (seeds seed..seed+members-1), as ``zhflow run --seeds`` does."""
    rows = tiny_corpus_rows()
    spec = TokenizerSpec(engine="char")
    tokens = segment_texts([t for t, _ in rows], spec)
    frame = pl.DataFrame({"tokens": tokens})
    vocab = build_vocab(frame, min_freq=1, max_vocab=1000)
    ids, lengths = encode_tokens(tokens, vocab_to_index(vocab), max_len)
    labels = build_label_map(lab for _, lab in rows)
    y = encode_labels((lab for _, lab in rows), labels)
    data = {"ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(y)}  # fmt: skip
    features = None
    if wide:
        ngram_spec = NgramSpec(word_n=0, char_n=3, min_df=2)
        table = select_ngram_features(frame, ngram_spec)
        bag_ids, bag_counts, bag_weights = featurizer_from_table(table, ngram_spec)(tokens)
        data.update(bag_ids=torch.from_numpy(bag_ids), bag_counts=torch.from_numpy(bag_counts),
                    bag_weights=torch.from_numpy(bag_weights))  # fmt: skip
        features = (table, ngram_spec.to_dict())
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(labels), cell="lstm",
                    embedding_dim=16, hidden_size=16,
                    wide_features=features[0].height if features else 0)  # fmt: skip
    states = [
        train_model(cfg, TrainConfig(epochs=epochs, batch_size=16, seed=seed + k), data, data,
                    log=None).state_dict
        for k in range(members)
    ]  # fmt: skip
    state = states[0]
    if members > 1:
        nets = [RNNClassifier(cfg) for _ in range(members)]
        for net, weights in zip(nets, states, strict=True):
            net.load_state_dict(weights)
        state = MeanEnsemble(nets).state_dict()
        extra = {**(extra or {}), "ensemble": members}
    write_bundle(out, state, cfg, spec, vocab, labels, max_len, metrics={"n": 0},
                 features=features, extra=extra)  # fmt: skip
    seal_bundle(out)
    return out
