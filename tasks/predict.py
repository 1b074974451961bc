"""Label a few texts with a bundle, in this process: ``zhflow predict`` and the evaluation.

No Prefect here (``zhflow predict`` must not pay for importing it or for a server); the
arithmetic is the scorer's (:func:`tasks.score.predict_rows`), so a text gets the label and
confidence ``zhflow score`` would write for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from tasks.bundle import Bundle
from tasks.score import EMPTY_REASON, PROB_PREFIX, predict_rows

#: Texts per call of the scorer: bounds memory on a long stdin.
PREDICT_CHUNK = 4096


def predict_frame(
    bundle: Bundle, texts: Sequence[str | None], batch_size: int = 512
) -> pl.DataFrame:
    """The scorer's output rows (id = position, label, confidence, prob_<label>, reason)."""
    chunk = pl.DataFrame(
        {"id": [str(i) for i in range(len(texts))], "text": list(texts)},
        schema={"id": pl.Utf8, "text": pl.Utf8},
    )
    return predict_rows(bundle, chunk, batch_size)


def predict_texts(
    bundle: Bundle, texts: Sequence[str | None], batch_size: int = 512
) -> list[dict[str, Any]]:
    """One ``{"text", "label", "confidence", "probs", ["reason"]}`` per text, in order.

    An empty text has a null label and confidence and ``reason: "empty text"``."""
    frame = predict_frame(bundle, texts, batch_size)
    prob_cols = [f"{PROB_PREFIX}{label}" for label in bundle.labels]
    out = []
    for text, row in zip(texts, frame.iter_rows(named=True), strict=True):
        item: dict[str, Any] = {
            "text": text,
            "label": row["label"],
            "confidence": None if row["confidence"] is None else round(row["confidence"], 6),
        }
        if row["label"] is None:
            item["reason"] = row["reason"] or EMPTY_REASON
        else:
            item["probs"] = {
                label: round(row[col], 6)
                for label, col in zip(bundle.labels, prob_cols, strict=True)
            }
        out.append(item)
    return out


def predict_stream(
    bundle: Bundle, lines: Iterator[str], batch_size: int = 512, chunk: int = PREDICT_CHUNK
) -> Iterator[dict[str, Any]]:
    """:func:`predict_texts` over a stream of lines (trailing newline removed), chunk by chunk."""
    pending: list[str] = []
    for line in lines:
        pending.append(line.rstrip("\r\n"))
        if len(pending) >= chunk:
            yield from predict_texts(bundle, pending, batch_size)
            pending = []
    if pending:
        yield from predict_texts(bundle, pending, batch_size)
