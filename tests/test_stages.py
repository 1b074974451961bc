"""Each stage on its own, through ``task.fn`` (no Prefect engine or server)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from safetensors.numpy import load_file

from zhflow.tasks import plots, stages
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.segment import TokenizerSpec
from zhflow.tasks.storage import ArtifactRef


@pytest.fixture
def corpus_ref(tmp_path, tiny_csv) -> dict:
    return stages.ingest_corpus.fn(
        workdir=str(tmp_path / "w"), source=[str(tiny_csv)],
        source_digest=stages.hash_source([str(tiny_csv)]), fmt=None, text_col=None,
        label_col=None, id_col=None, encoding="utf-8", seed=1, valid_frac=0.2, test_frac=0.2,
        dedupe=False,
    )  # fmt: skip


def _tokens(tmp_path, corpus_ref, engine: str = "char") -> ArtifactRef:
    spec = TokenizerSpec(engine=engine)
    return stages.segment_corpus.fn(
        workdir=str(tmp_path / "w"), corpus=corpus_ref, tokenizer=spec.to_dict(),
        identity=spec.identity(), workers=1,
    )  # fmt: skip


def test_ingest_writes_corpus_and_profile(corpus_ref) -> None:
    frame = pl.read_parquet(corpus_ref.file("corpus.parquet"))
    assert frame.columns == ["id", "text", "label", "split"]
    profile = stages.read_json(corpus_ref, "profile.json")
    assert profile["rows"] == 96 and profile["labels"] == {"neg": 48, "pos": 48}
    assert sum(profile["splits"].values()) == 96


def test_ingest_is_reused_not_rebuilt(tmp_path, tiny_csv, corpus_ref) -> None:
    marker = corpus_ref.file("profile.json").stat().st_mtime_ns
    again = stages.ingest_corpus.fn(
        workdir=str(tmp_path / "w"), source=[str(tiny_csv)],
        source_digest=stages.hash_source([str(tiny_csv)]), fmt=None, text_col=None,
        label_col=None, id_col=None, encoding="utf-8", seed=1, valid_frac=0.2, test_frac=0.2,
        dedupe=False,
    )  # fmt: skip
    assert again == corpus_ref
    assert again.file("profile.json").stat().st_mtime_ns == marker


def test_segment_then_tables_then_encode(tmp_path, corpus_ref) -> None:
    tokens = _tokens(tmp_path, corpus_ref)
    frame = pl.read_parquet(tokens.file("tokens.parquet"))
    assert frame.columns == ["id", "tokens", "label", "split"]
    assert frame["tokens"][0].to_list()[:3] == list(frame["tokens"][0].to_list()[:3])
    workdir = str(tmp_path / "w")

    ngrams = stages.build_ngram_table.fn(workdir=workdir, tokens=tokens, n_max=2)
    table = pl.read_parquet(ngrams.file("ngrams.parquet"))
    assert set(table["n"].unique().to_list()) == {1, 2}

    vocab = stages.build_vocab_table.fn(workdir=workdir, tokens=tokens, min_freq=1, max_vocab=500)
    vocab_df = pl.read_parquet(vocab.file("vocab.parquet"))
    train_chars = {
        c for toks in stages.scan_train_tokens(tokens).collect()["tokens"].to_list() for c in toks
    }
    assert set(vocab_df["token"].to_list()[2:]) == train_chars  # fitted on train only

    encoded = stages.encode_corpus.fn(workdir=workdir, tokens=tokens, vocab=vocab, max_len=8)
    train = load_file(str(encoded.file("train.safetensors")))
    assert train["ids"].shape[1] == 8 and train["lengths"].max() <= 8
    meta = json.loads(encoded.file("meta.json").read_text())
    assert meta["vocab_size"] == vocab_df.height
    assert stages.read_json(encoded, "labels.json") == {"labels": ["neg", "pos"]}


def test_train_evaluate_bundle(tmp_path, corpus_ref) -> None:
    workdir = str(tmp_path / "w")
    tokens = _tokens(tmp_path, corpus_ref)
    vocab = stages.build_vocab_table.fn(workdir=workdir, tokens=tokens, min_freq=1, max_vocab=500)
    encoded = stages.encode_corpus.fn(workdir=workdir, tokens=tokens, vocab=vocab, max_len=16)
    model_config = {"cell": "gru", "embedding_dim": 16, "hidden_size": 16}
    model = stages.train_classifier.fn(
        workdir=workdir, encoded=encoded, model_config=model_config,
        train_config={"epochs": 2, "batch_size": 16, "seed": 3},
    )  # fmt: skip
    assert not (tmp_path / "w" / "checkpoints").exists() or not any(
        (tmp_path / "w" / "checkpoints").iterdir()
    )
    metrics = stages.evaluate_classifier.fn(
        workdir=workdir, model=model, encoded=encoded, font=plots.plot_font()
    )
    scores = stages.read_json(metrics, "metrics.json")
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["labels"] == ["neg", "pos"]
    bundle = stages.package_bundle.fn(
        workdir=workdir, model=model, vocab=vocab, encoded=encoded, metrics=metrics,
        tokenizer=TokenizerSpec(engine="char").to_dict(),
        training={"corpus_digest": "c0ffee", "rows": 96},
    )  # fmt: skip
    loaded = load_bundle(bundle.path)
    assert loaded.labels == ["neg", "pos"] and loaded.max_len == 16
    training = loaded.config["training"]  # for `zhflow info`
    assert training["corpus_digest"] == "c0ffee" and training["rows"] == 96
    assert training["trained_at"].endswith("Z") and loaded.config["zhflow_version"]
    assert json.loads((loaded.path / "metrics.json").read_text())["n"] == scores["n"]


def test_metrics_stage_redraws_its_plots_when_the_font_changes(
    tmp_path, corpus_ref, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = str(tmp_path / "w")
    tokens = _tokens(tmp_path, corpus_ref)
    vocab = stages.build_vocab_table.fn(workdir=workdir, tokens=tokens, min_freq=1, max_vocab=500)
    encoded = stages.encode_corpus.fn(workdir=workdir, tokens=tokens, vocab=vocab, max_len=16)
    model = stages.train_classifier.fn(
        workdir=workdir, encoded=encoded, model_config={"cell": "gru", "embedding_dim": 8,
        "hidden_size": 8}, train_config={"epochs": 1, "batch_size": 16, "seed": 3},
    )  # fmt: skip
    args = dict(workdir=workdir, model=model, encoded=encoded)
    first = stages.evaluate_classifier.fn(**args, font=plots.plot_font())
    assert stages.evaluate_classifier.fn(**args, font=plots.plot_font()) == first  # reused
    png = first.file(plots.CONFUSION_PNG)
    drawn_at = png.stat().st_mtime_ns
    newer = {**plots.plot_font(), "version": "9.9.9", "sha256": "0" * 64}
    with pytest.raises(ValueError, match="not the plot font"):  # the key cannot name another
        stages.evaluate_classifier.fn(**args, font=newer)
    monkeypatch.setattr(plots, "plot_font", lambda: newer)  # as if the package were upgraded
    second = stages.evaluate_classifier.fn(**args, font=newer)
    assert second.key != first.key
    assert second.file(plots.CONFUSION_PNG).is_file()
    assert png.stat().st_mtime_ns == drawn_at  # the old artifact is untouched


def test_ingest_can_drop_duplicate_texts(tmp_path) -> None:
    source = tmp_path / "dups.csv"
    rows = [("很好吃", "pos"), ("很好吃", "pos"), ("太难吃", "neg"), ("太难吃", "pos")] + [
        (f"一般{i}", "pos" if i % 2 else "neg") for i in range(10)
    ]
    pl.DataFrame({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}).write_csv(source)
    ref = stages.ingest_corpus.fn(
        workdir=str(tmp_path / "w"), source=[str(source)],
        source_digest=stages.hash_source([str(source)]), fmt=None, text_col=None,
        label_col=None, id_col=None, encoding="utf-8", seed=1, valid_frac=0.1, test_frac=0.1,
        dedupe=True,
    )  # fmt: skip
    profile = stages.read_json(ref, "profile.json")
    # 太难吃 is a pos/neg tie: both rows go before dedup; one 很好吃 repeat is dropped.
    assert profile["conflicting_label_texts"] == 1 and profile["conflicting_rows_dropped"] == 2
    assert profile["duplicates_dropped"] == 1 and profile["conflicting_labels"] == 0
    assert profile["cross_split_duplicate_texts"] == 0
    assert pl.read_parquet(ref.file("corpus.parquet")).height == 11
