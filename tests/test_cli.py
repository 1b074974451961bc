from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from zhflow.flows.cli import SMALL_CORPUS_TEXTS, main, small_corpus_note


def test_help_lists_the_contract_flags() -> None:
    out = CliRunner().invoke(main, ["run", "--help"]).output
    for flag in ("--format", "--text-col", "--label-col", "--workdir", "--tokenizer", "--model",
                 "--layers", "--hidden", "--embedding-dim", "--bidirectional", "--dropout",
                 "--epochs", "--batch-size", "--max-len", "--min-freq", "--max-vocab", "--ngram",
                 "--seed", "--until", "--json"):  # fmt: skip
        assert flag in out
    score_help = CliRunner().invoke(main, ["score", "--help"]).output
    for flag in ("--model", "--output", "--format", "--text-col", "--id-col", "--batch-size"):
        assert flag in score_help


def test_cluster_flags_are_listed_and_checked_before_any_work() -> None:
    for command in ("run", "score"):
        out = CliRunner().invoke(main, [command, "--help"]).output
        assert "--dask-address" in out and "--workers" in out and "--processes" in out
    both = CliRunner().invoke(main, ["run", "--dask-address", "tcp://127.0.0.1:8786",
                                     "--workers", "2"])  # fmt: skip
    assert both.exit_code == 2
    assert both.stderr.strip() == "zhflow: error: give --dask-address or --dask-workers, not both"
    bad = CliRunner().invoke(main, ["run", "--dask-address", "127.0.0.1:8786"])
    assert bad.exit_code == 2 and "tcp://HOST:PORT" in bad.stderr


def test_bad_flag_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["run", "--model", "transformer"])
    assert result.exit_code == 2 and "transformer" in result.output


def test_a_model_trained_on_few_texts_says_how_the_baseline_compared() -> None:
    def summary(train: int, **extra: object) -> dict:
        return {"accuracy": 0.9, "profile": {"splits": {"train": train}}, **extra}

    note = small_corpus_note(summary(800))
    assert note is not None and note.startswith("note: 800 training texts.")
    assert "compare_peers.py" in note
    assert small_corpus_note(summary(SMALL_CORPUS_TEXTS - 1)) is not None
    assert small_corpus_note(summary(SMALL_CORPUS_TEXTS)) is None
    assert small_corpus_note({"profile": {"splits": {"train": 800}}}) is None  # --until vocab
    assert small_corpus_note({"accuracy": 0.9}) is None


@pytest.mark.prefect
def test_run_json_summary_is_the_last_stdout_line(prefect_server, tiny_csv, tmp_path) -> None:
    args = ["run", str(tiny_csv), "--workdir", str(tmp_path / "w"), "--tokenizer", "char",
            "--until", "vocab", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["workdir"] == str((tmp_path / "w").resolve())
    assert [t["name"] for t in summary["tasks"]] == ["corpus", "tokens", "ngrams", "vocab"]
    assert {t["state"] for t in summary["tasks"]} == {"Completed"}


@pytest.mark.slow
def test_user_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    corpus = tmp_path / "one_label.csv"
    corpus.write_text("text,label\n很好吃,pos\n不错,pos\n", encoding="utf-8")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-m", "zhflow.flows.cli", "run", str(corpus),
         "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("zhflow: error:")]
    assert errors == [
        f"zhflow: error: {corpus}: only one label ('pos'); a classifier needs at least two"
    ]
    assert not list((tmp_path / "w").glob("corpus/*"))  # nothing half-written
