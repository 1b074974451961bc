"""Extension points: an engine and a model type registered from this module alone (no edit to
the package) run through the pipeline."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest
import torch
from torch import nn

from zhflow.models.registry import MODEL_TYPES, register_model_type
from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.tasks.engines import ENGINES, Tokenizer, TokenizerEngine, register_engine

pytestmark = pytest.mark.prefect


class PairsEngine(TokenizerEngine):
    """Overlapping character pairs: 很好吃 -> 很好, 好吃 (a one-character text stays itself)."""

    name = "pairs"

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        return lambda text: [text[i : i + 2] for i in range(max(1, len(text) - 1))]


@pytest.fixture
def pairs_engine():
    engine = register_engine(PairsEngine())
    yield engine
    del ENGINES[engine.name]


def test_a_registered_tokenizer_engine_runs_through_the_pipeline(
    prefect_server, pairs_engine, tiny_csv, tmp_path
) -> None:
    from zhflow.flows.pipeline import train_pipeline
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.predict import predict_texts

    summary = train_pipeline(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), tokenizer="pairs",
                             epochs=1, hidden=16, embedding_dim=16, batch_size=16, seed=3,
                             processes=1)  # fmt: skip
    tokens = pl.read_parquet(f"{summary['artifacts']['tokens']}/tokens.parquet")
    assert all(len(t) == 2 for row in tokens["tokens"].to_list() for t in row if len(row) > 1)
    bundle = load_bundle(summary["model"])
    assert bundle.tokenizer.engine == "pairs"
    assert bundle.config["tokenizer"]["identity"]["engine"] == "pairs"
    (row,) = predict_texts(bundle, ["很好吃"])
    assert row["label"] in bundle.labels


class MeanPoolClassifier(RNNClassifier):
    """A bag of embeddings: the mean of a text's token vectors -> linear (no recurrence used)."""

    def __init__(self, config: RNNConfig) -> None:
        super().__init__(config)
        self.mean_head = nn.Linear(config.input_size, config.num_classes)

    def deep_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        steps = torch.arange(ids.shape[1], device=ids.device)
        mask = (steps[None, :] < lengths.to(ids.device)[:, None]).to(x.dtype)
        mean = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.mean_head(mean)


@pytest.fixture
def meanpool_type():
    register_model_type("meanpool", MeanPoolClassifier)
    yield "meanpool"
    del MODEL_TYPES["meanpool"]


def test_a_registered_model_type_runs_through_the_pipeline(
    prefect_server, meanpool_type, tiny_csv, tmp_path
) -> None:
    from zhflow.flows.pipeline import train_pipeline
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.predict import predict_texts

    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), tokenizer="char", epochs=1,
                hidden=16, embedding_dim=16, batch_size=16, seed=3)  # fmt: skip
    summary = train_pipeline(**args, model_type=meanpool_type)
    assert 0.0 <= summary["accuracy"] <= 1.0
    bundle = load_bundle(summary["model"])
    assert bundle.config["model"]["model_type"] == "meanpool"  # the bundle records which
    assert type(bundle.model) is MeanPoolClassifier
    (row,) = predict_texts(bundle, ["很好吃"])
    assert row["label"] in bundle.labels
    rnn = train_pipeline(**args)  # the same run with the built-in type: another model
    assert rnn["artifacts"]["model"] != summary["artifacts"]["model"]
    assert type(load_bundle(rnn["model"]).model) is RNNClassifier
