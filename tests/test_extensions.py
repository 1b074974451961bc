"""Extension points: an engine registered from a test module alone runs through the pipeline."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

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
