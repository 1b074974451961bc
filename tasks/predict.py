"""Label a few texts with a bundle, in this process: ``zhflow predict`` and the evaluation.

No Prefect here (``zhflow predict`` must not pay for importing it or for a server); the
arithmetic is the scorer's (:func:`zhflow.tasks.score.predict_rows`), so a text gets the label and
confidence ``zhflow score`` would write for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import polars as pl

from zhflow.tasks.bundle import Bundle
from zhflow.tasks.errors import InputError
from zhflow.tasks.features import WORD
from zhflow.tasks.score import EMPTY_REASON, PROB_PREFIX, predict_rows
from zhflow.tasks.segment import segment_texts

#: Texts per call of the scorer: bounds memory on a long stdin.
PREDICT_CHUNK = 4096


def require_utf8(text: str, where: str) -> str:
    """``text`` as given, or one line naming ``where`` when it holds bytes that are not UTF-8
    (Python hands an argument or stdin line with bad bytes over as lone surrogates, which
    nothing downstream can encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text[exc.start : exc.end].encode("utf-8", "surrogateescape")
        raise InputError(
            f"{where}: not valid UTF-8 (byte 0x{raw[:1].hex()} at character {exc.start + 1})"
        ) from None
    return text


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
    try:
        for number, line in enumerate(lines, start=1):
            pending.append(require_utf8(line.rstrip("\r\n"), f"stdin line {number}"))
            if len(pending) >= chunk:
                yield from predict_texts(bundle, pending, batch_size)
                pending = []
    except UnicodeDecodeError as exc:  # a stream that decodes strictly
        raise InputError(f"stdin: not valid UTF-8 ({exc.reason})") from None
    if pending:
        yield from predict_texts(bundle, pending, batch_size)


def explain_texts(
    bundle: Bundle, texts: Sequence[str], labels: Sequence[str | None], top: int = 5
) -> list[list[dict[str, Any]]]:
    """Per text, the n-grams of the wide branch that weighed most for its predicted label.

    An n-gram's weight is its TF-IDF value in the text times its row of the wide layer for
    that label, minus the row's mean over labels (what moves that label against the others):
    ``[{"ngram", "kind" (word/char), "weight"}]``, strongest first. Needs a wide branch.
    """
    import torch

    model = bundle.model
    if bundle.featurizer is None or model.wide is None:
        raise ValueError("this bundle has no wide n-gram branch (trained with --no-wide)")
    table = model.wide.bag.weight.detach().to("cpu", torch.float32)  # (F, C)
    relative = (table - table.mean(dim=1, keepdim=True)).numpy()
    keys = {i: k for k, i in bundle.featurizer.index.items()}
    tokens = segment_texts(list(texts), bundle.tokenizer)
    out: list[list[dict[str, Any]]] = []
    for doc, label in zip(tokens, labels, strict=True):
        if label is None:
            out.append([])
            continue
        ids, weights = bundle.featurizer.bag(doc)
        contribution = weights * relative[ids, bundle.labels.index(label)]
        order = contribution.argsort()[::-1][:top]
        out.append([
            {"ngram": keys[int(ids[k])][2:],
             "kind": "word" if keys[int(ids[k])][0] == WORD else "char",
             "weight": round(float(contribution[k]), 4)}
            for k in order
        ])  # fmt: skip
    return out
