"""The accuracy benchmarks run end to end on a tiny corpus and keep their JSON contract.

They sit outside the package, so nothing else imports them: a rename inside zhflow broke
``compare_peers.py`` and ``wide_fits.py`` at their first call (``_wide_spec`` became
``build_wide_spec``) while every other test passed. One seed, a tiny corpus: this checks the
scripts' wiring and output, not any figure.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("tfidf-word", "tfidf-char", "tfidf-char-word")


def zhflow_names_used(script: Path) -> list[tuple[str, str, int]]:
    """(module, name, line) for every ``from zhflow... import name`` in ``script`` and every
    ``module.name`` read off a zhflow module it imported."""
    tree = ast.parse(script.read_text(encoding="utf-8"))
    used, modules = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zhflow"):
            module = importlib.import_module(str(node.module))
            for alias in node.names:
                used.append((str(node.module), alias.name, node.lineno))
                value = getattr(module, alias.name, None)
                if isinstance(value, types.ModuleType):
                    modules[alias.asname or alias.name] = value
    for node in ast.walk(tree):
        name = node.value if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.Attribute) and isinstance(name, ast.Name) and name.id in modules:
            used.append((modules[name.id].__name__, node.attr, node.lineno))
    return used


def test_every_zhflow_name_a_benchmark_uses_exists() -> None:
    missing = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for module, name, line in zhflow_names_used(script):
            if not hasattr(importlib.import_module(module), name):
                missing.append(f"{script.name}:{line} {module}.{name}")
    assert not missing


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_compare_peers_reports_every_method_on_one_leak_free_split(tiny_csv: Path) -> None:
    methods = (*PEERS, "zhflow-default", "zhflow-wide-only", "zhflow-ensemble")
    out = run_script("compare_peers.py", str(tiny_csv), "--text-col", "text", "--label-col",
                     "label", "--seeds", "7", "--only", ",".join(methods),
                     "--threads", "1", "--ensemble-size", "2")  # fmt: skip
    assert [r["method"] for r in out["results"]] == list(methods)
    for result in out["results"]:
        assert 0.0 <= result["accuracy_mean"] <= 1.0
        assert result["seeds"] == [7]
    assert out["info"]["cross_split_duplicate_texts"] == 0
    assert out["best_peer"] in PEERS
    best = max(r["accuracy_mean"] for r in out["results"] if r["method"] in PEERS)
    default = next(r for r in out["results"] if r["method"] == "zhflow-default")
    assert out["zhflow_default_minus_best_peer"] == pytest.approx(default["accuracy_mean"] - best)
    (ensemble,) = next(r for r in out["results"] if r["method"] == "zhflow-ensemble")["runs"]
    assert ensemble["members"] == 2
    assert ensemble["member_accuracy"][0] == default["accuracy_mean"]  # member 0 is the default
    (run,) = default["runs"]
    assert default["calibration"]["log_loss_after_mean"] == round(run["log_loss_after"], 4)
    assert default["calibration"]["ece_lowered_on"] == int(run["ece_after"] < run["ece_before"])


@pytest.mark.slow
def test_wide_fits_reports_each_fit(tiny_csv: Path) -> None:
    out = run_script("wide_fits.py", str(tiny_csv), "--text-col", "text", "--label-col", "label",
                     "--seeds", "7")  # fmt: skip
    assert [r["method"] for r in out["results"]] == ["lbfgs", "adamw", "pick", "blend"]
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in out["results"])
