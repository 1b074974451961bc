"""The scoring summary's extras: confidence quantiles and accuracy against input labels."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from zhflow.flows import score_report as sr

LABELS = ["neg", "pos"]


def _predictions(path: Path, ids: list[str], labels: list[str | None], conf: list) -> Path:
    pl.DataFrame(
        {"id": ids, "label": labels, "confidence": conf},
        schema={"id": pl.Utf8, "label": pl.Utf8, "confidence": pl.Float32},
    ).write_parquet(path)
    return path


def test_confidence_quantiles_skip_rows_without_a_prediction(tmp_path: Path) -> None:
    conf = [i / 100 for i in range(1, 101)] + [None]
    out = _predictions(tmp_path / "p.parquet", [str(i) for i in range(101)], ["pos"] * 101, conf)
    stats = sr.confidence_summary(out)
    assert list(stats) == ["mean", "p05", "p25", "p50", "p75", "p95"]
    assert stats["p50"] == pytest.approx(0.505, abs=1e-4)
    assert stats["p05"] == pytest.approx(0.0595, abs=1e-4)
    assert stats["mean"] == pytest.approx(0.505, abs=1e-4)


@pytest.mark.parametrize("column", ["label", "Class"])
def test_accuracy_against_a_label_column(tmp_path: Path, column: str) -> None:
    source = tmp_path / "in.csv"
    truth = ["pos", "neg", "pos", "neg", ""]
    pl.DataFrame({"text": ["好", "差", "不错", "一般", "空"], column: truth}).write_csv(source)
    out = _predictions(tmp_path / "p.parquet", [str(i) for i in range(5)],
                       ["pos", "pos", "pos", "neg", "neg"], [0.9] * 5)  # fmt: skip
    result = sr.label_accuracy(out, str(source), LABELS)
    # The row with an empty label does not count: 3 of 4 right.
    assert result == {"column": column, "rows": 4, "correct": 3, "accuracy": 0.75}


def test_labels_the_model_does_not_know_count_as_wrong_and_are_named(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": ["好", "差", "还行", "一般"],
                  "label": ["pos", "neg", "neutral", "neutral"]}).write_csv(source)  # fmt: skip
    out = _predictions(tmp_path / "p.parquet", ["0", "1", "2", "3"],
                       ["pos", "pos", "pos", "neg"], [0.9] * 4)  # fmt: skip
    # As `zhflow evaluate` counts: 1 of 4 right, 1 of the 2 rows with a known label.
    assert sr.label_accuracy(out, str(source), LABELS) == {
        "column": "label", "rows": 4, "correct": 1, "accuracy": 0.25,
        "unknown_labels": {"neutral": 2}, "accuracy_known": 0.5}  # fmt: skip


def test_no_accuracy_against_labels_spelt_otherwise(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": ["好", "差"], "label": ["1", "0"]}).write_csv(source)
    out = _predictions(tmp_path / "p.parquet", ["0", "1"], ["pos", "neg"], [0.9, 0.8])
    assert sr.label_accuracy(out, str(source), LABELS) is None  # not "accuracy 0.0"


def test_parquet_and_unlabelled_inputs(tmp_path: Path) -> None:
    out = _predictions(tmp_path / "p.parquet", ["0", "1"], ["pos", None], [0.8, None])
    labelled = tmp_path / "in.parquet"
    pl.DataFrame({"review": ["好", ""], "category": ["pos", "neg"]}).write_parquet(labelled)
    assert sr.label_accuracy(out, str(labelled), LABELS) == {
        "column": "category", "rows": 1, "correct": 1, "accuracy": 1.0}  # fmt: skip
    plain = tmp_path / "plain.csv"
    pl.DataFrame({"text": ["好", "差"]}).write_csv(plain)
    assert sr.label_accuracy(out, str(plain), LABELS) is None


def test_lines_files_named_after_labels(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    ids = ["neg:1", "neg:2", "pos:1"]
    out = _predictions(tmp_path / "p.parquet", ids, ["neg", "pos", "pos"], [0.7] * 3)
    result = sr.label_accuracy(out, str(folder), LABELS, fmt="lines")
    assert result is not None and result["column"] == "file name"
    assert (result["correct"], result["rows"]) == (2, 3)
    other = _predictions(tmp_path / "q.parquet", ["day1:1"], ["pos"], [0.7])
    assert sr.label_accuracy(other, str(folder), LABELS, fmt="lines") is None
