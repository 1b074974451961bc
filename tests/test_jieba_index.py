"""tasks/jieba_index.py: jieba read from an on-disk index gives exactly jieba's tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import NEGATIVE, POSITIVE
from zhflow.tasks import jieba_index
from zhflow.tasks.segment import _quiet_jieba

TEXTS = [*POSITIVE, *NEGATIVE, "我来到北京清华大学", "他来到了网易杭研大厦",
         "小明硕士毕业于中国科学院计算所", "Wi-Fi 信号很差，t.cn 打不开，哈哈哈哈哈",
         "乒乓球拍卖完了", "南京市长江大桥"]  # fmt: skip


@pytest.fixture(scope="module")
def full() -> object:
    tokenizer = _quiet_jieba().Tokenizer()
    tokenizer.initialize()
    return tokenizer


@pytest.fixture
def indexed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full: object) -> object:
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path / "zh"))
    jieba = _quiet_jieba()
    first = jieba_index.indexed_tokenizer(jieba)  # builds the index, returns a full tokenizer
    assert not isinstance(first.FREQ, jieba_index.IndexedFreq)
    path = jieba_index.index_path(jieba)
    assert path.parent == tmp_path / "zh" / "cache" and path.is_file()
    assert not list(path.parent.glob(".*.tmp"))
    tokenizer = jieba_index.indexed_tokenizer(jieba)
    assert isinstance(tokenizer.FREQ, jieba_index.IndexedFreq)
    assert tokenizer.total == full.total  # type: ignore[attr-defined]
    return tokenizer


@pytest.mark.parametrize("hmm", [True, False])
def test_indexed_tokens_are_jiebas(full, indexed, hmm: bool) -> None:
    for text in TEXTS:
        assert indexed.lcut(text, HMM=hmm) == full.lcut(text, HMM=hmm), text
        assert indexed.lcut_for_search(text, HMM=hmm) == full.lcut_for_search(text, HMM=hmm)
    assert isinstance(indexed.FREQ, jieba_index.IndexedFreq)  # a small job: never loaded


def test_a_large_job_swaps_in_the_full_dictionary_keeping_added_words(full, indexed) -> None:
    indexed.add_word("杭研大厦", 50)
    indexed.FREQ._budget = 5  # what a large batch reaches
    reference = _quiet_jieba().Tokenizer()
    reference.initialize()
    reference.add_word("杭研大厦", 50)
    for text in TEXTS:
        assert indexed.lcut(text) == reference.lcut(text), text
    assert type(indexed.FREQ) is dict and indexed.FREQ["杭研大厦"] == 50
    assert len(indexed.FREQ) == len(reference.FREQ)


def test_an_unreadable_index_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path / "zh"))
    jieba = _quiet_jieba()
    path = jieba_index.index_path(jieba)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not sqlite")
    assert jieba_index.indexed_tokenizer(jieba) is None  # the caller initialises jieba itself


def test_no_writable_cache_still_gives_a_loaded_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full
) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path / "file"))  # cache dir cannot be created
    tokenizer = jieba_index.indexed_tokenizer(_quiet_jieba())
    assert tokenizer is not None and tokenizer.lcut(TEXTS[0]) == full.lcut(TEXTS[0])
