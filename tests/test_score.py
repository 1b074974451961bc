from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tasks.bundle import load_bundle
from tasks.errors import InputError
from tasks.score import PROB_PREFIX, score_file
from tests.helpers import train_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(train_tiny_bundle(tmp_path_factory.mktemp("b") / "bundle"))


def test_scoring_1000_rows_with_empties(bundle, tmp_path) -> None:
    texts = [None if i % 50 == 0 else ("   " if i % 77 == 0 else f"味道不错{i}") for i in range(1000)]
    source = tmp_path / "in.csv"
    pl.DataFrame({"review": texts}).write_csv(source)
    out = tmp_path / "preds" / "out.parquet"
    summary = score_file(bundle, source, out, text_col="review", chunk_rows=300, batch_size=64)
    preds = pl.read_parquet(out)
    assert summary["rows"] == preds.height == 1000
    assert preds["id"].to_list() == [str(i) for i in range(1000)]
    prob_cols = [f"{PROB_PREFIX}{label}" for label in bundle.labels]
    assert preds.columns[:3] == ["id", "label", "confidence"] and set(prob_cols) <= set(preds.columns)
    empty = preds.filter(pl.col("reason").is_not_null())
    assert empty.height == sum(1 for t in texts if not (t and t.strip()))
    assert empty["label"].null_count() == empty.height
    scored = preds.filter(pl.col("reason").is_null())
    sums = scored.select(pl.sum_horizontal(prob_cols)).to_series().to_numpy()
    assert np.allclose(sums, 1.0, atol=1e-5)
    assert scored["label"].is_in(bundle.labels).all()
    assert summary["empty_texts"] == empty.height
    assert [p.name for p in out.parent.iterdir()] == ["out.parquet"]


def test_id_column_is_kept(bundle, tmp_path) -> None:
    source = tmp_path / "in.jsonl"
    pl.DataFrame({"doc": ["a", "b"], "text": ["很好", "很差"]}).write_ndjson(source)
    score_file(bundle, source, tmp_path / "o.parquet", id_col="doc")
    assert pl.read_parquet(tmp_path / "o.parquet")["id"].to_list() == ["a", "b"]


def test_output_that_is_a_directory_is_refused(bundle, tmp_path) -> None:
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": ["很好"]}).write_csv(source)
    with pytest.raises(InputError, match="is a directory"):
        score_file(bundle, source, tmp_path)
