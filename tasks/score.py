"""Batch scoring: any corpus in, one prediction row per input row out, memory bounded.

The input is read in chunks; each chunk is segmented with the bundle's own tokenizer,
encoded with its vocab and predicted in batches, then appended to a Parquet file written
under a temporary name and moved into place at the end, so a failed run leaves no half file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tasks.bundle import Bundle
from tasks.corpus import read_texts_in_chunks
from tasks.encode import encode_tokens
from tasks.errors import InputError
from tasks.segment import segment_texts
from tasks.storage import atomic_path
from tasks.tables import vocab_to_index
from tasks.train import predict_proba

PROB_PREFIX = "prob_"
EMPTY_REASON = "empty text"


def prediction_schema(labels: list[str]) -> pa.Schema:
    """id, label, confidence, one prob_<label> per class, reason (why a row has no label)."""
    return pa.schema(
        [("id", pa.string()), ("label", pa.string()), ("confidence", pa.float32())]
        + [(f"{PROB_PREFIX}{label}", pa.float32()) for label in labels]
        + [("reason", pa.string())]
    )


def predict_chunk(
    bundle: Bundle,
    index: dict[str, int],
    chunk: pl.DataFrame,
    batch_size: int = 512,
    workers: int = 1,
) -> pl.DataFrame:
    """Predictions for one (id, text) chunk; empty or null texts get a null label and a reason."""
    texts = chunk["text"].to_list()
    has_text = np.array([bool(t and t.strip()) for t in texts], dtype=bool)
    kept = [t for t, keep in zip(texts, has_text, strict=True) if keep]
    probs = np.full((len(texts), len(bundle.labels)), np.nan, dtype=np.float32)
    if kept:
        tokens = segment_texts(kept, bundle.tokenizer, workers=workers)
        ids, lengths = encode_tokens(tokens, index, bundle.max_len)
        device = next(bundle.model.parameters()).device
        probs[has_text] = predict_proba(bundle.model, ids, lengths, batch_size, device)
    best = np.nan_to_num(probs, nan=-1.0).argmax(axis=1)
    labels = np.asarray(bundle.labels, dtype=object)[best]
    columns: dict[str, Any] = {
        "id": chunk["id"].cast(pl.Utf8),
        "label": pl.Series([lab if k else None for lab, k in zip(labels, has_text, strict=True)],
                           dtype=pl.Utf8),  # fmt: skip
        "confidence": pl.Series(np.where(has_text, probs.max(axis=1, initial=0.0), np.nan),
                                dtype=pl.Float32).fill_nan(None),  # fmt: skip
    }
    for j, label in enumerate(bundle.labels):
        columns[f"{PROB_PREFIX}{label}"] = pl.Series(probs[:, j], dtype=pl.Float32).fill_nan(None)
    columns["reason"] = pl.Series([None if k else EMPTY_REASON for k in has_text], dtype=pl.Utf8)
    return pl.DataFrame(columns)


def score_chunks(
    bundle: Bundle, chunks: Iterable[pl.DataFrame], batch_size: int = 512, workers: int = 1
) -> Iterator[pl.DataFrame]:
    index = vocab_to_index(bundle.vocab)
    for chunk in chunks:
        yield predict_chunk(bundle, index, chunk, batch_size, workers)


def score_file(
    bundle: Bundle,
    source: str | Path | list[str],
    output: str | Path,
    fmt: str | None = None,
    text_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    batch_size: int = 512,
    chunk_rows: int = 50_000,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score ``source`` into the Parquet file ``output``; return a summary dict."""
    output = Path(output)
    if output.is_dir():
        raise InputError(f"{output}: is a directory; --output takes a .parquet file path")
    if output.exists() and not output.is_file():  # a device or pipe: never replace it
        raise InputError(f"{output}: is not a regular file; --output takes a .parquet file path")
    started = time.perf_counter()
    schema = prediction_schema(bundle.labels)
    rows, label_counts, empty = 0, dict.fromkeys(bundle.labels, 0), 0
    chunks = read_texts_in_chunks(source, fmt, text_col, id_col, encoding, chunk_rows)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(output) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
            for frame in score_chunks(bundle, chunks, batch_size, workers):
                writer.write_table(frame.to_arrow().cast(schema))
                rows += frame.height
                empty += int(frame["label"].null_count())
                for label, n in frame["label"].drop_nulls().value_counts().iter_rows():
                    label_counts[label] += n
                if progress is not None:
                    progress(rows)
    except OSError as exc:
        # Only errors about the output location (a folder that is a file, a read-only or
        # pseudo file system, a full disk); anything else is not the user's output path.
        named = Path(exc.filename) if exc.filename is not None else None
        if named is not None and named.parent != output.parent and named not in (
            output.parent, *output.parent.parents
        ):
            raise
        why = exc.strerror or str(exc)
        if named is not None and isinstance(exc, FileExistsError | NotADirectoryError):
            why = f"{named} is a file, not a folder"
        raise InputError(f"{output}: cannot write ({why})") from None
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "output": str(output),
        "seconds": round(seconds, 3),
        "docs_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        "empty_texts": empty,
        "labels": label_counts,
        "bundle": str(bundle.path),
        "device": str(next(bundle.model.parameters()).device),
        "torch_threads": torch.get_num_threads(),
    }
