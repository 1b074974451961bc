"""The one exception type users see: a clear, one-line message, no traceback."""

from __future__ import annotations

import os
from pathlib import Path


class ZhflowError(Exception):
    """Bad input or a refused operation. The CLI prints ``zhflow: error: <msg>`` and exits 2."""

    exit_code = 2


class InputError(ZhflowError):
    """The corpus, a column, a flag value or a file the user handed us is unusable."""


class EmptyInputError(InputError):
    """An input file with no rows (no bytes, a header alone, no JSON records):
    ``<path>: empty corpus (no rows)``. Scoring several inputs skips such a file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(f"{path}: empty corpus (no rows)")
        self.path = Path(path)


class WriteError(InputError):
    """A location that cannot take a write (read-only or full disk, no permission, a file
    where a folder should be): ``<path>: cannot write (<why>)``."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(f"{path}: cannot write ({why})")
        self.path, self.why = Path(path), why


class BundleError(ZhflowError):
    """A model bundle is missing a file, was altered, or does not match this installation."""

    exit_code = 3
