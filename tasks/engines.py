"""Tokenizer engines: one class each, registered by name (``--tokenizer NAME``).

An engine says which options it honours, its version (part of the tokens' cache key and of a
bundle's tokenizer identity), how to load it (once per process: tasks/segment.py keeps the
loaded objects) and how it cuts normalised text into tokens. zhflow does the rest
(normalisation, whitespace and stopword filtering, worker processes) the same for all.

A new engine is one class here (or in any module) plus ``register_engine(MyEngine())``; the
CLI's ``--tokenizer`` choices come from :data:`ENGINES`. Segmentation in worker processes
(corpora of ``MIN_PARALLEL`` texts or more) needs the engine registered in a module the
workers import too: this one, or one imported by it.

No engine package is imported here until an engine is loaded: the CLI imports this module.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from zhflow.tasks.errors import InputError

Tokenizer = Callable[[str], list[str]]
#: False in the warm worker (flows/worker.py): it loads jieba's full dictionary once for all
#: its commands, and must not hold the index's SQLite connection across a fork.
USE_JIEBA_INDEX = True


class TokenizerEngine:
    """What every engine provides; the defaults fit an engine with no options."""

    name: ClassVar[str] = ""
    #: Segmentation modes it has (the first is the default); "precise" for all.
    modes: ClassVar[tuple[str, ...]] = ("precise",)
    #: Whether ``hmm`` changes its tokens (then ``mode`` and ``hmm`` enter its identity).
    uses_hmm: ClassVar[bool] = False
    #: Whether it loads a user dictionary (``--user-dict``).
    accepts_user_dict: ClassVar[bool] = False
    #: The distribution it needs, and the pip command that installs it.
    package: ClassVar[str | None] = None
    install_hint: ClassVar[str] = ""

    def version(self) -> str | None:
        """The engine's version (its package's), None for zhflow's own code."""
        if self.package is None:
            return None
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise self.not_installed() from None

    def not_installed(self) -> InputError:
        return InputError(f"tokenizer engine {self.name!r} is not installed: {self.install_hint}")

    def check_installed(self) -> None:
        """Fail early, before any work, when the engine's package is missing."""
        if self.package is not None:
            self.import_package()

    def import_package(self) -> Any:
        assert self.package is not None
        try:
            return importlib.import_module(self.package)
        except ImportError:
            raise self.not_installed() from None

    def load(self, user_dict: str | None) -> Any:
        """The loaded engine (a dictionary, a model) for :meth:`cut`; None when it needs none."""
        return None

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        """Text (already normalised) -> tokens, before any filtering."""
        raise NotImplementedError


class CharEngine(TokenizerEngine):
    """Every character a token: no dictionary, no model."""

    name = "char"

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        return list


def quiet_jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # "Building prefix dict ..." / "Loading model ..."
    return jieba


class JiebaEngine(TokenizerEngine):
    name = "jieba"
    modes = ("precise", "search")
    uses_hmm = True
    accepts_user_dict = True
    package = "jieba"
    install_hint = "pip install jieba"

    def version(self) -> str | None:
        import jieba

        return str(jieba.__version__)

    def check_installed(self) -> None:
        """jieba is a dependency of zhflow itself."""

    def load(self, user_dict: str | None) -> Any:
        from zhflow.tasks.jieba_index import indexed_tokenizer

        jieba = quiet_jieba()
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
        return obj

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        if mode == "search":
            return lambda text: loaded.lcut_for_search(text, HMM=hmm)
        return lambda text: loaded.lcut(text, HMM=hmm)


class RJiebaEngine(TokenizerEngine):
    """jieba's algorithm in Rust (``pip install zhflow[fast]``)."""

    name = "rjieba"
    modes = ("precise", "search")
    uses_hmm = True
    package = "rjieba"
    install_hint = "pip install zhflow[fast]"

    def load(self, user_dict: str | None) -> Any:
        return self.import_package()

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        cut = loaded.cut_for_search if mode == "search" else loaded.cut
        return lambda text: list(cut(text, hmm=hmm))


class ThulacEngine(TokenizerEngine):
    """THULAC's segmentation model (``pip install zhflow[thulac]``)."""

    name = "thulac"
    package = "thulac"
    install_hint = "pip install zhflow[thulac]"

    def load(self, user_dict: str | None) -> Any:
        thulac = self.import_package()
        with contextlib.redirect_stdout(io.StringIO()):  # "Model loaded succeed"
            return thulac.thulac(seg_only=True)

    def cut(self, loaded: Any, mode: str, hmm: bool) -> Tokenizer:
        return lambda text: loaded.cut(text, text=True).split()


#: name -> engine, in the CLI's order.
ENGINES: dict[str, TokenizerEngine] = {
    engine.name: engine for engine in (JiebaEngine(), CharEngine(), ThulacEngine(), RJiebaEngine())
}


def register_engine(engine: TokenizerEngine) -> TokenizerEngine:
    """Add (or replace) an engine under its name."""
    if not engine.name:
        raise ValueError("a tokenizer engine needs a name")
    ENGINES[engine.name] = engine
    return engine


def get_engine(name: str) -> TokenizerEngine:
    engine = ENGINES.get(name)
    if engine is None:
        raise InputError(f"unknown tokenizer engine {name!r} (choose from {', '.join(ENGINES)})")
    return engine
