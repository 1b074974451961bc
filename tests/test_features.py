"""The wide branch's input: n-gram feature selection and TF-IDF bags, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from zhflow.tasks.features import NgramFeaturizer, NgramSpec, char_ngram_keys, word_ngram_keys
from zhflow.tasks.tables import featurizer_from_table, select_ngram_features

THREE = [["我", "喜欢", "苹果"], ["我", "喜欢", "香蕉"], ["苹果", "很", "甜"]]
IDF2 = math.log(4 / 3) + 1  # N = 3 documents, df = 2: ln((1 + 3) / (1 + 2)) + 1


def test_ngram_keys() -> None:
    assert list(word_ngram_keys(["我", "喜欢"], 2)) == ["w:我", "w:喜欢", "w:我 喜欢"]
    assert list(char_ngram_keys(["我", "喜欢"], 2)) == ["c:我", "c:喜", "c:欢", "c:我喜", "c:喜欢"]
    assert list(char_ngram_keys([], 3)) == []


def test_features_of_three_sentences_by_hand() -> None:
    spec = NgramSpec(word_n=2, char_n=3, min_df=2)
    table = select_ngram_features(pl.DataFrame({"tokens": THREE}), spec)
    # df >= 2: words 我, 喜欢, 我 喜欢 (docs 1, 2), 苹果 (docs 1, 3); characters 我 喜 欢 我喜
    # 喜欢 我喜欢 (1, 2) and 苹 果 苹果 (1, 3). Everything else occurs in one document.
    words = {"w:我", "w:喜欢", "w:我 喜欢", "w:苹果"}
    chars = {"c:我", "c:喜", "c:欢", "c:我喜", "c:喜欢", "c:我喜欢", "c:苹", "c:果", "c:苹果"}
    assert set(table["key"].to_list()) == words | chars
    assert table["id"].to_list() == list(range(13))
    assert table["key"].to_list() == sorted(table["key"].to_list())  # all df 2: ties by key
    assert table["doc_freq"].to_list() == [2] * 13
    assert np.allclose(table["idf"].to_numpy(), IDF2)

    ids, counts, weights = featurizer_from_table(table, spec)(THREE)
    index = dict(zip(table["key"].to_list(), table["id"].to_list(), strict=True))
    # Document 1 holds all 4 word features and all 9 character features, each once: equal
    # weights, each kind's block L2-normalised on its own.
    assert counts.tolist() == [13, 9, 4]
    first = dict(zip(ids[:13].tolist(), weights[:13].tolist(), strict=True))
    assert {k: first[index[k]] for k in words} == pytest.approx(dict.fromkeys(words, 0.5))
    assert {k: first[index[k]] for k in chars} == pytest.approx(dict.fromkeys(chars, 1 / 3))
    # Document 3 (苹果 很 甜): only 苹果 as a word, and 苹 果 苹果 as characters.
    third = {table["key"][int(i)]: w for i, w in zip(ids[22:], weights[22:], strict=True)}
    assert third == pytest.approx({"w:苹果": 1.0, "c:苹": 3**-0.5, "c:果": 3**-0.5,
                                   "c:苹果": 3**-0.5})  # fmt: skip


def test_the_character_view_of_three_sentences_by_hand() -> None:
    """Dropping each bag's word n-grams (the wide branch's second view) leaves exactly the
    bags a character-only featurizer over the same table writes: same ids, same weights."""
    import torch

    from zhflow.models.wide import RaggedBags, without_word_ngrams

    spec = NgramSpec(word_n=2, char_n=3, min_df=2)
    table = select_ngram_features(pl.DataFrame({"tokens": THREE}), spec)
    featurizer = featurizer_from_table(table, spec)
    ids, counts, weights = featurizer(THREE)
    # Document 1: 4 word features of 13; document 2 (我 喜欢 香蕉): 我, 喜欢, 我 喜欢;
    # document 3: 苹果.
    words = featurizer.word_counts(ids, counts)
    assert words.tolist() == [4, 3, 1] and words.dtype == np.int64
    chars = NgramFeaturizer(featurizer.index, featurizer.idf, word_n=0, char_n=3)(THREE)
    view = without_word_ngrams(RaggedBags(*map(torch.from_numpy, (ids, counts, weights))),
                               torch.from_numpy(words))  # fmt: skip
    assert view.counts.tolist() == chars[1].tolist() == [9, 6, 3]
    assert view.ids.tolist() == chars[0].tolist()
    assert torch.equal(view.weights, torch.from_numpy(chars[2]))
    assert all(table["key"][int(i)].startswith("c:") for i in view.ids)


def test_term_frequency_is_sublinear_and_unknown_ngrams_are_skipped() -> None:
    featurizer = NgramFeaturizer(
        index={"w:好": 0, "w:差": 1}, idf=np.array([1.0, 2.0], np.float32), word_n=1, char_n=0
    )
    ids, counts, weights = featurizer([["好", "好", "好", "差", "未知"], ["未知"]])
    raw = np.array([1 + math.log(3), 2.0])  # tf 3 → 1 + ln 3; tf 1 x idf 2
    assert ids.tolist() == [0, 1] and counts.tolist() == [2, 0]
    assert weights == pytest.approx(raw / np.linalg.norm(raw))


def test_min_df_and_max_features_choose_by_document_frequency() -> None:
    docs = [["甲", "乙"], ["甲", "乙"], ["甲", "丙"], ["丁"]]
    table = select_ngram_features(
        pl.DataFrame({"tokens": docs}), NgramSpec(word_n=1, char_n=0, min_df=1, max_features=2)
    )
    assert table["key"].to_list() == ["w:甲", "w:乙"]  # df 3, then df 2; 丙 and 丁 (df 1) cut
    assert table["idf"][0] < table["idf"][1]


@pytest.mark.parametrize(
    "bad", [{"word_n": 0, "char_n": 0}, {"word_n": 9}, {"min_df": 0}, {"max_features": -1}]
)
def test_bad_ngram_spec(bad: dict) -> None:
    with pytest.raises(ValueError, match="NgramSpec"):
        NgramSpec(**bad)
