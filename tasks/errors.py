"""The one exception type users see: a clear, one-line message, no traceback."""

from __future__ import annotations


class ZhflowError(Exception):
    """Bad input or a refused operation. The CLI prints ``zhflow: error: <msg>`` and exits 2."""

    exit_code = 2


class InputError(ZhflowError):
    """The corpus, a column, a flag value or a file the user handed us is unusable."""


class BundleError(ZhflowError):
    """A model bundle is missing a file, was altered, or does not match this installation."""

    exit_code = 3
