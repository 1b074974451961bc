"""Chinese word segmentation: tokenizer specs, normalisation, sharded multi-process segmentation.

Pure functions, no Prefect. A :class:`TokenizerSpec` says how text becomes tokens; its
:meth:`TokenizerSpec.identity` is everything that decides the tokens (engine and version,
mode, flags, and the *content* of the user dictionary and stopword files) and is what caches
and model bundles are keyed on.

Engines:

- ``jieba`` (default): a private ``jieba.Tokenizer`` per spec (never the global one), with the
  user dictionary loaded into it; ``precise`` = ``lcut``, ``search`` = ``lcut_for_search``.
- ``char``: one token per character.
- ``rjieba``: jieba-rs, ~10x faster, ~98.7% of documents identical to jieba; no user
  dictionary (``pip install zhflow[fast]``).
- ``thulac``: THULAC segmentation standard, slow (``pip install zhflow[thulac]``).

:func:`segment_texts` spreads large inputs over worker processes (``forkserver``, else
``spawn``; never ``fork``, which can deadlock a parent holding torch/Prefect threads). Each
worker builds its tokenizer once; shards are contiguous and balanced by characters; results
come back as one separator-joined string per shard (much cheaper to pickle than lists of
small strings) and are reassembled in input order, identical to a one-process run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import logging
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zhflow.tasks.errors import InputError
from zhflow.tasks.storage import atomic_path, sha256_file, sha256_json

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "ENGINES",
    "MODES",
    "FlatIdEncoder",
    "SegmentJob",
    "Segmenter",
    "TokenizerSpec",
    "default_workers",
    "load_stopwords",
    "make_tokenizer",
    "normalize_text",
    "segment_frame",
    "segment_texts",
]

ENGINES = ("jieba", "char", "thulac", "rjieba")
MODES = ("precise", "search")
#: Engines that honour ``mode`` and ``hmm``.
_JIEBA_LIKE = ("jieba", "rjieba")
#: Bump when zhflow's own token logic (normalisation, filtering) changes the tokens.
SCHEME_VERSION = 1
#: Below this many texts one process is faster than starting workers (~1 s each).
MIN_PARALLEL = 2000
#: Shards per worker: progress granularity and load balance at the tail.
SHARDS_PER_WORKER = 16
_MIN_SHARD_TEXTS = 64

_INSTALL_HINT = {"thulac": "pip install zhflow[thulac]", "rjieba": "pip install zhflow[fast]"}
_PACKAGE = {"jieba": "jieba", "thulac": "thulac", "rjieba": "rjieba"}

Tokenizer = Callable[[str], list[str]]


# --------------------------------------------------------------------------- normalisation

# Full-width ASCII variants U+FF01..U+FF5E -> U+0021..U+007E, ideographic space -> space.
# Deliberately not NFKC: NFKC also rewrites CJK compatibility ideographs, radicals and
# circled/parenthesised forms, which would change Chinese text.
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH[0x3000] = 0x20
_WS_RUN = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Full-width ASCII → half-width, lower-case, whitespace runs → one space, ends stripped.

    Chinese punctuation other than the full-width ASCII block (、。「」《》…) is kept as is.
    """
    text = text.translate(_FULLWIDTH).lower()
    return _WS_RUN.sub(" ", text).strip()


def load_stopwords(path: str | os.PathLike[str]) -> frozenset[str]:
    """One word per line, UTF-8 (a BOM is allowed); blank lines ignored, lines stripped."""
    try:
        raw = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"stopword file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"stopword file is not UTF-8: {path} ({e.reason})") from None
    except OSError as e:
        raise InputError(f"cannot read stopword file {path}: {e.strerror or e}") from None
    return frozenset(w for line in raw.splitlines() if (w := line.strip()))


# --------------------------------------------------------------------------- spec


def _engine_version(engine: str) -> str | None:
    if engine == "char":
        return None
    if engine == "jieba":
        import jieba

        return str(jieba.__version__)
    try:
        return importlib.metadata.version(_PACKAGE[engine])
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"tokenizer engine {engine!r} is not installed: {_INSTALL_HINT[engine]}"
        ) from None


def _import_engine(engine: str) -> Any:
    try:
        return importlib.import_module(_PACKAGE[engine])
    except ImportError:
        raise InputError(
            f"tokenizer engine {engine!r} is not installed: {_INSTALL_HINT[engine]}"
        ) from None


def _check_file(kind: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise InputError(f"{kind} must be a file path, got {type(value).__name__}")
    path = os.fspath(value)
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "not found"
        raise InputError(f"{kind} file {what}: {path}")
    return path


@dataclass(frozen=True)
class TokenizerSpec:
    """How text becomes tokens. Validated on construction (``InputError`` on a bad value)."""

    engine: str = "jieba"
    mode: str = "precise"
    hmm: bool = True
    user_dict: str | None = None
    stopwords: str | None = None
    normalize: bool = True
    drop_whitespace: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(
                f"unknown tokenizer engine {self.engine!r} (choose from {', '.join(ENGINES)})"
            )
        if self.mode not in MODES:
            raise InputError(
                f"unknown segmentation mode {self.mode!r} (choose from {', '.join(MODES)})"
            )
        if self.mode != "precise" and self.engine not in _JIEBA_LIKE:
            raise InputError(f"mode {self.mode!r} needs the jieba engine, not {self.engine!r}")
        for name in ("hmm", "normalize", "drop_whitespace"):
            if not isinstance(getattr(self, name), bool):
                value = getattr(self, name)
                raise InputError(f"tokenizer option {name} must be true or false, got {value!r}")
        if self.user_dict is not None and self.engine != "jieba":
            raise InputError(
                f"a user dictionary needs the jieba engine ({self.engine!r} cannot load one)"
            )
        object.__setattr__(self, "user_dict", _check_file("user dictionary", self.user_dict))
        object.__setattr__(self, "stopwords", _check_file("stopword", self.stopwords))

    def identity(self) -> dict[str, Any]:
        """Everything that decides the tokens, and nothing else (no paths).

        Options an engine ignores are reported as None, so equivalent specs share caches.
        The user dictionary and stopword files count by content (sha256).
        """
        jieba_like = self.engine in _JIEBA_LIKE
        return {
            "scheme": SCHEME_VERSION,
            "engine": self.engine,
            "engine_version": _engine_version(self.engine),
            "mode": self.mode if jieba_like else None,
            "hmm": self.hmm if jieba_like else None,
            "normalize": self.normalize,
            "drop_whitespace": self.drop_whitespace,
            "user_dict_sha256": _hash_or_none("user dictionary", self.user_dict),
            "stopwords_sha256": _hash_or_none("stopword", self.stopwords),
        }

    def digest(self) -> str:
        """sha256 of :meth:`identity`: a short cache key."""
        return sha256_json(self.identity())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerSpec:
        if not isinstance(data, Mapping):
            raise InputError(f"tokenizer spec must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown tokenizer option(s): {', '.join(map(str, unknown))}")
        return cls(**dict(data))


def _hash_or_none(kind: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        return sha256_file(path)
    except OSError as e:
        raise InputError(f"cannot read {kind} file {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------- tokenizers


def _quiet_jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." / "Loading model ..."
    return jieba


# Loaded engines, per process: a jieba dictionary costs ~1 s to load, a thulac model ~3 s.
# Keyed by what the loaded object depends on; mode and HMM are per-call arguments.
_ENGINES: dict[tuple[str, str | None, str | None], Any] = {}
_ENGINES_MAX = 4
#: False in the warm worker (flows/worker.py): it loads jieba's full dictionary once for all
#: its commands, and must not hold the index's SQLite connection across a fork.
USE_JIEBA_INDEX = True


def _load_engine(engine: str, user_dict: str | None) -> Any:
    key = (engine, user_dict, _hash_or_none("user dictionary", user_dict))
    obj = _ENGINES.get(key)
    if obj is not None:
        return obj
    if engine == "jieba":
        from zhflow.tasks.jieba_index import indexed_tokenizer

        jieba = _quiet_jieba()
        # The same dictionary, read from an index until a job proves large (~1 s saved for
        # a few texts; identical tokens): tasks/jieba_index.py.
        obj = indexed_tokenizer(jieba) if USE_JIEBA_INDEX else None
        if obj is None:
            obj = jieba.Tokenizer()
            obj.initialize()
        if user_dict is not None:
            try:
                obj.load_userdict(user_dict)
            except (ValueError, UnicodeDecodeError, OSError) as e:
                raise InputError(f"bad user dictionary {user_dict}: {e}") from None
    elif engine == "thulac":
        thulac = _import_engine("thulac")
        with contextlib.redirect_stdout(io.StringIO()):  # "Model loaded succeed"
            obj = thulac.thulac(seg_only=True)
    else:
        obj = _import_engine(engine)
    if len(_ENGINES) >= _ENGINES_MAX:
        _ENGINES.pop(next(iter(_ENGINES)))
    _ENGINES[key] = obj
    return obj


def _engine_cut(spec: TokenizerSpec) -> Tokenizer:
    """The raw engine: text (already normalised) → tokens, before any filtering."""
    if spec.engine == "char":
        return list
    engine = _load_engine(spec.engine, spec.user_dict)
    hmm = spec.hmm
    if spec.engine == "jieba":
        if spec.mode == "search":
            return lambda text: engine.lcut_for_search(text, HMM=hmm)
        return lambda text: engine.lcut(text, HMM=hmm)
    if spec.engine == "rjieba":
        cut = engine.cut_for_search if spec.mode == "search" else engine.cut
        return lambda text: list(cut(text, hmm=hmm))
    if spec.engine == "thulac":
        return lambda text: engine.cut(text, text=True).split()
    raise InputError(f"unknown tokenizer engine {spec.engine!r}")  # pragma: no cover


def make_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Build ``text -> tokens`` for a spec: normalise, segment, drop whitespace and stopwords.

    The first jieba tokenizer for a user dictionary loads jieba's dictionary (~1 s; later
    ones in the same process reuse it). Stopwords are normalised like the text when
    ``spec.normalize`` is on.
    """
    _precheck(spec)
    cut = _engine_cut(spec)
    normalize = spec.normalize
    drop_ws = spec.drop_whitespace
    stop: frozenset[str] = frozenset()
    if spec.stopwords is not None:
        stop = load_stopwords(spec.stopwords)
        if normalize:
            stop = frozenset(w for s in stop if (w := normalize_text(s)))

    def tokenize(text: str) -> list[str]:
        if not text:
            return []
        if normalize:
            text = normalize_text(text)
            if not text:
                return []
        tokens = cut(text)
        if drop_ws:
            tokens = [t for t in tokens if t and not t.isspace()]
        if stop:
            tokens = [t for t in tokens if t not in stop]
        return tokens

    return tokenize


# --------------------------------------------------------------------------- segmentation


def default_workers() -> int:
    """CPUs this process may run on (affinity-aware), at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def _check_texts(texts: Sequence[str | None]) -> list[str]:
    out: list[str] = []
    for i, t in enumerate(texts):
        if t is None:
            out.append("")
        elif isinstance(t, str):
            out.append(t)
        else:
            raise InputError(f"text #{i} is a {type(t).__name__}, not a string")
    return out


def _shard_bounds(
    texts: Sequence[str], n_shards: int, taper: bool = False
) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges splitting the characters into ``n_shards`` parts.

    Equal parts, or with ``taper`` decreasing ones (the k-th of n weighs n - k + 1): workers
    take shards in order, so small shards at the end leave little idle time at the tail.
    """
    n = len(texts)
    n_shards = max(1, min(n_shards, n))
    weights = [n_shards - k + 1 if taper else 1 for k in range(n_shards)]
    total = sum(len(t) for t in texts) + n  # +1 per text: per-call overhead
    scale = total / sum(weights)
    cuts: list[float] = []  # cumulative character targets at which shards end
    acc_w = 0
    for w in weights[:-1]:
        acc_w += w
        cuts.append(acc_w * scale)
    bounds: list[tuple[int, int]] = []
    start, acc = 0, 0
    for i, t in enumerate(texts):
        acc += len(t) + 1
        if len(bounds) < len(cuts) and acc >= cuts[len(bounds)]:
            bounds.append((start, i + 1))
            start = i + 1
    if start < n:
        bounds.append((start, n))
    return bounds


# Shard results travel as one string: tokens joined by US, documents by RS. Pickling a
# list of lists of short strings costs more than the segmentation saved by a second core.
_US, _RS = "\x1f", "\x1e"

_worker_tokenize: Tokenizer | None = None
_worker_post: Callable[[list[list[str]]], Any] | None = None


def _init_worker(spec: TokenizerSpec, post: Callable[[list[list[str]]], Any] | None = None) -> None:
    global _worker_tokenize, _worker_post
    _worker_tokenize = make_tokenizer(spec)
    _worker_post = post


def _run_shard(texts: list[str]) -> Any:
    tokenize = _worker_tokenize
    assert tokenize is not None, "worker not initialised"
    docs = [tokenize(t) for t in texts]
    if _worker_post is not None:
        return _worker_post(docs)
    return _pack(docs)


def _pack(docs: list[list[str]]) -> str | list[list[str]]:
    """Join into one string if that round-trips exactly, else return the lists unchanged."""
    packed = _RS.join([_US.join(d) for d in docs])
    n_tokens = sum(len(d) for d in docs)
    nonempty = sum(1 for d in docs if d)
    if (
        packed.count(_RS) == len(docs) - 1
        and packed.count(_US) == n_tokens - nonempty
        and not any("" in d for d in docs)
    ):
        return packed
    return docs  # a token holds a separator or is empty: send it as is


def _unpack(result: str | list[list[str]], n_docs: int) -> list[list[str]]:
    if isinstance(result, list):
        return result
    if n_docs == 0:
        return []
    return [d.split(_US) if d else [] for d in result.split(_RS)]


def _precheck(spec: TokenizerSpec) -> None:
    if spec.engine in ("thulac", "rjieba"):
        _import_engine(spec.engine)
    for kind, path in (("user dictionary", spec.user_dict), ("stopword", spec.stopwords)):
        if path is None:
            continue
        try:
            Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{kind} file is not UTF-8: {path} ({e.reason})") from None
        except OSError as e:
            raise InputError(f"cannot read {kind} file {path}: {e.strerror or e}") from None


def _mp_context() -> multiprocessing.context.BaseContext:
    # forkserver/spawn, never fork: forking a parent that holds torch or Prefect threads
    # can deadlock. forkserver forks workers from a clean single-threaded server process.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def segment_texts(
    texts: Sequence[str | None],
    spec: TokenizerSpec,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    *,
    min_parallel: int = MIN_PARALLEL,
) -> list[list[str]]:
    """Tokenize each text (None or "" → []), in input order.

    ``workers > 1`` runs shards in that many processes when there are at least
    ``min_parallel`` texts (fewer: process start-up costs more than it saves). The tokens
    are identical whatever ``workers`` is. ``progress(done, total)`` is called in this
    process after each shard.
    """
    if not isinstance(spec, TokenizerSpec):
        raise InputError(f"spec must be a TokenizerSpec, got {type(spec).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    items = _check_texts(texts)
    total = len(items)
    if total == 0:
        return []
    workers = min(workers, total)
    parallel = workers > 1 and total >= max(min_parallel, 2)

    if not parallel:
        tokenize = make_tokenizer(spec)
        if progress is None:
            return [tokenize(t) for t in items]
        out: list[list[str]] = []
        for start, stop in _shard_bounds(items, SHARDS_PER_WORKER):
            out.extend(tokenize(t) for t in items[start:stop])
            progress(stop, total)
        return out

    _precheck(spec)  # fail here, clearly: an error in a worker's start-up breaks the pool
    n_shards = min(workers * SHARDS_PER_WORKER, max(workers, total // _MIN_SHARD_TEXTS))
    bounds = _shard_bounds(items, n_shards, taper=True)
    results: list[list[list[str]] | None] = [None] * len(bounds)
    done = 0
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=_mp_context(),
        initializer=_init_worker,
        initargs=(spec,),
    ) as pool:
        pending = {
            pool.submit(_run_shard, items[start:stop]): k for k, (start, stop) in enumerate(bounds)
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    k = pending.pop(fut)
                    start, stop = bounds[k]
                    results[k] = _unpack(fut.result(), stop - start)
                    done += stop - start
                    if progress is not None:
                        progress(done, total)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return [doc for shard in results if shard is not None for doc in shard]


def segment_frame(
    df: pl.DataFrame,
    spec: TokenizerSpec,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    *,
    min_parallel: int = MIN_PARALLEL,
) -> pl.DataFrame:
    """(id, text, label, split) → (id, tokens: List(Utf8), label, split), rows in order."""
    import polars as pl

    missing = [c for c in ("id", "text", "label", "split") if c not in df.columns]
    if missing:
        raise InputError(f"corpus frame lacks column(s): {', '.join(missing)}")
    text_col = df.get_column("text")
    if text_col.dtype not in (pl.Utf8, pl.Null):
        raise InputError(f"column 'text' must hold strings, not {text_col.dtype}")
    tokens = segment_texts(text_col.to_list(), spec, workers, progress, min_parallel=min_parallel)
    return pl.DataFrame(
        {
            "id": df.get_column("id"),
            "tokens": pl.Series("tokens", tokens, dtype=pl.List(pl.Utf8)),
            "label": df.get_column("label"),
            "split": df.get_column("split"),
        }
    )


# --------------------------------------------------------------------------- persistent pool


@dataclass(frozen=True)
class FlatIdEncoder:
    """A picklable ``post`` for :class:`Segmenter`: token lists → ragged ids, in the worker.

    Row for row the logic of ``zhflow.tasks.encode.encode_tokens`` (first ``max_len`` tokens,
    unknown → ``unk_id``, no tokens → one ``unk_id``), returned unpadded: ``flat`` int32 (all
    ids, row after row) and ``lengths`` int64. Far cheaper to send back than token strings
    or a padded array, and it moves the dictionary look-ups off the parent process. Kept
    here, not in ``zhflow.tasks.encode``, so workers never import polars or torch.
    """

    index: Mapping[str, int]
    max_len: int
    unk_id: int = 1

    def __call__(self, docs: list[list[str]]) -> tuple[Any, Any]:
        import itertools

        import numpy as np

        get, unk, cut = self.index.get, self.unk_id, self.max_len
        rows = [[get(t, unk) for t in d[:cut]] or [unk] for d in docs]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        flat = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.int32, count=int(lengths.sum())
        )
        return flat, lengths


class SegmentJob:
    """One :meth:`Segmenter.submit` call: its result in input order once the shards are done."""

    def __init__(self, futures: list[Any] | None, parts: list[Any] | None, sizes: list[int],
                 post: bool) -> None:  # fmt: skip
        self._futures = futures
        self._parts = parts
        self._sizes = sizes
        self._post = post

    def done(self) -> bool:
        return self._futures is None or all(f.done() for f in self._futures)

    def parts(self) -> list[Any]:
        """Per-shard results in order: ``post(tokens)`` each with a ``post``, else token lists."""
        if self._parts is None:
            assert self._futures is not None
            try:
                raw = [f.result() for f in self._futures]
            except BaseException:
                self.cancel()
                raise
            self._futures = None
            if not self._post:
                raw = [_unpack(r, n) for r, n in zip(raw, self._sizes, strict=True)]
            self._parts = raw
        return self._parts

    def result(self) -> Any:
        """Token lists for all texts (no ``post``), else the list of per-shard ``post`` results."""
        parts = self.parts()
        if self._post:
            return parts
        return [doc for part in parts for doc in part]

    def cancel(self) -> None:
        for fut in self._futures or ():
            fut.cancel()


class Segmenter:
    """A persistent pool of segmentation processes for many calls (e.g. chunk after chunk).

    ``segment_texts`` starts a pool per call (each worker loads its dictionary, ~1 s); a
    ``Segmenter`` starts one pool, on the first batch large enough to use it, and keeps it
    until :meth:`close` (or the end of a ``with`` block). :meth:`submit` returns at once with
    a :class:`SegmentJob`, so the caller can work on the previous batch meanwhile; batches
    of fewer than ``min_parallel`` texts (or any batch with ``workers=0``) are segmented in
    this process, synchronously. Tokens are identical to :func:`segment_texts`.

    ``post``, a picklable ``list[list[str]] -> Any`` sent to each worker once, runs on each
    shard's token lists in the worker (e.g. :class:`FlatIdEncoder`); the job's result is
    then the list of per-shard results, in order.
    """

    def __init__(
        self,
        spec: TokenizerSpec,
        workers: int = 1,
        *,
        post: Callable[[list[list[str]]], Any] | None = None,
        min_parallel: int = MIN_PARALLEL,
        shards_per_batch: int = 4,
    ) -> None:
        if not isinstance(spec, TokenizerSpec):
            raise InputError(f"spec must be a TokenizerSpec, got {type(spec).__name__}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise InputError(f"workers must be an integer >= 0, got {workers!r}")
        _precheck(spec)  # fail here, clearly: an error in a worker's start-up breaks the pool
        self.spec = spec
        self.workers = workers
        self.post = post
        self.min_parallel = max(min_parallel, 2)
        self.shards_per_batch = max(1, shards_per_batch)
        self._pool: ProcessPoolExecutor | None = None
        self._local: Tokenizer | None = None
        self._closed = False

    @property
    def started(self) -> bool:
        """Whether the worker processes are running."""
        return self._pool is not None

    def _tokenize_here(self, items: list[str]) -> list[list[str]]:
        if self._local is None:
            self._local = make_tokenizer(self.spec)
        tokenize = self._local
        return [tokenize(t) for t in items]

    def submit(self, texts: Sequence[str | None]) -> SegmentJob:
        """Start segmenting ``texts`` (None or "" → []); returns without waiting."""
        if self._closed:
            raise RuntimeError("Segmenter is closed")
        items = _check_texts(texts)
        post = self.post is not None
        if self.workers == 0 or len(items) < self.min_parallel:
            docs = self._tokenize_here(items)
            part = self.post(docs) if self.post is not None else docs
            return SegmentJob(None, [part], [len(items)], post)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_mp_context(),
                initializer=_init_worker,
                initargs=(self.spec, self.post),
            )
        n_shards = min(
            self.workers * self.shards_per_batch,
            max(self.workers, len(items) // _MIN_SHARD_TEXTS),
        )
        bounds = _shard_bounds(items, n_shards)
        futures = [self._pool.submit(_run_shard, items[a:b]) for a, b in bounds]
        return SegmentJob(futures, None, [b - a for a, b in bounds], post)

    def segment(self, texts: Sequence[str | None]) -> Any:
        """``submit(texts).result()``."""
        return self.submit(texts).result()

    def close(self, cancel: bool = False) -> None:
        """Stop the workers (after their current shards; queued ones too with ``cancel``)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(cancel=exc_type is not None)


# --------------------------------------------------------------------------- shards on storage


def segment_parquet_rows(
    corpus_path: str | os.PathLike[str],
    start: int,
    stop: int,
    spec: TokenizerSpec,
    out_path: str | os.PathLike[str],
) -> int:
    """Segment rows ``[start, stop)`` of a corpus Parquet's ``text`` column, in this process,
    into a one-column (``tokens``) Parquet at ``out_path`` (written atomically); return rows.

    One shard of a sharded segmentation (``zhflow.tasks.cluster``): paths in, a path out, so shards
    travel between machines as files on shared storage, never as pickled frames.
    """
    import polars as pl

    if not 0 <= start <= stop:
        raise InputError(f"bad shard bounds [{start}, {stop})")
    texts = pl.scan_parquet(Path(corpus_path)).slice(start, stop - start).select("text").collect()
    tokens = segment_texts(texts.get_column("text").to_list(), spec, workers=1)
    frame = pl.DataFrame({"tokens": pl.Series("tokens", tokens, dtype=pl.List(pl.Utf8))})
    with atomic_path(Path(out_path)) as tmp:
        frame.write_parquet(tmp)
    return frame.height


def assemble_token_shards(
    df: pl.DataFrame, parts: Sequence[str | os.PathLike[str]]
) -> pl.DataFrame:
    """The ``segment_frame`` result for ``df`` from its shards' token files, in order."""
    import polars as pl

    tokens = pl.concat([pl.read_parquet(Path(p)).get_column("tokens") for p in parts]).rechunk()
    if tokens.len() != df.height:
        raise ValueError(f"token shards hold {tokens.len()} rows, the corpus {df.height}")
    return pl.DataFrame(
        {
            "id": df.get_column("id"),
            "tokens": tokens.cast(pl.List(pl.Utf8)),
            "label": df.get_column("label"),
            "split": df.get_column("split"),
        }
    )
