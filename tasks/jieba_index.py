"""jieba's dictionary without loading it: an on-disk index for commands that cut a few texts.

Initialising a ``jieba.Tokenizer`` unmarshals its whole prefix dictionary (~350k entries),
about 1 s of CPU, which dominates ``zhflow predict`` on one sentence and a 100-row
``zhflow score``. jieba only ever asks its ``FREQ`` mapping three things while cutting
(``frag in FREQ``, ``FREQ[frag]``, ``FREQ.get(frag)``), so :class:`IndexedFreq` answers
those from a read-only SQLite file holding the same entries and the same ``total``: the
tokens are identical to a fully loaded tokenizer's, by construction.

It stays cheap only for small jobs: after :data:`LOOKUP_BUDGET` lookups (a large batch)
it loads the real dictionary once and swaps the tokenizer's ``FREQ`` for it, so big
segmentation runs keep jieba's full speed. Words added later (a user dictionary,
``add_word``) are kept in memory on top of the index and carried over on that swap.

The index is built once per jieba dictionary (its sha256 and jieba's version name the
file) in ``$ZHFLOW_HOME/cache``, from a normally initialised tokenizer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

#: Lookups answered from the index before the full dictionary is loaded instead.
LOOKUP_BUDGET = 20_000
_MISSING = object()


def index_dir() -> Path:
    """``$ZHFLOW_HOME/cache`` (``ZHFLOW_HOME`` defaults to ``~/.zhflow``, as for the server)."""
    return Path(os.environ.get("ZHFLOW_HOME") or "~/.zhflow").expanduser() / "cache"


def index_path(jieba: Any) -> Path:
    """Named by jieba's version and its default dictionary's content."""
    h = hashlib.sha256(jieba.__version__.encode())
    with jieba.Tokenizer().get_dict_file() as f:
        h.update(f.read())
    return index_dir() / f"zhflow-jieba-{h.hexdigest()[:24]}.sqlite"


def build_index(freq: dict[str, int], total: int, path: Path) -> Path:
    """Write ``freq`` and ``total`` to ``path`` (a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.execute("CREATE TABLE freq (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID")
            db.execute("CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
            db.executemany("INSERT INTO freq VALUES (?, ?)", freq.items())
            db.execute("INSERT INTO meta VALUES ('total', ?), ('entries', ?)",
                       (int(total), len(freq)))  # fmt: skip
            db.commit()
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; any user of this jieba may read it
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return path


class IndexedFreq(dict):
    """jieba's ``FREQ``, looked up in the index; entries seen or added live in this dict.

    After ``budget`` index lookups the tokenizer gets the real dictionary (see module doc).
    """

    def __init__(self, db: sqlite3.Connection, tokenizer: Any, budget: int = LOOKUP_BUDGET):
        super().__init__()
        self._db = db
        self._tokenizer = tokenizer
        self._budget = budget
        self._misses: set[str] = set()
        self._added: dict[str, int] = {}

    def _lookup(self, key: str) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in self._misses:
            return _MISSING
        self._budget -= 1
        if self._budget < 0:
            return self._load_full().get(key, _MISSING)
        row = self._db.execute("SELECT v FROM freq WHERE k = ?", (key,)).fetchone()
        if row is None:
            self._misses.add(key)
            return _MISSING
        dict.__setitem__(self, key, row[0])
        return row[0]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._lookup(key) is not _MISSING

    def __getitem__(self, key: str) -> int:
        value = self._lookup(key)
        if value is _MISSING:
            raise KeyError(key)
        return int(value)

    def get(self, key: str, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _MISSING else value

    def __setitem__(self, key: str, value: int) -> None:
        self._added[key] = value
        self._misses.discard(key)
        dict.__setitem__(self, key, value)

    def _load_full(self) -> dict[str, int]:
        """The real dictionary, plus the words added since; it replaces this mapping."""
        tokenizer = self._tokenizer
        if tokenizer.FREQ is not self:  # already swapped
            return dict(tokenizer.FREQ)
        full, _ = _full_dictionary(tokenizer)
        full.update(self._added)
        tokenizer.FREQ = full
        return full


def _full_dictionary(tokenizer: Any) -> tuple[dict[str, int], int]:
    """Load jieba's own dictionary (its marshal cache) into a fresh tokenizer; return it."""
    import jieba

    fresh = jieba.Tokenizer(tokenizer.dictionary)
    fresh.initialize()
    return fresh.FREQ, fresh.total


def indexed_tokenizer(jieba: Any) -> Any:
    """A ``jieba.Tokenizer`` (default dictionary) backed by the index, building the index
    first when it is missing. ``None`` when the index cannot be used (e.g. a read-only
    disk): the caller initialises jieba as usual."""
    path = index_path(jieba)
    tokenizer = jieba.Tokenizer()
    if not path.is_file():
        tokenizer.initialize()
        with contextlib.suppress(sqlite3.Error, OSError):  # e.g. a read-only home: no index
            build_index(tokenizer.FREQ, tokenizer.total, path)
        return tokenizer  # loaded in full already: use it as is
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        (total,) = db.execute("SELECT v FROM meta WHERE k = 'total'").fetchone()
    except (sqlite3.Error, OSError, TypeError):
        return None
    tokenizer.FREQ = IndexedFreq(db, tokenizer)
    tokenizer.total = total
    tokenizer.initialized = True
    return tokenizer
