"""The flows end to end on a tiny corpus, against one temporary Prefect server."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from zhflow.flows.leaderboard import BOARD_FILE, read_board
from zhflow.flows.pipeline import train_pipeline
from zhflow.flows.scoring import score_pipeline

pytestmark = pytest.mark.prefect

SMALL = dict(tokenizer="char", epochs=2, hidden=16, embedding_dim=16, batch_size=16, seed=3)


def _task_run_names(flow_run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return [r.name for r in runs]


def _states(summary: dict) -> dict[str, str]:
    return {t["name"]: t["state"] for t in summary["tasks"]}


def test_data_half_is_cached_and_min_freq_reruns_only_vocab_and_encode(
    prefect_server, tiny_csv, tmp_path
) -> None:
    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), until="encode", **SMALL)
    first = train_pipeline(**args)
    assert set(_states(first).values()) == {"Completed"}
    assert list(_states(first)) == ["corpus", "tokens", "ngrams", "vocab", "encoded"]
    second = train_pipeline(**args)
    assert set(_states(second).values()) == {"Cached"}
    assert second["artifacts"] == first["artifacts"]
    third = train_pipeline(**{**args, "min_freq": 20})  # drops rare characters
    assert third["artifacts"]["vocab"] != first["artifacts"]["vocab"]
    assert _states(third) == {"corpus": "Cached", "tokens": "Cached", "ngrams": "Cached",
                              "vocab": "Completed", "encoded": "Completed"}  # fmt: skip
    # Content, not parameters, keys downstream work: a vocab that comes out the same
    # (min_freq 2 -> 3 keeps every character here) leaves encoding cached.
    fourth = train_pipeline(**{**args, "min_freq": 3})
    assert _states(fourth)["vocab"] == "Completed" and _states(fourth)["encoded"] == "Cached"


def test_deleted_output_reruns_its_task(prefect_server, tiny_csv, tmp_path) -> None:
    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), until="vocab", **SMALL)
    first = train_pipeline(**args)
    shutil.rmtree(first["artifacts"]["vocab"])
    again = train_pipeline(**args)
    assert _states(again)["vocab"] == "Completed" and _states(again)["tokens"] == "Cached"
    assert Path(again["artifacts"]["vocab"], "vocab.parquet").exists()


def test_train_then_new_epochs_reruns_only_training_then_score(
    prefect_server, tiny_csv, tmp_path
) -> None:
    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), **SMALL)
    state = train_pipeline(**args, return_state=True)
    first = state.result()
    assert 0.0 <= first["accuracy"] <= 1.0 and 0.0 <= first["macro_f1"] <= 1.0
    # The runs list shows the final state's message.
    assert state.message == f"accuracy {first['accuracy']:.4f}, macro-F1 {first['macro_f1']:.4f}"
    assert Path(first["model"], "weights.safetensors").exists()
    second = train_pipeline(**{**args, "epochs": 3})
    states = _states(second)
    assert [states[s] for s in ("corpus", "tokens", "ngrams", "vocab", "encoded")] == ["Cached"] * 5
    assert [states[s] for s in ("model", "metrics", "bundle")] == ["Completed"] * 3
    board = read_board(tmp_path / "w" / BOARD_FILE)
    assert {e["bundle"] for e in board} == {first["model"], second["model"]}
    assert {e["settings"].split(" · ")[0] for e in board} == {"epochs 2", "epochs 3"}

    out = tmp_path / "preds.parquet"
    scored = score_pipeline(bundle=second["model"], input=str(tiny_csv), output=str(out),
                            return_state=True)  # fmt: skip
    summary = scored.result()
    assert _task_run_names(scored.state_details.flow_run_id) == ["score-tiny.csv-b512"]
    assert summary["rows"] == pl.read_parquet(out).height == pl.read_csv(tiny_csv).height
    assert summary["label_accuracy"]["column"] == "label"
    assert summary["label_accuracy"]["rows"] == summary["rows"]
    assert 0.5 <= summary["confidence"]["p50"] <= 1.0


def test_seeds_train_an_ensemble_whose_bundle_holds_every_member(
    prefect_server, tiny_csv, tmp_path
) -> None:
    import json

    from zhflow.models.ensemble import MeanEnsemble, classifiers
    from zhflow.tasks.bundle import load_bundle

    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), **{**SMALL, "epochs": 1})
    summary = train_pipeline(**args, ensemble_size=2)
    names = [t["name"] for t in summary["tasks"]]
    assert names.count("model") == 2 and len(summary["artifacts"]["members"]) == 2
    bundle = load_bundle(summary["model"])
    assert isinstance(bundle.model, MeanEnsemble) and len(classifiers(bundle.model)) == 2
    metrics = json.loads((Path(summary["model"]) / "metrics.json").read_text())
    assert metrics["ensemble"] == 2 and len(metrics["calibration"]["members"]) == 2
    calibration = metrics["calibration"]
    assert calibration["log_loss_after"] >= 0 and calibration["log_loss_before"] >= 0
    # The first member is the single model of the same seed: cached, not trained again.
    single = train_pipeline(**args)
    assert _states(single)["model"] == "Cached"
    assert single["artifacts"]["model"] == summary["artifacts"]["members"][0]


@pytest.fixture
def fresh_code_versions():
    from zhflow.tasks.cache import stage_code

    stage_code.cache_clear()
    yield stage_code.cache_clear
    stage_code.cache_clear()  # the next test sees the real source again


def test_a_comment_edit_keeps_every_stage_cached_a_code_edit_reruns_only_its_stage(
    prefect_server, tiny_csv, tmp_path, monkeypatch, fresh_code_versions
) -> None:
    from zhflow.tasks import codeversion

    real = codeversion.source
    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), until="vocab", **SMALL)
    first = train_pipeline(**args)
    # A comment after every function and class of the vocab stage's module (tasks/tables.py).
    monkeypatch.setattr(codeversion, "source", lambda obj: real(obj) + (
        "    # a comment\n" if obj.__module__ == "zhflow.tasks.tables" else ""))  # fmt: skip
    fresh_code_versions()
    commented = train_pipeline(**args)
    assert set(_states(commented).values()) == {"Cached"}
    assert commented["artifacts"] == first["artifacts"]
    # A statement added to build_vocab: the vocab stage alone runs again (ngrams, which uses
    # other functions of the same module, stays cached).
    monkeypatch.setattr(codeversion, "source", lambda obj: real(obj) + (
        "    _ = None\n" if obj.__qualname__ == "build_vocab" else ""))  # fmt: skip
    fresh_code_versions()
    edited = train_pipeline(**args)
    assert _states(edited) == {"corpus": "Cached", "tokens": "Cached", "ngrams": "Cached",
                               "vocab": "Completed"}  # fmt: skip


def test_equivalent_tokenizer_specs_share_one_tokens_artifact(
    prefect_server, tiny_csv, tmp_path
) -> None:
    stopwords = [tmp_path / "a" / "stop.txt", tmp_path / "b" / "stop.txt"]
    for path in stopwords:
        path.parent.mkdir()
        path.write_text("的\n", encoding="utf-8")
    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), until="tokens", **SMALL)
    with_hmm = train_pipeline(**args, hmm=True)
    without_hmm = train_pipeline(**args, hmm=False)  # `char` has no HMM: the same tokens
    assert _states(without_hmm)["tokens"] == "Cached"
    assert without_hmm["artifacts"]["tokens"] == with_hmm["artifacts"]["tokens"]
    # A stopword file counts by its content, not where it lives.
    here = train_pipeline(**args, stopwords=str(stopwords[0]))
    there = train_pipeline(**args, stopwords=str(stopwords[1]))
    assert here["artifacts"]["tokens"] != with_hmm["artifacts"]["tokens"]
    assert _states(there)["tokens"] == "Cached"
    assert there["artifacts"]["tokens"] == here["artifacts"]["tokens"]
