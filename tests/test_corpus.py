"""Corpus reading, cleaning, profiling and splitting on tiny Chinese fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from zhflow.tasks.corpus import (
    FORMATS,
    check_corpus_header,
    clean_corpus,
    demo_corpus_paths,
    detect_format,
    dropped_row_warnings,
    profile_corpus,
    read_corpus,
    read_texts_in_chunks,
    split_corpus,
    validate_labels,
)
from zhflow.tasks.errors import InputError

ROWS = [("这部电影很好看", "pos"), ("剧情太无聊了", "neg"), ("演员演得不错", "pos")]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def rows(df: pl.DataFrame) -> list[tuple]:
    return df.select("id", "text", "label").rows()


# ---------------------------------------------------------------------------- formats


def test_read_csv(tmp_path: Path) -> None:
    p = write(tmp_path / "data.csv", "review,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS))
    df = read_corpus(p)
    assert df.columns == ["id", "text", "label"]
    assert df.schema == {"id": pl.Utf8, "text": pl.Utf8, "label": pl.Utf8}
    assert rows(df) == [(str(i), t, lab) for i, (t, lab) in enumerate(ROWS)]


def test_read_csv_id_column_and_numeric_labels(tmp_path: Path) -> None:
    p = write(tmp_path / "d.csv", "doc,content,class\na7,好,1\nb8,坏,0\n")
    df = read_corpus(p, id_col="doc")
    assert rows(df) == [("a7", "好", "1"), ("b8", "坏", "0")]


def test_read_tsv_with_header(tmp_path: Path) -> None:
    body = "".join(f"{lab}\t{t}\n" for t, lab in ROWS)
    df = read_corpus(write(tmp_path / "d.tsv", "label\ttext\n" + body))
    assert rows(df) == [(str(i), t, lab) for i, (t, lab) in enumerate(ROWS)]


def test_read_headerless_tsv(tmp_path: Path) -> None:
    body = "".join(f"{t}\t{lab}\n" for t, lab in [("苹果发布新手机", "科技"), ("球队赢了", "体育")])
    p = write(tmp_path / "train.txt", body)
    assert detect_format(p) == "tsv"
    df = read_corpus(p)
    assert rows(df) == [("0", "苹果发布新手机", "科技"), ("1", "球队赢了", "体育")]


def test_tsv_with_unbalanced_quotes_is_read_literally(tmp_path: Path) -> None:
    p = write(tmp_path / "d.tsv", 'text\tlabel\n"新浪"发布消息\t科技\n他说"好\t体育\n')
    df = read_corpus(p)
    assert df["text"].to_list() == ['"新浪"发布消息', '他说"好']
    assert df["label"].to_list() == ["科技", "体育"]


def test_read_jsonl(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": 10, "sentence": "好", "label": 1}, ensure_ascii=False),
        "",
        json.dumps({"id": 11, "sentence": "坏", "label": 0, "extra": [1]}, ensure_ascii=False),
    ]
    df = read_corpus(write(tmp_path / "d.jsonl", "\n".join(lines) + "\n"), id_col="id")
    assert rows(df) == [("10", "好", "1"), ("11", "坏", "0")]


def test_jsonl_bad_line_is_named(tmp_path: Path) -> None:
    p = write(tmp_path / "d.jsonl", '{"text": "好", "label": "a"}\n{"text": "坏", label: 1}\n')
    with pytest.raises(InputError, match=r"d\.jsonl: line 2, column \d+: invalid JSON"):
        read_corpus(p)
    p = write(tmp_path / "e.jsonl", '{"text": "好", "label": "a"}\n["x"]\n')
    with pytest.raises(InputError, match=r"e\.jsonl: line 2: expected a JSON object"):
        read_corpus(p)


def test_read_parquet(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pl.DataFrame({"text": ["好", "坏", None], "label": [1, 0, 1]}).write_parquet(p)
    df = read_corpus(p)
    assert rows(df) == [("0", "好", "1"), ("1", "坏", "0"), ("2", None, "1")]


def test_read_lines_folder_and_list(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    write(folder / "pos.txt", "很好\n\n非常满意\n")
    write(folder / "neg.txt", "很差\r\n")
    write(folder / "notes.md", "ignored\n")
    df = read_corpus(folder)
    assert detect_format(folder) == "lines"
    assert rows(df) == [
        ("neg:1", "很差", "neg"),
        ("pos:1", "很好", "pos"),
        ("pos:2", "", "pos"),
        ("pos:3", "非常满意", "pos"),
    ]
    listed = read_corpus([folder / "pos.txt", folder / "neg.txt"])
    assert listed["id"].to_list() == ["pos:1", "pos:2", "pos:3", "neg:1"]


def test_detect_format(tmp_path: Path) -> None:
    for name, fmt in [
        ("a.csv", "csv"),
        ("a.tsv", "tsv"),
        ("a.jsonl", "jsonl"),
        ("a.json", "jsonl"),
    ]:
        assert detect_format(write(tmp_path / name, "x")) == fmt
    assert detect_format(write(tmp_path / "a.txt", "一行\n")) == "lines"
    with pytest.raises(InputError, match="one of: " + ", ".join(FORMATS)):
        detect_format(write(tmp_path / "a.xlsx", "x"))


# ---------------------------------------------------------------------------- errors


def test_missing_column_names_it_and_lists_found(tmp_path: Path) -> None:
    p = write(tmp_path / "data.csv", "label,review\npos,好\n")
    with pytest.raises(InputError) as err:
        read_corpus(p, text_col="txt")
    assert str(err.value) == f"{p}: no column 'txt'; columns found: label, review"
    with pytest.raises(InputError, match="no label column"):
        read_corpus(write(tmp_path / "nolabel.csv", "text\n好\n"))
    df = read_corpus(tmp_path / "nolabel.csv", require_labels=False)
    assert df["label"].to_list() == [None]


def test_missing_file_and_folder_for_csv(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: no such file or directory"):
        read_corpus(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="is a folder"):
        read_corpus(tmp_path, fmt="csv")


def test_invalid_utf8_names_line_and_byte_offset(tmp_path: Path) -> None:
    data = "text,label\n好,pos\n".encode() + b"\xff\xfe,neg\n"
    p = tmp_path / "bad.csv"
    p.write_bytes(data)
    with pytest.raises(InputError) as err:
        read_corpus(p)
    offset = data.index(b"\xff")
    assert str(err.value) == (
        f"{p}: not valid utf-8 at line 3, byte offset {offset}; pass --encoding (e.g. gb18030)"
    )
    # Read as gb18030 already: the hint is the other common one, not itself.
    p.write_bytes("text,label\n好,pos\n".encode("gb18030") + b"\x80,neg\n")
    with pytest.raises(InputError, match=r"not valid GB18030 .*; pass --encoding \(e\.g\. utf-8\)"):
        read_corpus(p, encoding="GB18030")


def test_gb18030_file(tmp_path: Path) -> None:
    body = "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in ROWS)
    p = write(tmp_path / "gbk.csv", body, encoding="gb18030")
    with pytest.raises(InputError, match="not valid utf-8 at line 2"):
        read_corpus(p)
    df = read_corpus(p, encoding="gb18030")
    assert df["text"].to_list() == [t for t, _ in ROWS]
    lines = write(tmp_path / "pos.txt", "很好\n", encoding="gb18030")
    assert read_corpus([lines], encoding="gb18030")["text"].to_list() == ["很好"]


def test_empty_files(tmp_path: Path) -> None:
    for name in ("e.csv", "e.jsonl", "e.txt"):
        p = write(tmp_path / name, "")
        with pytest.raises(InputError, match=rf"{name}: empty corpus \(no rows\)"):
            read_corpus(p)
    with pytest.raises(InputError, match=r"h\.csv: empty corpus \(no rows\)"):
        read_corpus(write(tmp_path / "h.csv", "text,label\n"))


def test_ragged_row_names_the_line(tmp_path: Path) -> None:
    p = write(tmp_path / "r.csv", "text,label\n好,pos\n坏,neg,多余\n")
    with pytest.raises(InputError, match=r"r\.csv: line 3: 3 fields, but the first row has 2"):
        read_corpus(p)
    p = write(tmp_path / "q.csv", 'text,label\n好,pos\n"坏,neg\n还有,pos\n')
    with pytest.raises(InputError, match=r"q\.csv: line 3: a quoted field opens here"):
        read_corpus(p)


def test_one_label_and_empty_after_cleaning(tmp_path: Path) -> None:
    df, _ = clean_corpus(read_corpus(write(tmp_path / "one.csv", "text,label\n好,pos\n棒,pos\n")))
    with pytest.raises(InputError) as err:
        validate_labels(df, "one.csv")
    assert str(err.value) == "one.csv: only one label ('pos'); a classifier needs at least two"
    df, _ = clean_corpus(read_corpus(write(tmp_path / "blank.csv", 'text,label\n" ",pos\n')))
    with pytest.raises(InputError, match=r"blank\.csv: empty corpus: no non-empty texts"):
        validate_labels(df, "blank.csv")
    small, _ = clean_corpus(read_corpus(write(tmp_path / "s.csv", "text,label\n好,a\n坏,b\n")))
    assert validate_labels(small, "s.csv") == ["a", "b"]


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    df = read_corpus(write(tmp_path / "d.csv", "id,text,label\nx,好,a\nx,坏,b\n"), id_col="id")
    with pytest.raises(InputError, match="duplicate id 'x'"):
        clean_corpus(df)


# ---------------------------------------------------------------------------- quoting, BOM


def test_quotes_spanning_lines_and_bom(tmp_path: Path) -> None:
    body = '\ufefftext,label\n"第一行\n第二行",pos\n"他说""好""",neg\n"中\ufeff间",pos\n'
    df = read_corpus(write(tmp_path / "q.csv", body))
    assert df.columns == ["id", "text", "label"]
    assert df["text"].to_list() == ["第一行\n第二行", '他说"好"', "中\ufeff间"]
    clean, counts = clean_corpus(df)
    assert clean["text"].to_list() == ["第一行\n第二行", '他说"好"', "中间"]
    assert counts == {"rows_in": 3, "empty_text": 0, "null_label": 0, "rows_out": 3}


# ---------------------------------------------------------------------------- clean, profile


def test_clean_and_profile_counts(tmp_path: Path) -> None:
    body = (
        "text,label\n"
        "好看,pos\n"  # 0
        ",pos\n"  # 1 null text
        '"   ",neg\n'  # 2 whitespace-only text
        "难看,\n"  # 3 null label
        "好看,pos\n"  # 4 duplicate of 0
        "一般般吧,neg\n"  # 5
        "好看,neg\n"  # 6 duplicate of 0 (another label)
        '"\u3000",neg\n'  # 7 ideographic space only
    )
    raw = read_corpus(write(tmp_path / "p.csv", body))
    clean, counts = clean_corpus(raw)
    assert counts == {"rows_in": 8, "empty_text": 3, "null_label": 1, "rows_out": 4}
    assert clean["id"].to_list() == ["0", "4", "5", "6"]
    profile = profile_corpus(raw, clean, counts)
    assert json.loads(json.dumps(profile)) == profile
    assert profile["rows"] == 8
    assert profile["rows_kept"] == 4
    assert profile["empty_or_null_texts"] == 3
    assert profile["null_labels"] == 1
    assert profile["duplicate_texts"] == 2
    assert profile["labels"] == {"neg": 2, "pos": 2}
    assert profile["text_length"] == {
        "min": 2,
        "p25": 2.0,
        "p50": 2.0,
        "p75": 2.5,
        "p95": 3.7,
        "max": 4,
        "mean": 2.5,
    }
    assert dropped_row_warnings(counts) == [
        "3 rows with an empty or null text dropped",
        "1 row with a text but an empty or null label dropped (neither trained on nor tested); "
        "`zhflow score` labels such rows, and `--unlabeled` uses their text for pretraining",
    ]
    unlabeled, counts = clean_corpus(raw, require_labels=False)
    assert counts["null_label"] == 0
    assert unlabeled.height == 5
    assert dropped_row_warnings(counts) == ["3 rows with an empty or null text dropped"]
    assert dropped_row_warnings({"rows_in": 2, "empty_text": 0, "null_label": 0}) == []


# ---------------------------------------------------------------------------- split


def _labelled(n_a: int, n_b: int, n_c: int) -> pl.DataFrame:
    labels = ["a"] * n_a + ["b"] * n_b + ["c"] * n_c
    return pl.DataFrame(
        {
            "id": [str(i) for i in range(len(labels))],
            "text": [f"文本{i}" for i in range(len(labels))],
            "label": labels,
        }
    )


def test_split_is_stratified_and_deterministic() -> None:
    df = _labelled(50, 30, 2)
    s1 = split_corpus(df, seed=1)
    assert s1.select("id", "text", "label").equals(df)  # all rows, once, in order
    counts = dict(((lab, sp), n) for lab, sp, n in s1.group_by("label", "split").len().iter_rows())
    assert counts == {
        ("a", "train"): 40,
        ("a", "valid"): 5,
        ("a", "test"): 5,
        ("b", "train"): 24,
        ("b", "valid"): 3,
        ("b", "test"): 3,
        ("c", "train"): 2,
    }
    assert split_corpus(df, seed=1)["split"].equals(s1["split"])
    assert not split_corpus(df, seed=2)["split"].equals(s1["split"])
    tiny = split_corpus(_labelled(3, 3, 0), seed=0)
    assert sorted(tiny.filter(pl.col("label") == "a")["split"].to_list()) == [
        "test",
        "train",
        "valid",
    ]
    with pytest.raises(InputError, match="bad split fractions"):
        split_corpus(df, seed=0, valid_frac=0.5, test_frac=0.5)


# ---------------------------------------------------------------------------- demo corpus


def test_demo_corpus() -> None:
    paths = demo_corpus_paths()
    assert [p.name for p in paths] == ["neg.txt", "pos.txt"]
    df = read_corpus(paths)
    assert df.height > 30_000
    assert set(df["label"].unique().to_list()) == {"neg", "pos"}
    assert df["id"].is_unique().all()


# ---------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_read_texts_in_chunks(tmp_path: Path, fmt: str) -> None:
    texts = [f"第{i}条评论" for i in range(8)]
    texts[4] = ""  # kept
    if fmt == "parquet":
        p = tmp_path / "d.parquet"
        pl.DataFrame({"text": texts}).write_parquet(p)
    elif fmt == "jsonl":
        body = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
        p = write(tmp_path / "d.jsonl", body)
    else:
        sep = "," if fmt == "csv" else "\t"
        body = f"label{sep}text\n" + "".join(f"x{sep}{t}\n" for t in texts)
        p = write(tmp_path / f"d.{fmt}", body)
    chunks = list(read_texts_in_chunks(p, chunk_rows=3))
    assert [c.height for c in chunks] == [3, 3, 2]
    out = pl.concat(chunks)
    assert out.columns == ["id", "text"]
    assert out["id"].to_list() == [str(i) for i in range(8)]
    got = out["text"].to_list()
    assert got[:4] == texts[:4] and got[5:] == texts[5:]
    assert got[4] in ("", None)


def test_read_texts_in_chunks_lines_ids_and_list(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "一\n二\n\n四\n")
    b = write(tmp_path / "b.txt", "五\n六\n")
    out = pl.concat(read_texts_in_chunks([a, b], fmt="lines", chunk_rows=3))
    assert out.rows() == [
        ("a:1", "一"),
        ("a:2", "二"),
        ("a:3", ""),
        ("a:4", "四"),
        ("b:1", "五"),
        ("b:2", "六"),
    ]
    c1 = write(tmp_path / "c1.csv", "text\n甲\n乙\n")
    c2 = write(tmp_path / "c2.csv", "text\n丙\n丁\n")
    ids = pl.concat(read_texts_in_chunks([c1, c2], chunk_rows=3))["id"].to_list()
    assert ids == ["0", "1", "2", "3"]


def test_read_texts_in_chunks_gb18030_and_id_col(tmp_path: Path) -> None:
    body = "doc\ttext\n" + "".join(f"d{i}\t评论{i}\n" for i in range(5))
    p = write(tmp_path / "g.tsv", body, encoding="gb18030")
    out = pl.concat(read_texts_in_chunks(p, id_col="doc", encoding="gb18030", chunk_rows=3))
    assert out.rows() == [(f"d{i}", f"评论{i}") for i in range(5)]


def test_read_texts_in_chunks_ragged_row_is_an_error(tmp_path: Path) -> None:
    p = write(tmp_path / "z.tsv", "好\t体育\n坏\t体育\t多余\n")
    with pytest.raises(InputError, match=r"z\.tsv: line 2: 3 fields, but the first row has 2"):
        list(read_texts_in_chunks(p))


def test_drop_duplicate_texts_keeps_first_and_counts() -> None:
    from zhflow.tasks.corpus import drop_duplicate_texts

    df = pl.DataFrame(
        {
            "id": ["0", "1", "2", "3", "4"],
            "text": ["好", "差", "好", "好", "差"],
            "label": ["pos", "neg", "pos", "neg", "neg"],
        }
    )
    kept, counts = drop_duplicate_texts(df)
    assert kept["id"].to_list() == ["0", "1"]
    assert counts == {"duplicates_dropped": 3, "conflicting_labels": 1}


# ---------------------------------------------------------------------------- leak-free split


def _repeats_fixture() -> pl.DataFrame:
    """60 distinct texts, each repeated 1-4 times, some in other case or spacing; 3 conflicts."""
    rows: list[tuple[str, str]] = []
    for i in range(60):
        label = "pos" if i % 3 else "neg"
        text = f"Good 商品{i}" if i % 2 else f"一般{i}"
        variants = [text, text.upper(), f"  {text} ", text.replace(" ", "\u3000")]
        rows += [(variants[k], label) for k in range(1 + i % 4)]
    rows += [("好坏难说", "pos"), ("好坏难说", "neg")]  # a tie: both rows dropped
    rows += [("还行吧", "pos"), ("还行吧", "pos"), ("还行吧", "neg")]  # majority pos
    rows += [("ＯＫ", "neg"), ("ok", "neg"), ("Ok", "pos")]  # full-width and case: majority neg
    return pl.DataFrame(
        {
            "id": [str(i) for i in range(len(rows))],
            "text": [t for t, _ in rows],
            "label": [lab for _, lab in rows],
        }
    )


def test_conflicting_labels_are_resolved_by_majority_ties_dropped() -> None:
    from zhflow.tasks.corpus import resolve_conflicting_labels

    df = _repeats_fixture()
    kept, counts = resolve_conflicting_labels(df)
    assert counts == {"conflicting_label_texts": 3, "conflicting_rows_dropped": 4}
    assert kept.height == df.height - 4
    assert "好坏难说" not in kept["text"].to_list()
    assert kept.filter(pl.col("text") == "还行吧")["label"].to_list() == ["pos", "pos"]
    assert kept.filter(pl.col("text").is_in(["ＯＫ", "ok", "Ok"]))["label"].to_list() == [
        "neg",
        "neg",
    ]
    assert kept["id"].to_list() == sorted(kept["id"].to_list(), key=int)  # row order kept


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_identical_texts_never_cross_splits(seed: int) -> None:
    from zhflow.tasks.corpus import (
        count_cross_split_duplicates,
        resolve_conflicting_labels,
        text_groups,
    )

    df, _ = resolve_conflicting_labels(_repeats_fixture())
    split = split_corpus(df, seed=seed, valid_frac=0.15, test_frac=0.15)
    assert count_cross_split_duplicates(split) == 0
    groups = text_groups(split["text"].to_list())
    for g in set(groups.tolist()):
        assert split.filter(pl.Series(groups == g))["split"].n_unique() == 1
    counts = split.group_by("split").len()
    assert set(counts["split"].to_list()) == {"train", "valid", "test"}
    assert split_corpus(df, seed=seed, valid_frac=0.15, test_frac=0.15)["split"].equals(
        split["split"]
    )


def test_prepare_corpus_reads_resolves_splits_and_says_what_it_did(tmp_path: Path) -> None:
    """What the corpus stage writes, from the file alone: conflicts resolved and counted,
    repeats kept in one split, the notes it logs; a bad corpus raises the same InputError the
    stage would (the CLI calls this before a server starts)."""
    from zhflow.tasks.corpus import prepare_corpus

    path = tmp_path / "repeats.csv"
    _repeats_fixture().write_csv(path)
    prepared = prepare_corpus(path, None, None, None, None, "utf-8", 42, 0.15, 0.15, False)
    profile = prepared.profile
    assert profile["conflicting_label_texts"] == 3 and profile["conflicting_rows_dropped"] == 4
    assert profile["cross_split_duplicate_texts"] == 0
    assert profile["rows_kept"] == prepared.split.height == profile["rows"] - 4
    assert sum(profile["splits"].values()) == prepared.split.height
    assert prepared.notes[0].startswith("3 texts occur under several labels")
    assert "never across splits" in prepared.notes[1]
    assert prepared.notes[-1].startswith(f"{profile['rows_kept']} rows kept of")
    again = prepare_corpus([path], None, None, None, None, "utf-8", 42, 0.15, 0.15, False)
    assert again.split.equals(prepared.split)  # a seed fixes the split
    deduped = prepare_corpus(path, None, None, None, None, "utf-8", 42, 0.15, 0.15, True)
    assert deduped.split["text"].n_unique() == deduped.split.height < prepared.split.height
    one = tmp_path / "one.csv"
    pl.DataFrame({"text": [f"好{i}" for i in range(30)], "label": ["pos"] * 30}).write_csv(one)
    with pytest.raises(InputError, match=r"one\.csv: only one label"):
        prepare_corpus(one, None, None, None, None, "utf-8", 42, 0.1, 0.1, False)


def test_a_row_split_would_leak_and_is_counted() -> None:
    from zhflow.tasks.corpus import count_cross_split_duplicates

    df = pl.DataFrame(
        {
            "text": ["好", "好", "坏", "Ab", "ab"],
            "split": ["train", "test", "test", "valid", "train"],
        }
    )
    assert count_cross_split_duplicates(df) == 2  # 好, and Ab/ab after normalisation


def test_split_refuses_a_text_under_two_labels() -> None:
    df = pl.DataFrame({"id": ["0", "1", "2"], "text": ["好", "好", "坏"], "label": ["a", "b", "a"]})
    with pytest.raises(InputError, match="resolve_conflicting_labels"):
        split_corpus(df, seed=0)


def test_check_corpus_header_refuses_from_headers_and_leaves_the_rest_to_the_reader(
    tmp_path: Path,
) -> None:
    csv = write(tmp_path / "c.csv", "review,label\n好,pos\n")
    check_corpus_header(csv, text_col="review")  # fine: nothing raised
    with pytest.raises(InputError, match=r"c\.csv: no column 'body'; columns found: review"):
        check_corpus_header(csv, text_col="body")
    with pytest.raises(InputError, match=r"b\.csv: no text column"):
        check_corpus_header([write(tmp_path / "b.csv", "body,label\n好,pos\n")])
    headless = write(tmp_path / "h.tsv", "好吃\tpos\n难吃\tneg\n")
    check_corpus_header(headless)  # a two-column TSV without a header reads as (text, label)
    check_corpus_header(csv, text_col="review", label_col=None, require_labels=False)
    parquet = tmp_path / "p.parquet"
    pl.DataFrame({"text": ["好"], "y": ["pos"]}).write_parquet(parquet)
    with pytest.raises(InputError, match=r"p\.parquet: no label column"):
        check_corpus_header(parquet)
    with pytest.raises(InputError, match="no such file or directory"):
        check_corpus_header(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="--text-col does not apply to --format lines"):
        check_corpus_header(write(tmp_path / "pos.txt", "好\n"), "lines", text_col="x")
    # What only reading can tell is left to read_corpus, which names the line or byte:
    check_corpus_header(write(tmp_path / "empty.csv", ""))
    gbk = tmp_path / "g.csv"
    gbk.write_bytes("评论,label\n好,pos\n".encode("gb18030"))
    check_corpus_header(gbk)  # not utf-8 in its header: no guess from garbled names
    with pytest.raises(InputError, match="not valid utf-8 at line 1"):
        read_corpus(gbk)
    check_corpus_header(gbk, encoding="gb18030", text_col="评论")  # transcoded: not peeked at


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_blank_lines_are_no_rows_in_training_and_scoring(tmp_path: Path, fmt: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    path = tmp_path / f"c.{fmt}"
    lines = [sep.join(r) for r in (("id", "text", "label"), ("a", "好吃", "pos"),
                                   ("b", "难吃", "neg"))]  # fmt: skip
    # A blank line in the middle, one of empty fields, and the usual extra one at the end.
    path.write_text(f"{lines[0]}\n{lines[1]}\n\n{sep * 2}\n{lines[2]}\n\n", encoding="utf-8")
    df = read_corpus(str(path), id_col="id")
    assert df.select("id", "text", "label").rows() == [("a", "好吃", "pos"), ("b", "难吃", "neg")]
    for chunk_rows in (1, 50_000):
        chunks = list(read_texts_in_chunks(str(path), id_col="id", chunk_rows=chunk_rows))
        assert pl.concat(chunks).rows() == [("a", "好吃"), ("b", "难吃")]
    by_index = pl.concat(list(read_texts_in_chunks(str(path))))  # ids: the row index
    assert by_index.rows() == [("0", "好吃"), ("1", "难吃")]


def test_a_blank_line_in_a_one_column_file_is_an_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "texts.csv"
    pl.DataFrame({"text": ["好吃", None, "难吃"]}).write_csv(path)  # a null: a blank line
    assert path.read_text(encoding="utf-8") == "text\n好吃\n\n难吃\n"
    rows = pl.concat(list(read_texts_in_chunks(str(path))))
    assert rows["text"].to_list() == ["好吃", None, "难吃"]  # one row per input row, as written


def test_an_encoding_that_fails_without_a_bad_byte_or_is_no_text_codec(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes("text,label\n好吃,pos\n难吃,neg\n".encode("utf-16-le"))  # no BOM
    with pytest.raises(InputError, match=r"c\.csv: not valid utf-16 \(UTF-16 stream does not "):
        read_corpus(str(path), encoding="utf-16")
    assert read_corpus(str(path), encoding="utf-16-le")["text"].to_list() == ["好吃", "难吃"]
    for codec in ("rot13", "base64", "zlib", "hex"):
        with pytest.raises(InputError, match=f"^'{codec}' is not a text encoding"):
            read_corpus(str(path), encoding=codec)
        with pytest.raises(InputError, match=f"^'{codec}' is not a text encoding"):
            list(read_texts_in_chunks(str(path), encoding=codec))


def test_a_repeated_or_doubled_column_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "d.csv"
    csv_path.write_text("review,review,label\n好吃,难吃,pos\n", encoding="utf-8")
    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.table([["好吃"], ["难吃"], ["pos"]], names=["review", "review", "label"]),
                   parquet_path)  # fmt: skip
    for path in (csv_path, parquet_path):
        message = f"{path}: the text column 'review' appears more than once in the header"
        with pytest.raises(InputError, match=message):
            read_corpus(str(path))
        with pytest.raises(InputError, match=message):
            list(read_texts_in_chunks(str(path)))
    with pytest.raises(InputError, match="'label' cannot be both the text and the label"):
        read_corpus(str(csv_path), text_col="label", label_col="label")


def test_a_struct_text_column_is_refused_like_a_list(tmp_path: Path) -> None:
    for name, column in (("struct", [{"t": "好吃"}]), ("list", [["好吃"]])):
        path = tmp_path / f"{name}.parquet"
        pl.DataFrame({"text": column, "label": ["pos"]}).write_parquet(path)
        with pytest.raises(InputError, match=r"column 'text' has type .*expected text or numbers"):
            read_corpus(str(path))
        with pytest.raises(InputError, match=r"column 'text' has type .*expected text or numbers"):
            list(read_texts_in_chunks(str(path)))
