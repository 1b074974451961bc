"""Batch scoring: any corpus in, one prediction row per input row out, memory bounded.

The input is read in chunks; each chunk is segmented with the bundle's own tokenizer,
encoded with its vocab and predicted in batches, then appended to a Parquet file written
under a temporary name and moved into place at the end, so a failed run leaves no half file.

:func:`score_file` pipelines the work: one persistent pool of segmentation processes
(:class:`zhflow.tasks.segment.Segmenter`) for the whole run segments *and encodes* chunk k+1
(the workers send back compact id arrays, not token strings) while this process runs the
model on chunk k. The forward pass runs its batches on ``forward_threads`` Python threads
with one torch (intra-op) thread each: on a busy 2-core machine torch's own OpenMP threads
spin at their barriers and cost ~4x the CPU per document, while independent batches on
plain threads do not. At most ``depth`` chunks are in flight (the workers wait when they
are ahead), so memory stays flat in the number of rows. The output is identical to the
serial :func:`score_chunks` (same padded ids, same batches, same order).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from zhflow.models.wide import RaggedBags
from zhflow.tasks import catalog
from zhflow.tasks.bundle import Bundle
from zhflow.tasks.corpus import read_texts_in_chunks
from zhflow.tasks.encode import UNK_ID, pad_ragged
from zhflow.tasks.errors import InputError
from zhflow.tasks.features import NgramFeaturizer
from zhflow.tasks.segment import FlatIdEncoder, Segmenter, default_workers, segment_texts
from zhflow.tasks.storage import atomic_path, write_guard
from zhflow.tasks.tables import vocab_to_index
from zhflow.tasks.train import predict_logits

PROB_PREFIX = "prob_"
EMPTY_REASON = "empty text"
#: Chunks in flight in the pipelined scorer: one being predicted, one being segmented.
PIPELINE_DEPTH = 2


def prediction_schema(labels: list[str]) -> pa.Schema:
    """id, label, confidence, one prob_<label> per class, reason (why a row has no label)."""
    return pa.schema(
        [("id", pa.string()), ("label", pa.string()), ("confidence", pa.float32())]
        + [(f"{PROB_PREFIX}{label}", pa.float32()) for label in labels]
        + [("reason", pa.string())]
    )


def _has_text(texts: list[str | None]) -> np.ndarray:
    return np.array([bool(t and t.strip()) for t in texts], dtype=bool)


def _prediction_frame(
    bundle: Bundle, chunk: pl.DataFrame, has_text: np.ndarray, probs: np.ndarray
) -> pl.DataFrame:
    """The output rows of one chunk from its class probabilities (NaN rows = no text)."""
    best = np.nan_to_num(probs, nan=-1.0).argmax(axis=1)
    labels = np.asarray(bundle.labels, dtype=object)[best]
    columns: dict[str, Any] = {
        "id": chunk["id"].cast(pl.Utf8),
        "label": pl.Series(
            [lab if k else None for lab, k in zip(labels, has_text, strict=True)], dtype=pl.Utf8
        ),
        "confidence": pl.Series(
            np.where(has_text, probs.max(axis=1, initial=0.0), np.nan), dtype=pl.Float32
        ).fill_nan(None),
    }
    for j, label in enumerate(bundle.labels):
        columns[f"{PROB_PREFIX}{label}"] = pl.Series(probs[:, j], dtype=pl.Float32).fill_nan(None)
    columns["reason"] = pl.Series([None if k else EMPTY_REASON for k in has_text], dtype=pl.Utf8)
    return pl.DataFrame(columns)


def predict_chunk(
    bundle: Bundle,
    index: dict[str, int],
    chunk: pl.DataFrame,
    batch_size: int = 512,
    workers: int = 1,
) -> pl.DataFrame:
    """Predictions for one (id, text) chunk; empty or null texts get a null label and a reason."""
    texts = chunk["text"].to_list()
    has_text = _has_text(texts)
    kept = [t for t, keep in zip(texts, has_text, strict=True) if keep]
    probs = np.full((len(texts), len(bundle.labels)), np.nan, dtype=np.float32)
    if kept:
        tokens = segment_texts(kept, bundle.tokenizer, workers=workers)
        encoder = DocEncoder(FlatIdEncoder(index, bundle.max_len, UNK_ID), bundle.featurizer)
        probs[has_text] = _token_probs(bundle, encoder, tokens, batch_size)
    return _prediction_frame(bundle, chunk, has_text, probs)


def _token_probs(
    bundle: Bundle, encoder: DocEncoder, tokens: list[list[str]], batch_size: int
) -> np.ndarray:
    """The bundle's probabilities for segmented texts: the scorer's encoder and forward pass."""
    ids, lengths, bags = assemble([encoder(tokens)], bundle.max_len)
    bundle.model.eval()
    return forward_probs(bundle.model, ids, lengths, batch_size, None, bags)


class DocEncoder:
    """A picklable ``post`` for :class:`Segmenter`: token lists → ragged ids and, for a model
    with a wide branch, ragged n-gram bags, computed in the worker (no polars or torch)."""

    def __init__(self, ids: FlatIdEncoder, bags: NgramFeaturizer | None) -> None:
        self.ids = ids
        self.bags = bags

    def __call__(self, docs: list[list[str]]) -> tuple[Any, ...]:
        flat, lengths = self.ids(docs)
        return (flat, lengths, self.bags(docs) if self.bags else None)


def doc_encoder(bundle: Bundle) -> DocEncoder:
    ids = FlatIdEncoder(vocab_to_index(bundle.vocab), bundle.max_len, UNK_ID)
    return DocEncoder(ids, bundle.featurizer)


def assemble(parts: list[Any], max_len: int) -> tuple[np.ndarray, np.ndarray, RaggedBags | None]:
    """Padded ids, lengths and bags of the ``DocEncoder`` outputs of consecutive shards."""
    lengths = np.concatenate([p[1] for p in parts])
    ids = pad_ragged(np.concatenate([p[0] for p in parts]), lengths, max_len)
    if parts[0][2] is None:
        return ids, lengths, None
    bags = tuple(np.concatenate([p[2][k] for p in parts]) for k in range(3))
    return ids, lengths, ragged_bags(bags)


def ragged_bags(bags: tuple[np.ndarray, ...]) -> RaggedBags:
    return RaggedBags(*(torch.from_numpy(np.ascontiguousarray(a)) for a in bags))


def score_chunks(
    bundle: Bundle, chunks: Iterable[pl.DataFrame], batch_size: int = 512, workers: int = 1
) -> Iterator[pl.DataFrame]:
    """The serial path: each chunk segmented (a new pool per chunk), then predicted."""
    index = vocab_to_index(bundle.vocab)
    for chunk in chunks:
        yield predict_chunk(bundle, index, chunk, batch_size, workers)


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``; elsewhere a no-op).

    Forward threads allocate activation buffers of every size in their own malloc arenas;
    without a trim, freed-but-kept memory crept up chunk after chunk (~10 MB per chunk).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None

#: glibc's mallopt parameter M_MMAP_THRESHOLD, and the value the scorer sets: blocks of 8 MB
#: or more (activation buffers) always come from mmap and go back to the OS when freed.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 8 << 20


def _fix_mmap_threshold() -> None:
    """Stop glibc raising its mmap threshold as big buffers are freed (it goes up to 32 MB):
    those buffers then come from the heap and fragment it, and scoring 1M rows showed a peak
    RSS 37% above 100k rows. Fixed at 8 MB, the peak stayed within 3% from 100k to 400k rows
    (about 10-15% slower: fresh pages for each big buffer). Honours ``MALLOC_MMAP_THRESHOLD_``
    if the user set it; a no-op off glibc."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        pass


def forward_probs(
    model: torch.nn.Module,
    ids: np.ndarray,
    lengths: np.ndarray,
    batch_size: int = 512,
    executor: ThreadPoolExecutor | None = None,
    bags: RaggedBags | None = None,
) -> np.ndarray:
    """Softmax probabilities (N, C) float32 of ``zhflow.tasks.train.predict_logits`` (the one
    inference loop), its batches on ``executor``'s threads. The model must be in eval mode."""
    device = next(model.parameters()).device
    logits = predict_logits(model, torch.as_tensor(ids), torch.as_tensor(lengths), batch_size,
                            device, bags, executor=executor)  # fmt: skip
    return F.softmax(logits, dim=-1).numpy().astype(np.float32, copy=False)


def score_chunks_pipelined(
    bundle: Bundle,
    chunks: Iterable[pl.DataFrame],
    batch_size: int = 512,
    workers: int = 1,
    depth: int = PIPELINE_DEPTH,
    min_parallel: int | None = None,
    forward_threads: int = 1,
) -> Generator[pl.DataFrame, None, None]:
    """Like :func:`score_chunks`, pipelined over one persistent pool of ``workers`` processes.

    Up to ``depth`` chunks are submitted to the pool before the oldest is predicted here, so
    segmentation of the next chunk overlaps the model's forward pass over this one; the
    forward pass runs its batches on ``forward_threads`` threads (:func:`forward_probs`).
    Chunks smaller than ``min_parallel`` texts (default: ``zhflow.tasks.segment.MIN_PARALLEL``)
    are segmented in this process. Close the generator (or exhaust it) to stop the workers.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if forward_threads < 1:
        raise ValueError(f"forward_threads must be >= 1, got {forward_threads}")
    encoder = doc_encoder(bundle)
    n_labels = len(bundle.labels)
    extra = {} if min_parallel is None else {"min_parallel": min_parallel}
    bundle.model.eval()
    with (
        Segmenter(bundle.tokenizer, workers, post=encoder, **extra) as segmenter,
        ThreadPoolExecutor(forward_threads, thread_name_prefix="zhflow-forward") as executor,
    ):
        pending: deque[tuple[pl.DataFrame, np.ndarray, Any]] = deque()

        def finish() -> pl.DataFrame:
            chunk, has_text, job = pending.popleft()
            probs = np.full((chunk.height, n_labels), np.nan, dtype=np.float32)
            if job is not None:
                parts = job.result()
                ids, lengths, bags = assemble(parts, bundle.max_len)
                pool = executor if forward_threads > 1 else None
                probs[has_text] = forward_probs(bundle.model, ids, lengths, batch_size, pool, bags)
                del ids, parts, bags
                _trim_heap()
            return _prediction_frame(bundle, chunk, has_text, probs)

        try:
            for chunk in chunks:
                texts = chunk["text"].to_list()
                has_text = _has_text(texts)
                kept = [t for t, keep in zip(texts, has_text, strict=True) if keep]
                pending.append((chunk, has_text, segmenter.submit(kept) if kept else None))
                if len(pending) >= depth:
                    yield finish()
            while pending:
                yield finish()
        finally:
            for _, _, job in pending:
                if job is not None:
                    job.cancel()


def forward_threads_for(device: torch.device) -> int:
    """Threads for the forward pass: one per core on the CPU, one for an accelerator."""
    return default_workers() if device.type == "cpu" else 1


def _check_output(output: Path) -> None:
    if output.is_dir():
        raise InputError(f"{output}: is a directory; --output takes a .parquet file path")
    if output.exists() and not output.is_file():  # a device or pipe: never replace it
        raise InputError(f"{output}: is not a regular file; --output takes a .parquet file path")


@contextlib.contextmanager
def _output_errors(output: Path) -> Iterator[None]:
    """Errors about the output location → one-line InputError; anything else passes
    (zhflow.tasks.storage.write_guard: paths compared absolute, so a relative --output works)."""
    with write_guard(output):
        yield


def write_predictions(
    frames: Iterable[pl.DataFrame],
    output: Path,
    labels: list[str],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write prediction frames (one row group each) to ``output`` atomically; return counts.

    The one writer of both scoring paths (local and sharded), so both write the same bytes.
    """
    schema = prediction_schema(labels)
    rows, empty, label_counts = 0, 0, dict.fromkeys(labels, 0)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for frame in frames:
            writer.write_table(frame.to_arrow().cast(schema))
            rows += frame.height
            empty += int(frame["label"].null_count())
            for label, n in frame["label"].drop_nulls().value_counts().iter_rows():
                label_counts[label] += n
            if progress is not None:
                progress(rows)
    return {"rows": rows, "empty_texts": empty, "labels": label_counts}


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
    torch_threads: int = 1,
    depth: int = PIPELINE_DEPTH,
    forward_threads: int | None = None,
) -> dict[str, Any]:
    """Score ``source`` into the Parquet file ``output``; return a summary dict.

    ``workers`` segmentation processes (one persistent pool, see
    :func:`score_chunks_pipelined`), ``forward_threads`` threads running model batches
    (default: one per core on the CPU) with ``torch_threads`` intra-op threads in this
    process meanwhile (restored afterwards), ``depth`` chunks in flight at most.
    """
    output = Path(output)
    _check_output(output)
    _fix_mmap_threshold()
    started = time.perf_counter()
    empty_inputs: list[Path] = []
    chunks = read_texts_in_chunks(source, fmt, text_col, id_col, encoding, chunk_rows,
                                  empty_inputs)  # fmt: skip
    device = next(bundle.model.parameters()).device
    fwd_threads = forward_threads or forward_threads_for(device)
    previous_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(torch_threads)
        frames = score_chunks_pipelined(
            bundle, chunks, batch_size, workers, depth, forward_threads=fwd_threads
        )
        with contextlib.closing(frames), _output_errors(output):
            counts = write_predictions(frames, output, bundle.labels, progress)
    finally:
        torch.set_num_threads(previous_threads)
    return _summary(counts, output, bundle, started, device, empty_inputs,
                    torch_threads=torch_threads, forward_threads=fwd_threads,
                    workers=workers)  # fmt: skip


def _summary(counts: dict[str, Any], output: Path, bundle: Bundle, started: float,
             device: torch.device | str, empty_inputs: list[Path],
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    seconds = time.perf_counter() - started
    rows = counts["rows"]
    return {
        "rows": rows,
        "output": str(output),
        "seconds": round(seconds, 3),
        "docs_per_s": round(rows / seconds, 1) if seconds > 0 else None,
        "empty_texts": counts["empty_texts"],
        "labels": counts["labels"],
        "empty_inputs": [str(path) for path in empty_inputs],  # skipped: no rows
        "bundle": str(bundle.path),
        "device": str(device),
        **extra,
    }


# --------------------------------------------------------------------------- shards on storage

#: Bundles loaded in this process (a Dask worker scores many shards with one bundle).
_BUNDLES: dict[tuple[str, float], Bundle] = {}


def _worker_bundle(path: str) -> Bundle:
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.train import pick_device

    key = (str(Path(path).resolve()), (Path(path) / catalog.CONFIG_JSON).stat().st_mtime)
    if key not in _BUNDLES:
        _BUNDLES.clear()  # one bundle at a time: a new one replaces the old
        _BUNDLES[key] = load_bundle(path, device=pick_device("auto"))
    return _BUNDLES[key]


def predict_rows(bundle: Bundle, chunk: pl.DataFrame, batch_size: int = 512) -> pl.DataFrame:
    """Predictions for one (id, text) chunk, all in this process and thread.

    The arithmetic of :func:`score_chunks_pipelined` (same encoder, padding, batches and
    torch threads), so a chunk scored here gives the bytes a local run writes for it.
    """
    texts = chunk["text"].to_list()
    has_text = _has_text(texts)
    probs = np.full((len(texts), len(bundle.labels)), np.nan, dtype=np.float32)
    kept = [t for t, keep in zip(texts, has_text, strict=True) if keep]
    if kept:
        tokens = segment_texts(kept, bundle.tokenizer, workers=1)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # as the local scorer's forward threads
        try:
            probs[has_text] = _token_probs(bundle, doc_encoder(bundle), tokens, batch_size)
        finally:
            torch.set_num_threads(previous)
    return _prediction_frame(bundle, chunk, has_text, probs)


def score_parquet_shard(
    bundle_path: str, in_path: str, out_path: str, batch_size: int = 512
) -> int:
    """Score one shard file (``id``, ``text``) into a prediction Parquet; return its rows."""
    _fix_mmap_threshold()
    bundle = _worker_bundle(bundle_path)
    frame = predict_rows(bundle, pl.read_parquet(in_path), batch_size)
    with atomic_path(Path(out_path)) as tmp:
        pq.write_table(frame.to_arrow().cast(prediction_schema(bundle.labels)), str(tmp))
    return frame.height


def score_file_sharded(
    bundle: Bundle,
    source: str | Path | list[str],
    output: str | Path,
    run_shards: Callable[[Iterable[tuple[str, str]]], Iterator[Any]],
    fmt: str | None = None,
    text_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """:func:`score_file` with each chunk scored elsewhere (e.g. on Dask workers).

    Each chunk is written to a shard file beside ``output`` (storage the workers share);
    ``run_shards`` takes an iterable of ``(in_path, out_path)`` pairs, scores each (with
    :func:`score_parquet_shard`) and yields as each finishes, in order, with a bounded
    number in flight. The parts are then appended to ``output`` by the writer of
    :func:`score_file`, so the file is the same, byte for byte.
    """
    import shutil
    import uuid

    output = Path(output)
    _check_output(output)
    started = time.perf_counter()
    empty_inputs: list[Path] = []
    chunks = read_texts_in_chunks(source, fmt, text_col, id_col, encoding, chunk_rows,
                                  empty_inputs)  # fmt: skip
    with _output_errors(output):
        output.parent.mkdir(parents=True, exist_ok=True)
        # Absolute: the workers get these paths, and a remote worker's cwd is not ours.
        shard_dir = output.absolute().parent / f".{output.name}.shards-{uuid.uuid4().hex[:12]}"
        shard_dir.mkdir()

    def shard_files() -> Iterator[tuple[str, str]]:
        for k, chunk in enumerate(chunks):
            in_path = shard_dir / f"in-{k:06d}.parquet"
            with atomic_path(in_path) as tmp:
                chunk.write_parquet(tmp)
            yield str(in_path), str(shard_dir / f"out-{k:06d}.parquet")

    def frames() -> Iterator[pl.DataFrame]:
        pairs: deque[tuple[str, str]] = deque()
        for _ in run_shards(_remember(shard_files(), pairs)):
            in_path, out_path = pairs.popleft()
            yield pl.read_parquet(out_path)
            Path(in_path).unlink(missing_ok=True)
            Path(out_path).unlink(missing_ok=True)

    try:
        with _output_errors(output):
            counts = write_predictions(frames(), output, bundle.labels, progress)
    finally:
        shutil.rmtree(shard_dir, ignore_errors=True)
    device = next(bundle.model.parameters()).device
    return _summary(counts, output, bundle, started, device, empty_inputs, sharded=True)


def _remember(items: Iterator[tuple[str, str]], into: deque) -> Iterator[tuple[str, str]]:
    for item in items:
        into.append(item)
        yield item
