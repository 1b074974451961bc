from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from tests.helpers import seal_bundle, train_tiny_bundle
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.encode import encode_tokens
from zhflow.tasks.errors import BundleError
from zhflow.tasks.segment import segment_texts
from zhflow.tasks.tables import vocab_to_index
from zhflow.tasks.train import predict_proba


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return train_tiny_bundle(tmp_path_factory.mktemp("b") / "bundle")


def _copy(bundle_dir, tmp_path):
    return shutil.copytree(bundle_dir, tmp_path / "copy")


def _predict(bundle, texts):
    tokens = segment_texts(texts, bundle.tokenizer)
    ids, lengths = encode_tokens(tokens, vocab_to_index(bundle.vocab), bundle.max_len)
    return predict_proba(bundle.model, ids, lengths)


def test_saved_and_loaded_bundle_predicts_identically(bundle_dir, tmp_path) -> None:
    texts = ["味道不错，下次还点", "太难吃了"]
    first = _predict(load_bundle(bundle_dir), texts)
    moved = _copy(bundle_dir, tmp_path)  # a bundle is relocatable
    assert np.array_equal(first, _predict(load_bundle(moved), texts))
    assert np.allclose(first.sum(axis=1), 1.0, atol=1e-5)


def test_altered_vocab_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    vocab = pl.read_parquet(copy / "vocab.parquet")
    vocab.with_columns(pl.col("token").reverse()).write_parquet(copy / "vocab.parquet")
    with pytest.raises(BundleError, match=r"vocab.parquet altered"):
        load_bundle(copy)


def test_truncated_weights_are_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"weights\.safetensors"):
        load_bundle(copy)
    seal_bundle(copy)  # even with a matching manifest, the file itself is unreadable
    with pytest.raises(BundleError, match="not a valid safetensors"):
        load_bundle(copy)


def test_tokenizer_mismatch_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    config = json.loads((copy / "config.json").read_text())
    config["tokenizer"]["identity"]["engine_version"] = "0.0.1"
    config["tokenizer"]["identity"]["normalize"] = False
    (copy / "config.json").write_text(json.dumps(config))
    seal_bundle(copy)
    with pytest.raises(BundleError, match="tokenizer differs"):
        load_bundle(copy)


def test_vocab_size_mismatch_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    pl.read_parquet(copy / "vocab.parquet").head(5).write_parquet(copy / "vocab.parquet")
    seal_bundle(copy)
    with pytest.raises(BundleError, match=r"the model expects"):
        load_bundle(copy)


def test_vocab_without_its_token_column_is_refused(bundle_dir, tmp_path) -> None:
    copy = _copy(bundle_dir, tmp_path)
    pl.read_parquet(copy / "vocab.parquet").drop("token").write_parquet(copy / "vocab.parquet")
    seal_bundle(copy)  # re-sealed by hand: the manifest cannot tell
    with pytest.raises(BundleError, match=r"vocab has columns .* needs 'id' and 'token'"):
        load_bundle(copy)


def test_missing_bundle_and_files(tmp_path, bundle_dir) -> None:
    with pytest.raises(BundleError, match="no such directory"):
        load_bundle(tmp_path / "nope")
    copy = _copy(bundle_dir, tmp_path)
    (copy / "labels.json").unlink()
    with pytest.raises(BundleError, match=r"missing labels\.json"):
        load_bundle(copy)


@pytest.fixture(scope="module")
def wide_bundle_dir(tmp_path_factory):
    return train_tiny_bundle(tmp_path_factory.mktemp("w") / "bundle", wide=True)


def test_wide_bundle_round_trips_and_scores_the_same_rows(wide_bundle_dir, tmp_path) -> None:
    from zhflow.tasks.score import score_file

    bundle = load_bundle(wide_bundle_dir)
    assert bundle.featurizer is not None and bundle.model.wide is not None
    texts = ["味道不错，下次还点", "太难吃了", "物流太慢"]
    tokens = segment_texts(texts, bundle.tokenizer)
    ids, lengths = encode_tokens(tokens, vocab_to_index(bundle.vocab), bundle.max_len)
    from zhflow.tasks.score import ragged_bags

    bags = ragged_bags(bundle.featurizer(tokens))
    before = predict_proba(bundle.model, ids, lengths, bags=bags)
    moved = load_bundle(_copy(wide_bundle_dir, tmp_path))
    assert np.array_equal(before, predict_proba(moved.model, ids, lengths, bags=bags))
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": texts}).write_csv(source)
    score_file(moved, source, tmp_path / "out.parquet", workers=1)
    scored = pl.read_parquet(tmp_path / "out.parquet")
    probs = scored.select([f"prob_{label}" for label in bundle.labels]).to_numpy()
    assert np.allclose(probs, before, atol=1e-6)


def test_wide_bundle_without_its_features_is_refused(wide_bundle_dir, tmp_path) -> None:
    copy = _copy(wide_bundle_dir, tmp_path)
    (copy / "features.parquet").unlink()
    seal_bundle(copy)
    with pytest.raises(BundleError, match=r"wide n-gram branch but no features\.parquet"):
        load_bundle(copy)


def test_bundle_from_before_calibration_loads_at_temperature_one(bundle_dir, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    copy = _copy(bundle_dir, tmp_path)
    state = load_file(str(copy / "weights.safetensors"))
    state.pop("temperature")
    save_file(state, str(copy / "weights.safetensors"))
    seal_bundle(copy)
    assert float(load_bundle(copy).model.temperature) == 1.0  # type: ignore[arg-type]  # a buffer
