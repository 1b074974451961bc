"""The leaderboard: one entry per model bundle trained in a work dir, best macro-F1 first.

Kept in ``<workdir>/runs/leaderboard.json`` (JSON, never a pickle), updated by every training
run under a file lock and written to a temporary name then renamed, so two runs finishing at
once both land and a killed run leaves the old file whole. A rerun that comes back with the
same bundle (same data, settings and code: the bundle's content key) replaces that bundle's
entry instead of adding a duplicate, so the board compares distinct models.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock

from zhflow.tasks.storage import write_json_atomic

BOARD_FILE = Path("runs") / "leaderboard.json"
BOARD_VERSION = 1


def describe_tokenizer(tokenizer: dict[str, Any]) -> str:
    """``jieba precise``, ``jieba search no-HMM``, ``char``..."""
    engine = str(tokenizer.get("engine", "?"))
    if engine == "char":
        return engine
    parts = [engine, str(tokenizer.get("mode", ""))]
    if tokenizer.get("hmm") is False:
        parts.append("no-HMM")
    if tokenizer.get("user_dict"):
        parts.append("+dict")
    if tokenizer.get("stopwords"):
        parts.append("+stopwords")
    return " ".join(p for p in parts if p)


def describe_model(model_config: dict[str, Any]) -> str:
    """``bigru h128 x1 +wide``, ``lstm h64 x2 onehot``... (``wide``: the n-gram branch)."""
    cell = str(model_config.get("cell", "?"))
    name = ("bi" + cell) if model_config.get("bidirectional", True) else cell
    hidden, layers = model_config.get("hidden_size", "?"), model_config.get("num_layers", 1)
    parts = [name, f"h{hidden}", f"x{layers}"]
    if model_config.get("input", "embedding") != "embedding":
        parts.append(str(model_config["input"]))
    if model_config.get("wide"):
        parts.append("+wide")
    return " ".join(parts)


def describe_settings(train_config: dict[str, Any], data: dict[str, Any]) -> str:
    """The settings that tell two runs apart, in one short cell."""
    keys = {**data, **train_config}
    shown = ("epochs", "lr", "batch_size", "max_len", "min_freq", "seed")
    return " · ".join(f"{k} {keys[k]}" for k in shown if k in keys)


def make_entry(
    run: str,
    summary: dict[str, Any],
    tokenizer: dict[str, Any],
    model_config: dict[str, Any],
    train_config: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """A training run's leaderboard entry from its summary and settings (JSON-ready)."""
    states = {t["name"]: t["state"] for t in summary.get("tasks", [])}
    return {
        "run": run,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": ", ".join(Path(c).name for c in summary.get("corpus", [])),
        "tokenizer": describe_tokenizer(tokenizer),
        "model": describe_model(model_config),
        "settings": describe_settings(train_config, data),
        "accuracy": float(summary["accuracy"]),
        "macro_f1": float(summary["macro_f1"]),
        "cached": states.get("model") == "Cached",
        "bundle": str(summary["model"]),
    }


def merge(entries: Sequence[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``entries`` with ``entry`` added (replacing one of the same bundle), best first."""
    kept = [e for e in entries if e.get("bundle") != entry["bundle"]] + [entry]
    return sorted(kept, key=lambda e: (-e["macro_f1"], -e["accuracy"], e["finished"]))


def read_board(path: Path) -> list[dict[str, Any]]:
    """The entries of a leaderboard file; none when it does not exist. An unreadable file is
    kept aside (``.bad``) rather than overwritten, and the board starts again."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["entries"]
        if not isinstance(entries, list):
            raise TypeError("entries is not a list")
        return [e for e in entries if isinstance(e, dict) and "bundle" in e]
    except (ValueError, KeyError, TypeError):
        os.replace(path, path.with_name(path.name + ".bad"))
        return []


def record(workdir: str | Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``entry`` to the work dir's leaderboard file; return the board (best first)."""
    path = Path(workdir) / BOARD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        entries = merge(read_board(path), entry)
        write_json_atomic(path, {"version": BOARD_VERSION, "entries": entries})
    return entries


def state_message(summary: dict[str, Any]) -> str:
    """The training flow run's final state message (the UI's runs list shows it)."""
    return f"accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}"
