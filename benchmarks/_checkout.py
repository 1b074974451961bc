"""Import ``zhflow`` from this checkout when it is not installed (``import _checkout`` first).

The folders flows/ tasks/ models/ install as ``zhflow.flows``, ``zhflow.tasks`` and
``zhflow.models``; a benchmark run from a bare clone (``python3 benchmarks/gpu_check.py`` on a
machine without ``make install``) gets the same names from a ``zhflow`` package whose search path
is the repository root. An installed zhflow (the editable one of ``make install``) wins.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

if importlib.util.find_spec("zhflow") is None:
    package = types.ModuleType("zhflow")
    package.__path__ = [str(ROOT)]  # zhflow.tasks -> ROOT/tasks, and so on
    sys.modules["zhflow"] = package
