"""What a scoring run's summary adds about its predictions: confidence quantiles and, when the
input carries labels, the accuracy against them.

Both read the finished predictions file (and the input's label column) again, column by
column: the scorer itself stays as lean as it is. Inputs with labels: a table (csv, tsv,
jsonl, parquet) with a label column (``label``, ``class``... as in training), or ``lines``
files named after the model's labels (``pos.txt``, ``neg.txt``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from zhflow.tasks.corpus import LABEL_COLUMNS, detect_format, read_texts_in_chunks
from zhflow.tasks.errors import ZhflowError

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def confidence_summary(output: str | Path) -> dict[str, float]:
    """Mean and quantiles (p05 ... p95) of the predictions' confidence; {} without any."""
    conf = pl.col("confidence")
    exprs = [conf.mean().alias("mean")] + [
        conf.quantile(q, interpolation="linear").alias(f"p{round(q * 100):02d}") for q in QUANTILES
    ]
    row = pl.scan_parquet(output).select(exprs).collect().row(0, named=True)
    return {name: float(v) for name, v in row.items() if v is not None}


def _first_file(source: str | Sequence[str]) -> Path:
    return Path(source if isinstance(source, str) else source[0])


def input_columns(path: Path, fmt: str, encoding: str) -> list[str]:
    """Column names of a table input from its header (first line, schema, first record)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        if fmt == "jsonl":
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    return list(record) if isinstance(record, dict) else []
            return []
        header = next(csv.reader(f, delimiter="\t" if fmt == "tsv" else ","), [])
    return [name.strip() for name in header]


def label_column(columns: Sequence[str], text_col: str | None) -> str | None:
    """The input's label column as training would pick it (case-insensitive), if any."""
    lowered = {c.lower(): c for c in columns if c != text_col}
    return next((lowered[name] for name in LABEL_COLUMNS if name in lowered), None)


def _accuracy(
    truth: pl.Series, predicted: pl.Series, column: str, labels: Sequence[str]
) -> dict[str, Any] | None:
    """As ``zhflow evaluate`` counts (tasks/evaluate.py ``evaluate_labels``): a label the model
    does not know counts as wrong and is named in ``unknown_labels``, with ``accuracy_known``
    on the rest. None when no row's label is one the model knows (``1``/``0`` against a model
    of ``pos``/``neg``): an accuracy of 0 there says nothing about the model."""
    both = pl.DataFrame({"truth": truth, "predicted": predicted}).filter(
        pl.col("truth").is_not_null() & (pl.col("truth") != "") & pl.col("predicted").is_not_null()
    )
    is_known = both["truth"].is_in(list(labels))
    n_known = int(is_known.sum())
    if n_known == 0:
        return None
    correct = int((both["truth"] == both["predicted"]).sum())
    result: dict[str, Any] = {"column": column, "rows": both.height, "correct": correct,
                              "accuracy": correct / both.height}  # fmt: skip
    if n_known < both.height:
        unknown = both["truth"].filter(~is_known).value_counts()
        result["unknown_labels"] = dict(sorted(unknown.iter_rows()))
        result["accuracy_known"] = correct / n_known
    return result


def label_accuracy(
    output: str | Path,
    source: str | Sequence[str],
    labels: Sequence[str],
    fmt: str | None = None,
    text_col: str | None = None,
    encoding: str = "utf-8",
) -> dict[str, Any] | None:
    """Accuracy of the predictions against the input's own labels; None when it has none
    (or they cannot be read: the summary then just leaves the line out)."""
    predicted = pl.read_parquet(output, columns=["id", "label"])
    try:
        fmt = fmt or detect_format(_first_file(source))
        if fmt == "lines":  # label = file name: the id's "<stem>:" part
            stems = predicted["id"].str.split(":").list.first()
            return _accuracy(stems, predicted["label"], "file name", labels)
        column = label_column(input_columns(_first_file(source), fmt, encoding), text_col)
        if column is None:
            return None
        chunks = read_texts_in_chunks(
            source, fmt, text_col=column, encoding=encoding, empty_inputs=[]
        )  # skipped as scoring skipped them
        truth = pl.concat([chunk["text"] for chunk in chunks])
    except (ZhflowError, OSError, ValueError, pl.exceptions.PolarsError):
        return None
    if truth.len() != predicted.height:
        return None
    return _accuracy(truth, predicted["label"], column, labels)
