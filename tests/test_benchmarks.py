"""The accuracy benchmarks run end to end on a tiny corpus and keep their JSON contract.

They sit outside the package, so nothing else imports them: a rename inside zhflow broke
``compare_peers.py`` and ``wide_fits.py`` at their first call (``_wide_spec`` became
``build_wide_spec``) while every other test passed. One seed, a tiny corpus: this checks the
scripts' wiring and output, not any figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("tfidf-word", "tfidf-char", "tfidf-char-word")

pytestmark = pytest.mark.slow


def run_script(name: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_compare_peers_reports_every_method_on_one_leak_free_split(tiny_csv: Path) -> None:
    methods = (*PEERS, "zhflow-default", "zhflow-wide-only")
    out = run_script("compare_peers.py", str(tiny_csv), "--text-col", "text", "--label-col",
                     "label", "--seeds", "7", "--only", ",".join(methods),
                     "--threads", "1")  # fmt: skip
    assert [r["method"] for r in out["results"]] == list(methods)
    for result in out["results"]:
        assert 0.0 <= result["accuracy_mean"] <= 1.0
        assert result["seeds"] == [7]
    assert out["info"]["cross_split_duplicate_texts"] == 0
    assert out["best_peer"] in PEERS
    best = max(r["accuracy_mean"] for r in out["results"] if r["method"] in PEERS)
    default = next(r for r in out["results"] if r["method"] == "zhflow-default")
    assert out["zhflow_default_minus_best_peer"] == pytest.approx(default["accuracy_mean"] - best)


def test_wide_fits_reports_each_fit(tiny_csv: Path) -> None:
    out = run_script("wide_fits.py", str(tiny_csv), "--text-col", "text", "--label-col", "label",
                     "--seeds", "7")  # fmt: skip
    assert [r["method"] for r in out["results"]] == ["lbfgs", "adamw", "pick", "blend"]
    assert all(0.0 <= r["accuracy_mean"] <= 1.0 for r in out["results"])
