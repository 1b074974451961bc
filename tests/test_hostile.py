"""Hostile text, hostile corpora and hostile model files (issue 4).

* Property-based tests (hypothesis) push arbitrary Unicode through segmentation, encoding and
  scoring: no crash, every length within ``max_len``, one output row per input row.
* Bad corpora and bad output locations go through the real CLI (click's CliRunner against
  ``zhflow.flows.cli.main``, one shared Prefect test server): each is either handled (and counted in
  the profile) or refused with exit code 2 and exactly one ``zhflow: error:`` line, no
  traceback, nothing half-written left behind.
* Model bundles that were tampered with are refused (exit code 3) and a pickle payload posing
  as weights is never executed.

docs/RELIABILITY.md lists every case with its outcome.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import seal_bundle, train_tiny_bundle
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.corpus import read_corpus, read_texts_in_chunks
from zhflow.tasks.encode import encode_tokens
from zhflow.tasks.errors import BundleError, InputError
from zhflow.tasks.score import predict_chunk, score_file
from zhflow.tasks.segment import TokenizerSpec, segment_texts
from zhflow.tasks.tables import vocab_to_index

MB_TEXT = "我们今天去公园散步，天气很好。" * (1_000_000 // 45)  # 15 chars * 3 bytes = 45 bytes
NASTY = {
    "emoji": "😀🎉👍🏽 好评 🇨🇳",
    "control": "\x00\x01\x07\x08\x1b[31m红\x7f\x9f",
    "zero_width": "\u200b好\u200c评\u200d\ufeff\u2060",
    "rtl_marks": "\u202e好评\u202c\u200f\u200e\u061c",
    "punctuation_only": "，。！？、；：“”‘’（）《》【】…—!?.,;:()[]{}",
    "whitespace_only": " \t\n\r\x0b\x0c\u3000\u00a0\u2028\u2029\x85",
    "empty": "",
    "traditional": "這家餐廳的服務態度非常糟糕，菜也難吃。",
    "mixed_latin": "iPhone15 Pro很好用，WiFi信号strong，价格$999 👌",
    "separators": "a\x1e\x1fb\x1c\x1d",  # the segmenter's own shard separators
    "fullwidth": "ＡＢＣ１２３ｘｙｚ！",
    "combining": "e\u0301\u0301\u0301好",
    "one_mb": MB_TEXT,
}
# Arbitrary Unicode, but no lone surrogates: those cannot be stored as UTF-8 (polars, Parquet)
# and are refused when they come from a file (see the jsonl surrogate tests below).
UNICODE = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained bundle (char tokenizer, max_len 24), built with the pure functions."""
    return train_tiny_bundle(tmp_path_factory.mktemp("hostile") / "bundle", epochs=1)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path):
    return load_bundle(bundle_dir)


# ------------------------------------------------------------------------------------------
# hostile text: segmentation, encoding, scoring


@pytest.mark.parametrize("engine", ["char", "jieba"])
def test_nasty_texts_segment_encode_and_stay_within_max_len(engine: str) -> None:
    spec = TokenizerSpec(engine=engine)
    texts = list(NASTY.values())
    tokens = segment_texts(texts, spec)
    assert len(tokens) == len(texts)
    for doc in tokens:
        assert all(isinstance(t, str) and t and not t.isspace() for t in doc)
    got = dict(zip(NASTY, tokens, strict=True))
    assert got["whitespace_only"] == [] and got["empty"] == []
    assert len(got["one_mb"]) > 100_000  # the 1 MB text: segmented whole, then truncated
    index = {"<pad>": 0, "<unk>": 1, "好": 2, "评": 3}
    for max_len in (1, 7, 200):
        ids, lengths = encode_tokens(tokens, index, max_len)
        assert ids.shape == (len(texts), max_len) and ids.dtype == np.int32
        assert ((lengths >= 1) & (lengths <= max_len)).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(UNICODE, max_size=8))
def test_char_segmentation_of_any_unicode(texts: list[str]) -> None:
    tokens = segment_texts(texts, TokenizerSpec(engine="char"))
    assert len(tokens) == len(texts)
    for doc, text in zip(tokens, texts, strict=True):
        assert all(t and not t.isspace() for t in doc)
        assert len(doc) <= len(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(UNICODE, max_size=6))
def test_jieba_segmentation_of_any_unicode(texts: list[str]) -> None:
    tokens = segment_texts(texts, TokenizerSpec(engine="jieba"))
    assert len(tokens) == len(texts)
    assert all(t and not t.isspace() for doc in tokens for t in doc)


@settings(max_examples=150, deadline=None)
@given(
    docs=st.lists(st.one_of(st.none(), st.lists(UNICODE, max_size=60)), max_size=12),
    max_len=st.integers(1, 40),
)
def test_encoding_any_tokens_is_bounded(docs: list[list[str] | None], max_len: int) -> None:
    index = {"<pad>": 0, "<unk>": 1, "好": 2, "": 3, "\x00": 4}
    ids, lengths = encode_tokens(docs, index, max_len)
    assert ids.shape == (len(docs), max_len)
    assert lengths.shape == (len(docs),)
    assert ((lengths >= 1) & (lengths <= max_len)).all()
    assert ((ids >= 0) & (ids < len(index))).all()
    for row, n, doc in zip(ids, lengths, docs, strict=True):
        assert n == max(1, min(len(doc or ()), max_len))
        assert (row[n:] == 0).all()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(UNICODE, min_size=1, max_size=10))
def test_scoring_any_unicode(bundle, texts: list[str]) -> None:
    chunk = pl.DataFrame({"id": [str(i) for i in range(len(texts))], "text": texts})
    out = predict_chunk(bundle, vocab_to_index(bundle.vocab), chunk)
    assert out.height == len(texts) and out["id"].to_list() == chunk["id"].to_list()
    for text, label, reason in zip(texts, out["label"], out["reason"], strict=True):
        blank = not text.strip()
        assert (label is None) == blank and (reason is not None) == blank
        assert label is None or label in bundle.labels
    probs = out.select(pl.col("^prob_.*$")).drop_nulls().to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_score_file_round_trips_nasty_rows(bundle, tmp_path: Path, fmt: str) -> None:
    """Every nasty text (a 1 MB one included) comes out as exactly one row, in order."""
    texts = list(NASTY.values())
    src = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        src.write_text("".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in NASTY.items()))
    else:
        pl.DataFrame({"id": list(NASTY), "text": texts}).write_csv(src)
    summary = score_file(bundle, src, tmp_path / "out" / "p.parquet", id_col="id")
    out = pl.read_parquet(tmp_path / "out" / "p.parquet")
    assert summary["rows"] == out.height == len(NASTY)
    assert out["id"].to_list() == list(NASTY)
    blank = {k for k, t in NASTY.items() if not t.strip()}
    assert set(out.filter(pl.col("label").is_null())["id"]) == blank
    assert _stray_temp_files(tmp_path / "out") == []


# ------------------------------------------------------------------------------------------
# lone surrogates in JSON


@pytest.mark.parametrize("field", ["text", "label", "id"])
def test_lone_surrogate_in_jsonl_is_a_clear_error(tmp_path: Path, field: str) -> None:
    row = {"id": "a", "text": "好评", "label": "pos"}
    row[field] = "x\ud800y"
    src = tmp_path / "s.jsonl"
    # json.dumps writes the surrogate as the escape "\ud800": valid JSON, not valid Unicode.
    src.write_text(
        json.dumps({"id": "0", "text": "好", "label": "neg"}) + "\n" + json.dumps(row) + "\n"
    )
    assert "\\ud800" in src.read_text()
    with pytest.raises(
        InputError, match=rf"s\.jsonl: line 2: field '{field}' holds a lone surrogate"
    ):
        read_corpus(src, id_col="id")
    if field != "label":
        with pytest.raises(InputError, match="lone surrogate"):
            list(read_texts_in_chunks(src, id_col="id"))


def test_paired_surrogate_escapes_are_fine(tmp_path: Path) -> None:
    src = tmp_path / "ok.jsonl"
    src.write_text('{"text": "\\ud83d\\ude00 good", "label": "a"}\n{"text": "x", "label": "b"}\n')
    assert read_corpus(src)["text"].to_list() == ["😀 good", "x"]


# ------------------------------------------------------------------------------------------
# model files


class _Payload:
    """Unpickling this creates ``marker``: proof that a loader executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _copy_bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


def _pickle_weights(bundle: Path, marker: Path) -> None:
    torch.save({"weights": _Payload(marker)}, bundle / "weights.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("resealed", [False, True])
def test_pickle_payload_as_weights_is_refused_unexecuted(
    bundle_dir: Path, tmp_path: Path, resealed: bool
) -> None:
    bundle, marker = _copy_bundle(bundle_dir, tmp_path), tmp_path / "PWNED"
    _pickle_weights(bundle, marker)
    if resealed:  # the manifest agrees: only the safetensors loader stands in the way
        seal_bundle(bundle)
    why = "not a valid safetensors file" if resealed else "weights.safetensors altered"
    with pytest.raises(BundleError, match=why):
        load_bundle(bundle)
    assert not marker.exists()


def _tamper(bundle: Path, how: str, tmp_path: Path) -> str:
    """Damage ``bundle`` one way; return a fragment the refusal must contain."""
    if how == "pickle":
        _pickle_weights(bundle, tmp_path / "PWNED")
        seal_bundle(bundle)
        return "weights.safetensors is not a valid safetensors file"
    if how == "vocab_edited":
        vocab = pl.read_parquet(bundle / "vocab.parquet")
        vocab.with_columns(pl.col("token").reverse()).write_parquet(bundle / "vocab.parquet")
        return "vocab.parquet altered or truncated"
    if how == "vocab_other_size_resealed":
        vocab = pl.read_parquet(bundle / "vocab.parquet")
        vocab.head(vocab.height - 3).write_parquet(bundle / "vocab.parquet")
        seal_bundle(bundle)
        return "vocab has"
    if how == "tokenizer_version_resealed":
        config = json.loads((bundle / "config.json").read_text())
        config["tokenizer"]["identity"]["engine_version"] = "0.0.1-other"
        (bundle / "config.json").write_text(json.dumps(config))
        seal_bundle(bundle)  # only the identity check can catch it now
        return "tokenizer differs from the one it was trained with (engine_version"
    if how == "weights_truncated":
        with open(bundle / "weights.safetensors", "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) // 2)
        return "weights.safetensors altered or truncated"
    if how == "weights_truncated_resealed":
        with open(bundle / "weights.safetensors", "r+b") as f:
            f.truncate(f.seek(0, os.SEEK_END) // 2)
        seal_bundle(bundle)
        return "weights.safetensors is not a valid safetensors file"
    if how == "manifest_missing":
        (bundle / "_manifest.json").unlink()
        return "missing _manifest.json"
    raise AssertionError(how)


TAMPERING = [
    "pickle",
    "vocab_edited",
    "vocab_other_size_resealed",
    "tokenizer_version_resealed",
    "weights_truncated",
    "weights_truncated_resealed",
    "manifest_missing",
]


@pytest.mark.parametrize("how", TAMPERING)
def test_tampered_bundle_is_refused(bundle_dir: Path, tmp_path: Path, how: str) -> None:
    bundle = _copy_bundle(bundle_dir, tmp_path)
    fragment = _tamper(bundle, how, tmp_path)
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and "refused model bundle" in message and fragment in message
    assert not (tmp_path / "PWNED").exists()


# ------------------------------------------------------------------------------------------
# through the CLI (one Prefect test server for the module)


def _cli(*args: object) -> Result:
    from zhflow.flows.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_refused(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one ``zhflow: error:`` line naming the problem, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no unexpected error
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _stray_temp_files(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


RUN = ("--tokenizer", "char", "--until", "tokenize", "--processes", "1", "--json")


def _run_ok(src: Path, workdir: Path, *extra: str) -> dict:
    result = _cli("run", src, "--workdir", workdir, *RUN, *extra)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _csv(rows: list[tuple[str, str]]) -> str:
    return "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)


BASE = [
    (f"这家店{'很好' if i % 2 else '很差'}第{i}次", "pos" if i % 2 else "neg") for i in range(12)
]

_GOOD_PREFIX = _csv(BASE[:3]).encode("utf-8")  # header + 3 rows = lines 1-4

# name -> (file name, bytes, extra CLI args, exit code, fragments of the error line)
REFUSED: dict[str, tuple[str, bytes, tuple[str, ...], int, tuple[str, ...]]] = {
    "invalid_utf8": (
        "bad.csv",
        _GOOD_PREFIX + b"\xe5\x9d\x8f\xff\xfe,neg\n",  # 坏 then two bytes no UTF-8 has
        (),
        2,
        (f"bad.csv: not valid utf-8 at line 5, byte offset {len(_GOOD_PREFIX) + 3};", "--encoding"),
    ),
    "gb18030_read_as_utf8": (
        "gb.csv",
        _csv(BASE).encode("gb18030"),
        (),
        2,
        ("gb.csv: not valid utf-8 at line 2, byte offset 11",),
    ),
    "unknown_encoding": (
        "ok.csv",
        _csv(BASE).encode(),
        ("--encoding", "klingon"),
        2,
        ("unknown encoding 'klingon'",),
    ),
    "ragged_long_row": (
        "ragged.csv",
        (_csv(BASE[:4]) + "多一列,pos,extra\n" + _csv(BASE[4:]).split("\n", 1)[1]).encode(),
        (),
        2,
        ("ragged.csv: line 6: 3 fields, but the first row has 2",),
    ),
    "quote_never_closed": (
        "quote.csv",
        (_csv(BASE[:4]) + '"没有结束的引号,pos\n' + _csv(BASE[4:]).split("\n", 1)[1]).encode(),
        (),
        2,
        ("quote.csv: line 6: a quoted field opens here and is never closed",),
    ),
    "one_row": ("one.csv", _csv(BASE[:1]).encode(), (), 2, ("only one label",)),
    "empty_file": ("empty.csv", b"", (), 2, ("empty.csv: empty corpus (no rows)",)),
    "header_only": ("head.csv", b"text,label\n", (), 2, ("head.csv: empty corpus (no rows)",)),
    "blank_texts_only": ("blank.csv", b"text,label\n ,a\n\t,b\n", (), 2, ("no non-empty texts",)),
    "no_label_column": ("nolab.csv", b"text,x\na,1\nb,2\n", (), 2, ("no label column",)),
    "jsonl_not_objects": (
        "arr.jsonl",
        b'[{"text": "a", "label": 1}]\n',
        (),
        2,
        ("arr.jsonl: line 1: expected a JSON object",),
    ),
    "jsonl_lone_surrogate": (
        "sur.jsonl",
        b'{"text": "\\u597d", "label": "a"}\n{"text": "x\\ud800", "label": "b"}\n',
        (),
        2,
        ("sur.jsonl: line 2: field 'text' holds a lone surrogate (\\ud800)",),
    ),
    "binary_parquet_garbage": (
        "junk.parquet",
        b"PAR1 not really",
        (),
        2,
        ("junk.parquet: not a readable parquet file",),
    ),
    "unknown_suffix": ("corpus.xlsx", b"PK\x03\x04", (), 2, ("cannot tell the corpus format",)),
}


# One case per kind runs in the quick suite; the whole matrix runs with the slow tests (CI).
_QUICK_CORPORA = {"invalid_utf8", "ragged_long_row", "empty_file", "jsonl_lone_surrogate"}
_QUICK_BUNDLES = {"pickle", "tokenizer_version_resealed"}


def _params(cases: list[str], quick: set[str]) -> list:
    return [pytest.param(c, marks=() if c in quick else pytest.mark.slow) for c in cases]


@pytest.mark.prefect
@pytest.mark.parametrize("case", _params(list(REFUSED), _QUICK_CORPORA))
def test_cli_refuses_bad_corpus(prefect_server, tmp_path: Path, case: str) -> None:
    name, data, extra, code, fragments = REFUSED[case]
    src = tmp_path / name
    src.write_bytes(data)
    workdir = tmp_path / "w"
    result = _cli("run", src, "--workdir", workdir, *RUN, *extra)
    _assert_refused(result, code, *fragments)
    assert _stray_temp_files(workdir) == []
    assert not list((workdir / "corpus").glob("[0-9a-f]*"))  # nothing half-made is kept


@pytest.mark.prefect
def test_cli_refuses_missing_path_and_folders(prefect_server, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    _assert_refused(
        _cli("run", tmp_path / "nope.csv", "--workdir", workdir, *RUN),
        2,
        "nope.csv: no such file or directory",
    )
    folder = tmp_path / "folder"
    folder.mkdir()
    _assert_refused(
        _cli("run", folder, "--workdir", workdir, *RUN), 2, "folder: no *.txt files in this folder"
    )
    (folder / "a.csv").write_text(_csv(BASE))
    _assert_refused(
        _cli("run", folder, "--format", "csv", "--workdir", workdir, *RUN), 2, "folder: is a folder"
    )
    (tmp_path / "m.csv").write_text(_csv(BASE))
    _assert_refused(
        _cli(
            "score",
            "--model",
            tmp_path / "no-bundle",
            tmp_path / "m.csv",
            "--output",
            tmp_path / "p.parquet",
        ),
        3,
        "no such directory",
    )


@pytest.mark.prefect
def test_cli_handles_and_counts_odd_but_valid_corpora(prefect_server, tmp_path: Path) -> None:
    # gb18030 with --encoding: read correctly.
    gb = tmp_path / "gb.csv"
    gb.write_bytes(_csv(BASE).encode("gb18030"))
    summary = _run_ok(gb, tmp_path / "w1", "--encoding", "gb18030")
    assert summary["profile"]["rows_kept"] == len(BASE)
    corpus = pl.read_parquet(Path(summary["artifacts"]["corpus"]) / "corpus.parquet")
    assert corpus["text"].to_list()[0] == BASE[0][0]

    # Ragged short rows (missing label), a BOM inside a field, a quoted field spanning lines.
    odd = tmp_path / "odd.csv"
    odd.write_text(
        _csv(BASE)
        + "缺少标签的行\n"  # one field: label null -> dropped and counted
        + "\ufeff字段里的\ufeffBOM,pos\n"
        + '"跨越\n两行的\n引号",neg\n'
        + ",pos\n",  # empty text: dropped and counted
        encoding="utf-8",
    )
    profile = _run_ok(odd, tmp_path / "w2")["profile"]
    assert profile["rows"] == len(BASE) + 4
    assert profile["null_labels"] == 1 and profile["empty_or_null_texts"] == 1
    assert any("1 row with a text but an empty or null label dropped" in w
               for w in profile["warnings"])  # said, not only counted  # fmt: skip
    assert profile["rows_kept"] == len(BASE) + 2
    summary = _run_ok(odd, tmp_path / "w2")  # second run: all cached
    corpus = pl.read_parquet(Path(summary["artifacts"]["corpus"]) / "corpus.parquet")
    texts = corpus["text"].to_list()
    assert "字段里的BOM" in texts and "跨越\n两行的\n引号" in texts
    assert not any("\ufeff" in t for t in texts)

    # Mixed-type labels in jsonl: 1 and "1" are the same class.
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "".join(
            json.dumps({"text": t, "label": [1, "1", 2, "2"][i % 4]}, ensure_ascii=False) + "\n"
            for i, (t, _) in enumerate(BASE)
        ),
        encoding="utf-8",
    )
    assert _run_ok(mixed, tmp_path / "w3")["profile"]["labels"] == {"1": 6, "2": 6}


@pytest.mark.prefect
def test_cli_score_output_locations(prefect_server, bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\n很好吃\n太难吃了\n\n", encoding="utf-8")
    # A folder that does not exist yet is created.
    out = tmp_path / "new" / "deeper" / "p.parquet"
    result = _cli("score", "--model", bundle_dir, src, "--output", out, "--processes", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    assert pl.read_parquet(out).height == 3
    assert _stray_temp_files(out.parent) == []
    # An empty export among several (a quiet night for one shop): the rest scored, it named.
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    both = tmp_path / "both.parquet"
    result = _cli("score", "--model", bundle_dir, empty, src, "--output", both, "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["rows"] == pl.read_parquet(both).height == 3
    assert summary["empty_inputs"] == [str(empty)]
    # A folder in the path that is a file.
    blocker = tmp_path / "some_file"
    blocker.write_text("not a folder")
    _assert_refused(
        _cli("score", "--model", bundle_dir, src, "--output", blocker / "p.parquet"),
        2,
        "cannot write",
        "is a file, not a folder",
    )
    # The output is a folder, or a device: refused, never replaced.
    _assert_refused(
        _cli("score", "--model", bundle_dir, src, "--output", tmp_path), 2, "is a directory"
    )
    if Path("/dev/null").exists():
        _assert_refused(
            _cli("score", "--model", bundle_dir, src, "--output", "/dev/null"),
            2,
            "not a regular file",
        )
        assert Path("/dev/null").is_char_device()
    # Input that fails half way (a bad row in the second chunk): no output, no temp file.
    bad = tmp_path / "bad.csv"
    bad.write_text("text\n" + "好\n" * 10 + "a,b,c\n", encoding="utf-8")
    out2 = tmp_path / "o2" / "p.parquet"
    _assert_refused(
        _cli("score", "--model", bundle_dir, bad, "--output", out2, "--chunk-rows", "4"),
        2,
        "line 12",
    )
    assert not out2.exists() and _stray_temp_files(out2.parent) == []


@pytest.mark.prefect
@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores chmod")
def test_cli_score_read_only_folder(prefect_server, bundle_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\n很好吃\n", encoding="utf-8")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        _assert_refused(
            _cli("score", "--model", bundle_dir, src, "--output", locked / "p.parquet"),
            2,
            "cannot write",
        )
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.prefect
@pytest.mark.parametrize("how", _params(TAMPERING, _QUICK_BUNDLES))
def test_cli_refuses_tampered_bundle_with_exit_3(
    prefect_server, bundle_dir: Path, tmp_path: Path, how: str
) -> None:
    bundle = _copy_bundle(bundle_dir, tmp_path)
    fragment = _tamper(bundle, how, tmp_path)
    src = tmp_path / "in.csv"
    src.write_text("text\n很好吃\n", encoding="utf-8")
    out = tmp_path / "out" / "p.parquet"
    _assert_refused(
        _cli("score", "--model", bundle, src, "--output", out), 3, "refused model bundle", fragment
    )
    assert not (tmp_path / "PWNED").exists()
    assert not out.exists()
