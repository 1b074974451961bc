"""Tests for tasks/segment.py: specs, normalisation, engines, sharded multi-process segmentation."""

from __future__ import annotations

import itertools
import shutil
import sys
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zhflow.tasks import segment as seg
from zhflow.tasks.errors import InputError
from zhflow.tasks.segment import (
    TokenizerSpec,
    default_workers,
    load_stopwords,
    make_tokenizer,
    normalize_text,
    segment_frame,
    segment_texts,
)

SENTENCE = "我们公司正在开发云计算平台"
REVIEWS = [
    "这本书写得很好，物流也很快！",
    "手机屏幕太小了，电池不耐用。",
    "酒店位置不错，服务态度一般般。",
    "外卖送到的时候已经凉了，差评",
    "质量很好 性价比高  会回购的",
    "",
    "ＡＢＣ全角字母和１２３数字",
    "Wi-Fi 信号很差 t.cn/abc",
    "哈哈哈哈哈哈哈哈",
    "😀 表情符号\u200b零宽\u202e反向\u0000控制",
]


@pytest.fixture
def user_dict(tmp_path: Path) -> Path:
    path = tmp_path / "user.dict"
    path.write_text("云计算平台\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- normalisation


def test_normalize_fullwidth_and_case():
    assert normalize_text("ＡＢＣ１２３，") == "abc123,"
    assert normalize_text("Hello ＷＯＲＬＤ！") == "hello world!"


def test_normalize_collapses_whitespace_and_keeps_chinese_punctuation():
    assert normalize_text("  我\t\t爱\u3000\u3000北京\n\n ") == "我 爱 北京"
    assert normalize_text("你好。「引号」、《书名》…") == "你好。「引号」、《书名》…"
    # CJK compatibility ideographs / radicals are not folded (no full NFKC).
    assert normalize_text("\uf900⼀") == "\uf900⼀"


# --------------------------------------------------------------------------- tokenizers


def test_user_dict_changes_segmentation(user_dict: Path):
    plain = make_tokenizer(TokenizerSpec())(SENTENCE)
    assert "云计算平台" not in plain
    custom = make_tokenizer(TokenizerSpec(user_dict=str(user_dict)))(SENTENCE)
    assert "云计算平台" in custom
    # The global jieba tokenizer is untouched by the private one.
    import jieba

    assert "云计算平台" not in jieba.dt.FREQ


def test_stopwords_removed(tmp_path: Path):
    stop = tmp_path / "stop.txt"
    stop.write_text("\ufeff的\n了\n\n  很 \nＯＫ\n", encoding="utf-8")
    assert load_stopwords(stop) == frozenset({"的", "了", "很", "ＯＫ"})
    tok = make_tokenizer(TokenizerSpec(stopwords=str(stop)))
    tokens = tok("我的书很好了 ok")
    assert not {"的", "了", "很"} & set(tokens)
    assert "ok" not in tokens  # stopwords are normalised like the text
    assert "书" in tokens


def test_char_mode():
    tok = make_tokenizer(TokenizerSpec(engine="char"))
    assert tok("我 爱ＡＢ！") == ["我", "爱", "a", "b", "!"]
    raw = make_tokenizer(TokenizerSpec(engine="char", normalize=False, drop_whitespace=False))
    assert raw("我 爱") == ["我", " ", "爱"]


def test_search_mode_yields_more_tokens():
    precise = make_tokenizer(TokenizerSpec())("中华人民共和国")
    search = make_tokenizer(TokenizerSpec(mode="search"))("中华人民共和国")
    assert precise == ["中华人民共和国"]
    assert len(search) > len(precise)


def test_whitespace_tokens_dropped():
    tokens = make_tokenizer(TokenizerSpec(normalize=False))("质量 很好\t\t会回购")
    assert all(t.strip() for t in tokens)
    kept = make_tokenizer(TokenizerSpec(normalize=False, drop_whitespace=False))("很好 会")
    assert " " in kept


def test_rjieba_engine():
    pytest.importorskip("rjieba")
    tokens = make_tokenizer(TokenizerSpec(engine="rjieba"))("我来到北京清华大学")
    assert tokens == ["我", "来到", "北京", "清华大学"]


@pytest.mark.slow
def test_thulac_engine():
    pytest.importorskip("thulac")
    tokens = make_tokenizer(TokenizerSpec(engine="thulac"))("我爱北京天安门")
    assert "".join(tokens) == "我爱北京天安门"
    assert len(tokens) >= 3


@pytest.mark.parametrize("engine,extra", [("thulac", "zhflow[thulac]"), ("rjieba", "zhflow[fast]")])
def test_missing_optional_engine(monkeypatch, engine, extra):
    monkeypatch.setitem(sys.modules, engine, None)  # makes `import engine` fail
    monkeypatch.setattr(seg, "_ENGINES", {})
    with pytest.raises(InputError, match=extra.replace("[", r"\[")):
        make_tokenizer(TokenizerSpec(engine=engine))


# --------------------------------------------------------------------------- spec & identity


def test_identity_depends_on_user_dict_content_not_path(tmp_path: Path, user_dict: Path):
    base = TokenizerSpec(user_dict=str(user_dict)).identity()
    moved = tmp_path / "elsewhere" / "moved.dict"
    moved.parent.mkdir()
    shutil.copy(user_dict, moved)
    assert TokenizerSpec(user_dict=str(moved)).identity() == base
    assert str(tmp_path) not in repr(base)

    user_dict.write_text("云计算平台\n智算云\n", encoding="utf-8")
    assert TokenizerSpec(user_dict=str(user_dict)).identity() != base
    assert TokenizerSpec().identity()["user_dict_sha256"] is None


def test_identity_tracks_flags(tmp_path: Path):
    base = TokenizerSpec()
    assert base.identity() != TokenizerSpec(hmm=False).identity()
    assert base.identity() != TokenizerSpec(mode="search").identity()
    assert base.identity() != TokenizerSpec(normalize=False).identity()
    assert base.identity() != TokenizerSpec(engine="char").identity()
    stop = tmp_path / "stop.txt"
    stop.write_text("的\n", encoding="utf-8")
    assert base.identity() != TokenizerSpec(stopwords=str(stop)).identity()
    ident = base.identity()
    assert ident["engine"] == "jieba" and ident["engine_version"]
    assert base.digest() == TokenizerSpec().digest()
    # Options the char engine ignores do not split its caches.
    assert (
        TokenizerSpec(engine="char").identity()
        == TokenizerSpec(engine="char", hmm=False).identity()
    )


def test_dict_round_trip(user_dict: Path):
    spec = TokenizerSpec(mode="search", hmm=False, user_dict=str(user_dict), normalize=False)
    data = spec.to_dict()
    assert data["user_dict"] == str(user_dict)
    assert TokenizerSpec.from_dict(data) == spec


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"engine": "spacy"}, "spacy"),
        ({"mode": "full"}, "full"),
        ({"engine": "char", "mode": "search"}, "search"),
        ({"user_dict": "/no/such/user.dict"}, "/no/such/user.dict"),
        ({"stopwords": "/no/such/stop.txt"}, "/no/such/stop.txt"),
        ({"hmm": "yes"}, "hmm"),
        ({"normalize": 1}, "normalize"),
    ],
)
def test_bad_spec_values(kwargs, match):
    with pytest.raises(InputError, match=match):
        TokenizerSpec(**kwargs)


def test_bad_spec_others(user_dict: Path, tmp_path: Path):
    with pytest.raises(InputError, match="jieba"):
        TokenizerSpec(engine="char", user_dict=str(user_dict))
    with pytest.raises(InputError, match="not a file"):
        TokenizerSpec(stopwords=str(tmp_path))
    with pytest.raises(InputError, match="colour"):
        TokenizerSpec.from_dict({"engine": "jieba", "colour": "red"})
    with pytest.raises(InputError, match="workers"):
        segment_texts(["你好"], TokenizerSpec(), workers=0)
    with pytest.raises(InputError, match="#1"):
        segment_texts(["你好", 3.5], TokenizerSpec())  # type: ignore[list-item]
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="UTF-8"):
        load_stopwords(bad)


# --------------------------------------------------------------------------- segment_texts


def test_none_and_empty_give_empty_lists():
    assert segment_texts([], TokenizerSpec()) == []
    assert segment_texts([None, "", "  ", "你好"], TokenizerSpec()) == [[], [], [], ["你好"]]


def test_parallel_identical_to_one_process(user_dict: Path, tmp_path: Path):
    stop = tmp_path / "stop.txt"
    stop.write_text("的\n了\n", encoding="utf-8")
    spec = TokenizerSpec(user_dict=str(user_dict), stopwords=str(stop))
    texts: list[str | None] = [
        f"{r}{SENTENCE}第{i}条" if i % 7 else r for i, r in enumerate(REVIEWS * 30)
    ]
    texts[5] = None
    one = segment_texts(texts, spec, workers=1)
    calls: list[tuple[int, int]] = []
    two = segment_texts(
        texts, spec, workers=2, progress=lambda d, n: calls.append((d, n)), min_parallel=0
    )
    assert two == one
    assert any("云计算平台" in doc for doc in two)
    assert len(calls) > 1  # really sharded
    assert calls[-1] == (len(texts), len(texts))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_progress_one_process():
    calls: list[tuple[int, int]] = []
    out = segment_texts(REVIEWS * 10, TokenizerSpec(), progress=lambda d, n: calls.append((d, n)))
    assert len(out) == 100 and calls[-1] == (100, 100)


def test_pack_round_trip_and_fallback():
    docs = [["a", "b"], [], ["中文"], ["x"]]
    packed = seg._pack(docs)
    assert isinstance(packed, str)
    assert seg._unpack(packed, len(docs)) == docs
    cases: list[list[list[str]]] = [[["a\x1fb"], []], [["a", "\x1e"]], [[""], ["x"]], [[], []]]
    for awkward in cases:
        assert seg._unpack(seg._pack(awkward), len(awkward)) == awkward
    assert seg._unpack(seg._pack([]), 0) == []


def test_shard_bounds_cover_input_in_order():
    texts = ["短"] * 50 + ["很长的文本" * 100] * 5 + ["x"] * 45
    for taper in (False, True):
        bounds = seg._shard_bounds(texts, 8, taper=taper)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(texts)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(bounds))
        assert 1 < len(bounds) <= 8
    even = ["字" * 10] * 1000
    sizes = [b - a for a, b in seg._shard_bounds(even, 10, taper=True)]
    assert sizes[0] > 3 * sizes[-1] and sum(sizes) == 1000
    assert seg._shard_bounds(["x"], 4) == [(0, 1)]


def test_default_workers():
    assert default_workers() >= 1


hostile_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from(
            list("😀👍🏽\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2066\ufeff\x00\x1f\x1e\t\r\n")
            + list("\u3000ＡＢ中文　")
        ),
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.one_of(st.none(), hostile_text), max_size=8))
def test_hostile_text_never_crashes(texts):
    for spec in (
        TokenizerSpec(),
        TokenizerSpec(mode="search", hmm=False),
        TokenizerSpec(engine="char"),
    ):
        out = segment_texts(texts, spec)
        assert len(out) == len(texts)
        assert all(
            isinstance(doc, list) and all(isinstance(t, str) and t for t in doc) for doc in out
        )
    # With normalisation and filtering off, jieba and char lose no character.
    for engine in ("jieba", "char"):
        raw = TokenizerSpec(engine=engine, normalize=False, drop_whitespace=False)
        out = segment_texts(texts, raw)
        assert ["".join(d) for d in out] == [t or "" for t in texts]


# --------------------------------------------------------------------------- frames


def test_segment_frame():
    df = pl.DataFrame(
        {
            "id": [3, 1, 2],
            "text": ["中华人民共和国", None, "ＡＢ 好"],
            "label": ["a", "b", "a"],
            "split": ["train", "valid", "test"],
        }
    )
    out = segment_frame(df, TokenizerSpec(), workers=1)
    assert out.columns == ["id", "tokens", "label", "split"]
    assert out.schema["tokens"] == pl.List(pl.Utf8)
    assert out["id"].to_list() == [3, 1, 2]
    assert out["tokens"].to_list() == [["中华人民共和国"], [], ["ab", "好"]]
    with pytest.raises(InputError, match="split"):
        segment_frame(df.drop("split"), TokenizerSpec())


def test_parallel_bad_user_dict_is_a_clear_error(tmp_path: Path):
    bad = tmp_path / "bad.dict"
    bad.write_bytes("云计算".encode("gbk"))
    spec = TokenizerSpec(user_dict=str(bad))
    with pytest.raises(InputError, match=r"bad\.dict"):
        segment_texts(["你好"] * 10, spec, workers=2, min_parallel=0)
    with pytest.raises(InputError, match=r"bad\.dict"):
        segment_texts(["你好"], spec)
