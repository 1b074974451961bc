"""A stage's code version: its own function and every zhflow function, class or constant it
reaches by name, as syntax (comments and docstrings do not count).

The walk starts at a stage's task function (its ``build`` closure is part of its source) and
follows the names each piece of code uses: ``corpus_fns.read_corpus``, ``load_featurizer``,
``NgramFeaturizer``, ``MIN_TEXTS_PER_LABEL``. Whatever lives in a ``zhflow.*`` module is
hashed by its syntax tree: a function or class, and a constant by the statement that assigns it
(code, not its value at run time). Third-party code
is not followed: its version enters the keys where it matters (the tokenizer's identity
holds the engine's version). So an edit to one stage's code re-runs that stage and the stages
after it (their inputs' digests change), never its siblings, and a comment edit re-runs none.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "zhflow."
# The key machinery itself is not part of what a stage computes: a change there changes every
# key by itself, or none.
NOT_FOLLOWED = frozenset({"zhflow.tasks.cache", "zhflow.tasks.codeversion"})


def _is_ours(obj: Any) -> bool:
    module = str(getattr(obj, "__module__", "") or "")
    return module.startswith(PACKAGE) and module not in NOT_FOLLOWED


def _unwrap(obj: Any) -> Any:
    """A Prefect task or a functools wrapper: the function underneath."""
    for attribute in ("fn", "__wrapped__"):
        inner = getattr(obj, attribute, None)
        if callable(inner) and _is_ours(inner):
            return _unwrap(inner)
    return obj


def source(obj: Any) -> str:
    """The source text of a function or class (tests stand in edited text here)."""
    return inspect.getsource(obj)


def _syntax(obj: Any) -> ast.AST:
    """The syntax tree of a function or class, docstrings removed (comments never reach it)."""
    try:
        tree = ast.parse(textwrap.dedent(source(obj)))
    except (OSError, TypeError):  # no source (built at run time): its name stands for it
        return ast.Constant(f"{obj.__module__}.{obj.__qualname__}")
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _dotted_names(tree: ast.AST) -> Iterator[list[str]]:
    """Every ``a`` and ``a.b.c`` the code reads, outermost first (``a.b.c`` then ``a.b``...)."""
    for node in ast.walk(tree):
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            yield [node.id, *reversed(parts)]


def _namespace(obj: Any) -> dict[str, Any]:
    module = sys.modules.get(getattr(obj, "__module__", ""))
    return dict(vars(module)) if module else {}


def _referenced(obj: Any, tree: ast.AST) -> Iterator[tuple[Any, str, str]]:
    """``(value, module, name)`` for each name the code reads that resolves in a module (its
    own, or one reached through an attribute chain such as ``catalog.VOCAB_PARQUET``)."""
    names = _namespace(obj)
    for dotted in _dotted_names(tree):
        if dotted[0] not in names:
            continue  # a local, a parameter or a builtin
        value, module, name = names[dotted[0]], obj.__module__, dotted[0]
        yield value, module, name
        for attribute in dotted[1:]:
            if not isinstance(value, types.ModuleType):
                break  # an attribute of a value or a class: its source is reached already
            module, name = value.__name__, attribute
            value = getattr(value, attribute, None)
            if value is None:
                break
            yield value, module, name


def _module_syntax(module: str) -> ast.Module | None:
    path = getattr(sys.modules.get(module), "__file__", None)
    return _parse_file(path) if path else None


@cache
def _parse_file(path: str) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _classes_and_functions(module: str, node: ast.AST) -> list[Any]:
    namespace = vars(sys.modules[module]) if module in sys.modules else {}
    found = []
    for dotted in _dotted_names(node):
        value = namespace.get(dotted[0])
        if (inspect.isfunction(value) or inspect.isclass(value)) and _is_ours(value):
            found.append(value)
    return found


def _binding(module: str, name: str, depth: int = 0) -> ast.stmt | None:
    """The syntax of the module-level statement that binds ``name`` in ``module``: a constant
    counts by its code (``LIMIT = 3``), never by its value at run time (a module's cache dict
    fills up as it runs). An imported name is followed to the module it comes from."""
    tree = _module_syntax(module)
    if tree is None or depth > 8:
        return None
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PACKAGE):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _binding(node.module, alias.name, depth + 1)
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return node
    return None


def code_version(root: Callable[..., Any]) -> str:
    """sha256 over the syntax of ``root`` and of the zhflow code it reaches, in a stable order."""
    parts = reached(root)
    blob = "\n".join(f"{name}\n{text}" for name, text in sorted(parts.items()))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def reached(root: Callable[..., Any]) -> dict[str, str]:
    """``module.qualname`` -> syntax, for every function, class and module-level constant of
    zhflow that ``root`` reaches."""
    parts: dict[str, str] = {}
    todo = [_unwrap(root)]
    while todo:
        obj = todo.pop()
        name = f"{obj.__module__}.{obj.__qualname__}"
        if name in parts:
            continue
        tree = _syntax(obj)
        parts[name] = ast.dump(tree)
        for value, module, attribute in _referenced(obj, tree):
            if isinstance(value, types.ModuleType):
                continue  # a namespace: the names read from it are followed one by one
            value = _unwrap(value)
            if inspect.isfunction(value) or inspect.isclass(value):
                if _is_ours(value):
                    todo.append(value)
            elif _is_ours_module(module) and f"{module}.{attribute}" not in parts:
                binding = _binding(module, attribute)
                if binding is not None:
                    parts[f"{module}.{attribute}"] = ast.dump(binding)
                    # What the constant is built from (a registry of classes): followed too.
                    todo.extend(_classes_and_functions(module, binding))
    return parts


def _is_ours_module(module: str) -> bool:
    return module.startswith(PACKAGE) and module not in NOT_FOLLOWED
