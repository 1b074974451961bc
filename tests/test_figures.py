"""Issue 13: correct figures. Absolute row numbers across chunks, one reading of a TSV for
training and scoring, a clear refusal for labels too small to split, a warning for tiny
corpora. (Macro-F1 over present classes: tests/test_evaluate.py.)"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from zhflow.tasks.corpus import (
    FEW_TEST_ROWS,
    MIN_TEXTS_PER_LABEL,
    check_splits,
    read_corpus,
    read_texts_in_chunks,
    split_corpus,
)
from zhflow.tasks.errors import InputError


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("chunk_rows", [5, 3, 1000])
def test_null_id_row_number_is_absolute_across_chunks(
    tmp_path: Path, fmt: str, chunk_rows: int
) -> None:
    ids = [str(i) for i in range(12)]
    ids[7] = None  # a missing id, on purpose
    frame = pl.DataFrame({"id": ids, "text": [f"文本{i}" for i in range(12)]})
    path = tmp_path / f"in.{fmt}"
    frame.write_parquet(path) if fmt == "parquet" else frame.write_csv(path)
    with pytest.raises(InputError, match=r"in\.\w+: row 7 has no id"):
        list(read_texts_in_chunks(str(path), id_col="id", chunk_rows=chunk_rows))
    with pytest.raises(InputError, match="row 7 has no id"):
        read_corpus(str(path), id_col="id", require_labels=False)


def _stray_quote_tsv(path: Path, rows: int = 1000, at: int = 500) -> Path:
    lines = ["text\tlabel"] + [f"第{i}条评论很好\t{'pos' if i % 2 else 'neg'}" for i in range(rows)]
    lines[at + 1] = '"引号开头的评论\tpos'  # a quote that opens a field and never closes
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk_rows", [7, 100, 999, 50_000])
def test_tsv_with_a_stray_quote_reads_the_same_in_training_and_scoring(
    tmp_path: Path, chunk_rows: int
) -> None:
    path = _stray_quote_tsv(tmp_path / "stray.tsv")
    trained_on = read_corpus(str(path))["text"].to_list()
    scored = pl.concat(list(read_texts_in_chunks(str(path), chunk_rows=chunk_rows)))
    assert scored["text"].to_list() == trained_on
    assert '"引号开头的评论' in trained_on and len(trained_on) == 1000


def test_scoring_a_tsv_with_a_stray_quote(tmp_path: Path) -> None:
    from tests.helpers import train_tiny_bundle
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.score import score_file

    bundle = load_bundle(train_tiny_bundle(tmp_path / "bundle", epochs=1))
    path = _stray_quote_tsv(tmp_path / "stray.tsv", rows=300, at=250)
    summary = score_file(bundle, str(path), tmp_path / "p.parquet", chunk_rows=50)
    assert summary["rows"] == 300


def test_labels_too_small_to_split_are_named_with_what_to_do() -> None:
    # 300 labels with 2 rows each: nothing can reach valid or test.
    frame = pl.DataFrame(
        {"text": [f"文本{i}" for i in range(600)], "label": [f"类{i // 2}" for i in range(600)]}
    )
    with pytest.raises(InputError) as info:
        check_splits(split_corpus(frame, 42), "many.csv")
    message = str(info.value)
    assert message.startswith("many.csv: no rows for the valid split: 300 of 300 labels")
    assert f"fewer than {MIN_TEXTS_PER_LABEL} distinct texts" in message
    assert "'类0'" in message and "and 292 more" in message
    assert "give each label at least 3 rows" in message and "drop or merge" in message
    assert "\n" not in message


def test_tiny_corpus_warns_that_its_figures_say_little() -> None:
    frame = pl.DataFrame({"text": [f"t{i}" for i in range(5)], "label": list("aaabb")})
    warnings = check_splits(split_corpus(frame, 42), "five.csv")
    assert any("'b'" in w and "never validated or tested" in w for w in warnings), warnings
    assert any(w.startswith("only 1 test row:") for w in warnings), warnings
    big = pl.DataFrame({"text": [f"t{i}" for i in range(400)], "label": ["a", "b"] * 200})
    assert check_splits(split_corpus(big, 42), "big.csv") == []
    assert FEW_TEST_ROWS == 20  # documented in docs/RELIABILITY.md


@pytest.mark.prefect
def test_cli_refuses_too_small_labels_at_ingest(prefect_server, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from zhflow.flows.cli import main

    src = tmp_path / "many.csv"
    pl.DataFrame(
        {"text": [f"文本{i}" for i in range(60)], "label": [f"类{i // 2}" for i in range(60)]}
    ).write_csv(src)
    result = CliRunner().invoke(
        main, ["run", str(src), "--workdir", str(tmp_path / "w"), "--tokenizer", "char",
               "--until", "tokenize", "--processes", "1"],
    )  # fmt: skip
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(lines) == 1 and "many.csv: no rows for the valid split: 30 of 30 labels" in lines[0]
