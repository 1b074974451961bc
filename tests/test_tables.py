from __future__ import annotations

import polars as pl
import pytest

from zhflow.tasks.tables import build_vocab, count_ngrams, summarize_vocab, vocab_to_index

THREE = pl.DataFrame({"tokens": [["我", "爱", "北京"], ["我", "爱", "你"], ["北京", "欢迎", "你"]]})


def _counts(table: pl.DataFrame, n: int) -> dict[str, tuple[int, int]]:
    part = table.filter(pl.col("n") == n)
    return {g: (c, d) for g, c, d in part.select("ngram", "count", "doc_freq").iter_rows()}


def test_ngram_counts_by_hand() -> None:
    table = count_ngrams(THREE, 2)
    assert _counts(table, 1) == {
        "我": (2, 2), "爱": (2, 2), "北京": (2, 2), "你": (2, 2), "欢迎": (1, 1),
    }  # fmt: skip
    assert _counts(table, 2) == {
        "我 爱": (2, 2), "爱 北京": (1, 1), "爱 你": (1, 1), "北京 欢迎": (1, 1), "欢迎 你": (1, 1),
    }  # fmt: skip
    assert table.columns == ["n", "ngram", "count", "doc_freq"]


def test_ngrams_do_not_cross_documents_and_count_repeats() -> None:
    df = pl.DataFrame({"tokens": [["好", "好", "好"], ["吃"]]})
    table = count_ngrams(df, 3)
    assert _counts(table, 1) == {"好": (3, 1), "吃": (1, 1)}
    assert _counts(table, 2) == {"好 好": (2, 1)}  # no "好 吃" across the document boundary
    assert _counts(table, 3) == {"好 好 好": (1, 1)}


def test_vocab_specials_and_order() -> None:
    vocab = build_vocab(THREE, min_freq=1, max_vocab=100)
    assert vocab["token"].to_list()[:2] == ["<pad>", "<unk>"]
    assert vocab["id"].to_list() == list(range(vocab.height))
    # count desc, then token asc
    assert vocab["token"].to_list()[2:] == ["你", "北京", "我", "爱", "欢迎"]


def test_vocab_ids_stable_when_rows_shuffled() -> None:
    shuffled = THREE.sample(fraction=1.0, shuffle=True, seed=7)
    assert build_vocab(THREE, 1, 100).equals(build_vocab(shuffled, 1, 100))


def test_min_freq_and_max_vocab() -> None:
    assert "欢迎" not in build_vocab(THREE, min_freq=2, max_vocab=100)["token"].to_list()
    capped = build_vocab(THREE, min_freq=1, max_vocab=4)
    assert capped.height == 4
    assert capped["token"].to_list() == ["<pad>", "<unk>", "你", "北京"]


def test_corpus_token_equal_to_a_special_is_not_duplicated() -> None:
    vocab = build_vocab(pl.DataFrame({"tokens": [["<unk>", "好"], ["好"]]}), 1, 10)
    assert vocab["token"].to_list() == ["<pad>", "<unk>", "好"]
    assert vocab_to_index(vocab) == {"<pad>": 0, "<unk>": 1, "好": 2}


def test_summary_coverage() -> None:
    vocab = build_vocab(THREE, min_freq=2, max_vocab=100)
    summary = summarize_vocab(vocab, THREE)
    assert summary["token_occurrences"] == 9
    assert summary["coverage"] == pytest.approx(8 / 9, abs=1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        count_ngrams(THREE, 0)
    with pytest.raises(ValueError):
        build_vocab(THREE, min_freq=0)


def _python_ngram_counts(docs: list[list[str]], n: int) -> dict[str, tuple[int, int]]:
    from collections import Counter

    count: Counter[str] = Counter()
    doc_freq: Counter[str] = Counter()
    for doc in docs:
        grams = [" ".join(doc[i : i + n]) for i in range(len(doc) - n + 1)]
        count.update(grams)
        doc_freq.update(set(grams))
    return {g: (count[g], doc_freq[g]) for g in count}


def test_streamed_tables_from_a_parquet_scan_match_plain_python(tmp_path) -> None:
    import random

    rng = random.Random(5)
    words = ["我", "爱", "北京", "你", "好", "吃", "天安门", "很", "不错"]
    docs = [[rng.choice(words) for _ in range(rng.randint(0, 12))] for _ in range(400)]
    path = tmp_path / "tokens.parquet"
    pl.DataFrame({"tokens": pl.Series(docs, dtype=pl.List(pl.Utf8))}).write_parquet(path)
    lazy = pl.scan_parquet(path)
    table = count_ngrams(lazy, 3)
    for n in (1, 2, 3):
        assert _counts(table, n) == _python_ngram_counts(docs, n)
    assert table.equals(count_ngrams(pl.read_parquet(path), 3))
    vocab = build_vocab(lazy, min_freq=2, max_vocab=6)
    unigrams = _python_ngram_counts(docs, 1)
    expected = sorted(unigrams, key=lambda w: (-unigrams[w][0], w))[:4]
    assert vocab["token"].to_list() == ["<pad>", "<unk>", *expected]
    assert summarize_vocab(vocab, lazy)["token_occurrences"] == sum(map(len, docs))
