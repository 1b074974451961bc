"""``zhflow tune`` (issue 17): the space, trials, pruning and the winner's run line as pure
functions; then the flow on the tiny corpus against the session's Prefect server: a 3-trial
tune, a rerun that adds only the missing trials, a raising trial, the test split read only
by the winner, and (slow) a SIGKILLed tune that a rerun completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import tiny_corpus_rows
from zhflow.tasks import tune as tune_fns
from zhflow.tasks.errors import InputError

#: A space of tiny models (1 epoch, 8-16 units): trials take a second, not minutes.
TINY_SPACE: dict[str, Any] = {
    "tokenizer": "char",
    "hidden": [8, 16],
    "embedding_dim": 8,
    "epochs": 1,
    "batch_size": 16,
    "lr": {"low": 1e-3, "high": 1e-2, "log": True},
}


def _defaults() -> dict[str, Any]:
    from zhflow.flows.tune import pipeline_defaults

    return pipeline_defaults()


# ------------------------------------------------------------------------------------------
# the space


def test_space_entries_parse_as_constants_choices_and_ranges() -> None:
    dims = {d.name: d for d in tune_fns.parse_space(
        {"epochs": 4, "hidden": [64, 128], "embedding-dim": {"choices": [32]},
         "lr": {"low": 1e-4, "high": 1e-2, "log": True}, "layers": {"low": 1, "high": 3},
         "dropout": {"low": 0, "high": 0.5, "when": {"layers": [2, 3]}}}, _defaults())}  # fmt: skip
    assert dims["epochs"].constant and dims["embedding_dim"].constant  # flag spelling works
    assert dims["hidden"].choices == (64, 128)
    assert dims["lr"].log and not dims["lr"].integer
    assert dims["layers"].integer and (dims["layers"].low, dims["layers"].high) == (1, 3)
    assert dims["dropout"].when == (("layers", (2, 3)),)
    assert dims["dropout"].applies({"layers": 2}) and not dims["dropout"].applies({"layers": 1})


def test_a_space_takes_runs_flag_spellings_for_the_settings_they_set() -> None:
    """``--cell`` sets ``model`` and ``--token-vectors`` sets ``input``: a space written with
    the flags a user sees in ``zhflow run --help`` means the same settings."""
    dims = tune_fns.parse_space(
        {"cell": ["gru", "lstm"], "token-vectors": ["embedding"],
         "hidden": {"choices": [8, 16], "when": {"cell": "gru"}}}, _defaults())  # fmt: skip
    assert [d.name for d in dims] == ["model", "input", "hidden"]
    assert dims[2].when == (("model", ("gru",)),)
    with pytest.raises(InputError, match="model: listed twice"):
        tune_fns.parse_space({"cell": ["gru"], "model": ["lstm"]}, _defaults())


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"seed": [1, 2]}, "seed: not a tunable setting"),
        ({"hidden": [64, "big"]}, "hidden: 'big' is not a int"),
        ({"wide": {"low": 0, "high": 1}}, "wide: wide is not a number"),
        ({"hidden": {"low": 8.5, "high": 16}}, "low must be an integer"),
        ({"lr": {"low": 0, "high": 1, "log": True}}, "a log range needs low > 0"),
        ({"dropout": {"low": 0, "high": 0.5, "when": {"layers": 2}}}, "not an earlier entry"),
        ({"hidden": {"choices": [8], "size": 3}}, "unknown keys size"),
        ({"hidden": [8, 8]}, "listed twice"),
        ({}, "non-empty mapping"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_entry(space: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        tune_fns.parse_space(space, _defaults(), source="space.yaml")


def _rules() -> tune_fns.Rules:
    from zhflow.flows.tune import space_rules

    return space_rules()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"max_len": 0, "epochs": 1, "hidden": 8}, "max_len: 0 is below 1"),
        ({"epochs": 0}, "epochs: 0 is below 1"),
        ({"hidden": [8, -5]}, "hidden: -5 is below 1"),  # every choice, not the first
        ({"layers": 2, "dropout": 1.5}, "dropout: 1.5 is not below 1"),
        # both ends of a range, under a ``when`` too
        ({"layers": [1, 2], "dropout": {"low": 0.1, "high": 1.0, "when": {"layers": 2}}},
         "dropout: 1.0 is not below 1"),
        ({"lr": {"low": 0, "high": 0.01}}, "lr: 0 is not above 0"),
        ({"max_vocab": {"low": 2, "high": 100}}, "max_vocab: 2 is below 3"),
        ({"wide_char_ngrams": [2, 6]}, "wide_char_ngrams: 6 is above 5"),
        ({"tokenizer": ["klingon"]}, "tokenizer: 'klingon' is not one of 'jieba', 'char'"),
        ({"cell": ["gru", "transformer"]}, "model: 'transformer' is not one of"),
        ({"ngram_features": [0, 1]}, r"ngram_features: 1 is neither 0 \(off\) nor >= 2$"),
        # the configs a trial builds, for each combination it can draw
        ({"wide_word_ngrams": 0, "wide_char_ngrams": 0},
         "wide_word_ngrams: 0 with wide_char_ngrams: 0: .*NgramSpec needs word_n or char_n"),
        ({"tokenizer": ["jieba", "char"], "wide_char_ngrams": {"low": 0, "high": 3}},
         "tokenizer: 'char' with wide_char_ngrams: 0: .*NgramSpec needs"),
        ({"input": ["embedding", "onehot"], "ngram_features": [0, 2]},
         "input: 'onehot' with ngram_features: 2: RNNConfig.ngram_features needs input"),
        ({"tokenizer": "char", "mode": ["precise", "search"]},
         "tokenizer: 'char' with mode: 'search': mode 'search' needs the jieba engine"),
    ],
)  # fmt: skip
def test_a_value_no_trial_could_use_is_refused_naming_the_file_and_setting(
    space: dict, message: str
) -> None:
    """Caught when the space is read, not in a trial after segmentation and encoding."""
    with pytest.raises(InputError, match=f"^m\\.yaml: {message}") as caught:
        tune_fns.parse_space(space, _defaults(), source="m.yaml", rules=_rules())
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "space",
    [
        tune_fns.DEFAULT_SPACE,
        {"max_len": 1, "epochs": 1, "hidden": 1, "dropout": 0.0, "max_vocab": 3, "lr": 1e-9},
        {"wide": False, "wide_word_ngrams": 0, "wide_char_ngrams": 0},  # no wide branch built
        # 0/0 only where no wide branch is built: not a combination a trial can draw
        {"wide": [True, False],
         "wide_word_ngrams": {"low": 0, "high": 2, "when": {"wide": False}},
         "wide_char_ngrams": {"low": 0, "high": 2, "when": {"wide": False}}},
        {"tokenizer": ["jieba", "char"],
         "wide_char_ngrams": {"low": 0, "high": 2, "when": {"tokenizer": "jieba"}}},
        {"ngram_features": [0, 2], "input": {"choices": ["onehot"], "when": {"ngram_features": 0}}},
    ],
)  # fmt: skip
def test_spaces_whose_every_trial_is_usable_pass(space: dict) -> None:
    assert tune_fns.parse_space(space, _defaults(), source="m.yaml", rules=_rules())


def test_the_bounds_are_zhflow_runs_flags_own() -> None:
    """Each bounded setting refuses exactly the values its ``zhflow run`` flag refuses."""
    import click

    from zhflow.flows.cli import run

    rules = _rules()
    params = {p.name: p for p in run.params if p.name in tune_fns.TUNABLE}
    assert {"max_len", "epochs", "hidden", "dropout", "lr", "tokenizer", "max_vocab",
            "wide_word_ngrams", "ngram_features"} <= set(rules.bounds)  # fmt: skip
    probes: dict[type, list[Any]] = {
        bool: [True, False],
        int: [-5, 0, 1, 2, 3, 5, 6, 10**6],
        float: [-0.5, 0.0, 1e-9, 0.5, 0.999, 1.0, 1.5, 100.0],
        str: ["jieba", "char", "gru", "onehot", "search", "klingon"],
    }
    for name, bound in rules.bounds.items():
        param = params[name]
        for value in probes[type(_defaults()[name])]:
            try:
                param.type.convert(value, param, None)
                accepted = True
            except click.BadParameter:
                accepted = False
            assert (bound(value) is None) == accepted, (name, value, bound(value))


def test_out_of_range_reads_open_and_closed_ends() -> None:
    assert tune_fns.out_of_range(1, low=1) is None
    assert tune_fns.out_of_range(0, low=1) == "0 is below 1"
    assert tune_fns.out_of_range(0.0, low=0, low_open=True) == "0.0 is not above 0"
    assert tune_fns.out_of_range(1.0, low=0, high=1, high_open=True) == "1.0 is not below 1"
    assert tune_fns.out_of_range(6, low=0, high=5) == "6 is above 5"
    assert tune_fns.out_of_range(10**9) is None


def test_combinations_are_the_extremes_a_trial_can_draw() -> None:
    dims = tune_fns.parse_space(
        {"layers": [1, 2], "dropout": {"low": 0.1, "high": 0.4, "when": {"layers": 2}},
         "hidden": {"low": 8, "high": 64}, "epochs": 3}, _defaults())  # fmt: skip
    assert list(tune_fns.combinations(dims, ["dropout"])) == [
        {"layers": 1}, {"layers": 2, "dropout": 0.1}, {"layers": 2, "dropout": 0.4}]  # fmt: skip
    assert list(tune_fns.combinations(dims, ["hidden", "epochs"])) == [
        {"hidden": 8, "epochs": 3}, {"hidden": 64, "epochs": 3}]  # fmt: skip
    assert list(tune_fns.combinations(dims, ["lr"])) == [{}]  # not in the space


def test_a_space_with_too_many_combinations_is_still_checked_value_by_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tune_fns, "MAX_COMBINATIONS", 3)  # 2 x 2 choices: 4 combinations
    space = {"hidden": [8, 16], "embedding_dim": [8, 16]}
    calls: list[tuple[int, int]] = []

    def check(settings: Mapping[str, Any]) -> None:
        calls.append((settings["hidden"], settings["embedding_dim"]))
        if settings["hidden"] == 16:
            raise ValueError("too wide")

    rules = tune_fns.Rules(checks=[(("hidden", "embedding_dim"), check)])
    with pytest.raises(InputError, match=r"^m\.yaml: hidden: too wide$"):
        tune_fns.parse_space(space, _defaults(), source="m.yaml", rules=rules)
    assert calls[:2] == [(8, 128), (16, 128)]  # each value with the others at the defaults
    calls.clear()
    tune_fns.parse_space({**space, "hidden": [8]}, _defaults(), rules=rules)
    assert calls == [(8, 8), (8, 16)]  # within the limit: every combination


def test_space_files_are_yaml_or_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("hidden: [8, 16]\nlr: {low: 0.001, high: 0.01, log: true}\n")
    json_file = tmp_path / "space.json"
    json_file.write_text(json.dumps({"hidden": [8, 16], "lr": {"low": 0.001, "high": 0.01,
                                                               "log": True}}))  # fmt: skip
    assert tune_fns.load_space(yaml_file, _defaults()) == tune_fns.load_space(
        json_file, _defaults()
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("hidden: [8, 16\n")
    with pytest.raises(InputError, match=r"broken.yaml: not valid yaml"):
        tune_fns.load_space(broken, _defaults())


def test_suggest_samples_conditional_settings_only_when_they_apply() -> None:
    import optuna

    dims = tune_fns.parse_space(tune_fns.DEFAULT_SPACE, _defaults())
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        settings = tune_fns.suggest(study.ask(), dims)
        seen.append(settings)
        assert ("dropout" in settings) == (settings["layers"] == 2)
        assert ("wide_char_ngrams" in settings) == settings["wide"]
        assert ("wide_word_ngrams" in settings) == (settings["wide"] and
                                                   settings["tokenizer"] == "jieba")  # fmt: skip
        assert 5e-4 <= settings["lr"] <= 5e-3
    assert {s["tokenizer"] for s in seen} == {"jieba", "char"}


def test_the_run_line_parses_back_to_the_same_settings() -> None:
    """Every flag the line names is one `zhflow run` has, with the winner's value."""
    import shlex

    from zhflow.flows.cli import run

    settings = {"tokenizer": "char", "wide": False, "bidirectional": False, "lr": 0.0012345,
                "hidden": 64, "max_len": 100, "dropout": 0.25, "layers": 2}  # fmt: skip
    flags = {"workdir": "/tmp/w d", "fmt": "csv", "dedupe": True, "seed": 7, "normalize": True,
             "text_col": None}  # fmt: skip
    line = tune_fns.run_command(["a b.csv"], flags, settings, _defaults())
    words = shlex.split(line)
    assert words[:3] == ["zhflow", "run", "a b.csv"]
    assert "--normalize" not in words  # a default, left out
    params = run.make_context("run", words[2:]).params
    assert {k: params[k] for k in settings} == settings
    assert (params["workdir"], params["fmt"], params["dedupe"], params["seed"]) == (
        "/tmp/w d", "csv", True, 7)  # fmt: skip


def test_the_run_line_uses_each_flags_current_spelling() -> None:
    """Every setting's flag is the first spelling ``zhflow run`` lists for it, never a
    deprecated alias (``--model`` for ``--cell``) that prints a warning when pasted."""
    import click

    from zhflow.flows.cli import run

    for param in run.params:
        if not isinstance(param, click.Option) or not param.expose_value or param.hidden:
            continue
        if param.is_flag and param.secondary_opts:  # --x/--no-x
            assert tune_fns.flag(param.name, True) == [param.opts[0]], param.name
            assert tune_fns.flag(param.name, False) == [param.secondary_opts[0]], param.name
        elif not param.is_flag:
            assert tune_fns.flag(param.name, 1)[0] == param.opts[0], param.name


def _trial(number: int, state: str, value: float | None = None, **attrs: Any) -> Any:
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), value=value,
                           params={"hidden": 8}, user_attrs=attrs, intermediate_values={},
                           datetime_start=None, datetime_complete=None)  # fmt: skip


def test_tally_ranks_and_counts_interrupted_trials_apart() -> None:
    trials = [_trial(0, "COMPLETE", 0.8), _trial(1, "PRUNED"), _trial(2, "FAIL", error="boom"),
              _trial(3, "FAIL"), _trial(4, "COMPLETE", 0.9),
              _trial(5, "COMPLETE", 0.9)]  # fmt: skip
    counts = tune_fns.tally(trials)
    assert counts == {"completed": 3, "pruned": 1, "failed": 1, "interrupted": 1}
    assert tune_fns.finished(counts) == 5  # interrupted ones are tried again, not counted
    assert [t.number for t in tune_fns.ranked(trials)] == [4, 5, 0, 1, 2, 3]
    rows = tune_fns.leaderboard_rows(trials, "macro_f1")
    assert rows[0]["valid_macro_f1"] == "0.9000" and rows[-1]["state"] == "interrupted"
    assert rows[-2]["note"] == "boom"


def test_no_winner_says_why_a_study_has_none() -> None:
    waiting = [_trial(0, "WAITING")]  # the baseline, enqueued: never started
    assert tune_fns.no_winner(waiting, timed_out=0.001) == (
        "no trial completed: --timeout 0.001 s passed before any trial started")  # fmt: skip
    assert tune_fns.no_winner(waiting) == "no trial completed (0 finished: 0 pruned, 0 failed)"
    ran = [_trial(0, "FAIL", error="boom"), _trial(1, "PRUNED"), _trial(2, "FAIL", error="bang"),
           _trial(3, "FAIL")]  # fmt: skip
    assert tune_fns.no_winner(ran) == (
        "no trial completed (3 finished: 1 pruned, 2 failed); first error: boom")  # fmt: skip
    assert tune_fns.no_winner(ran, timed_out=30) == (
        "no trial completed (3 finished: 1 pruned, 2 failed; --timeout 30 s stopped the rest); "
        "first error: boom")  # fmt: skip


def test_choose_winner_names_the_timeout_when_no_trial_ran() -> None:
    from zhflow.flows.tune import choose_winner
    from zhflow.tasks.errors import ZhflowError

    with pytest.raises(ZhflowError, match=r"--timeout 0\.5 s passed before any trial started"):
        choose_winner([_trial(0, "WAITING")], timed_out=0.5)
    best = _trial(2, "COMPLETE", 0.9)
    assert choose_winner([_trial(1, "COMPLETE", 0.5), best], timed_out=0.5) is best


def test_epoch_score_prefers_the_whole_models_score() -> None:
    record = {"valid_macro_f1": 0.5, "valid_accuracy": 0.6, "valid_full_macro_f1": 0.9}
    assert tune_fns.epoch_score(record, "macro_f1") == 0.9
    assert tune_fns.epoch_score(record, "accuracy") == 0.6


def test_the_pruning_hook_reports_epochs_and_stops_a_weak_trial() -> None:
    import optuna

    from zhflow.flows.tune import pruning_hook

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0))  # fmt: skip
    strong = study.ask()
    for epoch, score in ((1, 0.8), (2, 0.9)):
        strong.report(score, epoch)
    study.tell(strong, 0.9)
    weak = study.ask()
    last: dict[str, Any] = {}
    hook = pruning_hook(weak, "macro_f1", last)
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1"):
        hook({"epoch": 1, "valid_macro_f1": 0.4, "valid_accuracy": 0.5})
    assert last == {"epoch": 1, "value": 0.4}
    assert study.trials[1].intermediate_values == {1: 0.4}


# ------------------------------------------------------------------------------------------
# the per-epoch listener leaves training as it is


def _wide_data() -> tuple[Any, dict[str, torch.Tensor]]:
    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens
    from zhflow.tasks.features import NgramSpec
    from zhflow.tasks.segment import TokenizerSpec, segment_texts
    from zhflow.tasks.tables import (
        build_vocab,
        featurizer_from_table,
        select_ngram_features,
        vocab_to_index,
    )

    rows = tiny_corpus_rows()
    tokens = segment_texts([t for t, _ in rows], TokenizerSpec(engine="char"))
    frame = pl.DataFrame({"tokens": tokens})
    vocab = build_vocab(frame, min_freq=1, max_vocab=1000)
    ids, lengths = encode_tokens(tokens, vocab_to_index(vocab), 24)
    labels = build_label_map(lab for _, lab in rows)
    spec = NgramSpec(word_n=0, char_n=2, min_df=2)
    table = select_ngram_features(frame, spec)
    bag_ids, bag_counts, bag_weights = featurizer_from_table(table, spec)(tokens)
    data = {"ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(encode_labels((lab for _, lab in rows), labels)),
            "bag_ids": torch.from_numpy(bag_ids), "bag_counts": torch.from_numpy(bag_counts),
            "bag_weights": torch.from_numpy(bag_weights)}  # fmt: skip
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(labels), cell="gru",
                    embedding_dim=8, hidden_size=8, wide_features=table.height)  # fmt: skip
    return cfg, data


def test_an_epoch_listener_sees_the_whole_models_score_and_changes_nothing() -> None:
    from zhflow.tasks.train import TrainConfig, train_model

    cfg, data = _wide_data()
    tc = TrainConfig(epochs=2, batch_size=16, seed=5, wide_c=(1.0,))
    records: list[dict] = []
    heard = train_model(cfg, tc, data, data, on_epoch=records.append, log=None)
    alone = train_model(cfg, tc, data, data, log=None)
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["valid_full_macro_f1"] <= 1 and 0 <= r["valid_full_accuracy"] <= 1
               for r in records)  # fmt: skip

    def scores(history: list[dict]) -> list[dict]:  # all but the timings
        return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")}
                for r in history]  # fmt: skip

    assert scores(heard.history) == scores(alone.history)  # no listener keys in the history
    assert set(heard.history[0]) == set(alone.history[0])
    assert heard.state_dict.keys() == alone.state_dict.keys()
    for key, value in heard.state_dict.items():
        assert torch.equal(value, alone.state_dict[key]), key


# ------------------------------------------------------------------------------------------
# the CLI's early errors (no server, no work)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hidden: [8, 'big']\n", "hidden: 'big' is not a int"),
        ("max_len: 0\nepochs: 1\nhidden: 8\n", "max_len: 0 is below 1"),
    ],
)
def test_tune_with_a_bad_space_file_is_one_line(
    tmp_path: Path, tiny_csv: Path, text: str, message: str
) -> None:
    from zhflow.flows.cli import main

    space = tmp_path / "space.yaml"
    space.write_text(text)
    result = CliRunner().invoke(main, ["tune", str(tiny_csv), "--workdir", str(tmp_path / "w"),
                                       "--space", str(space)])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip() == f"zhflow: error: {space}: {message}"
    assert not (tmp_path / "w" / "tune").exists()


# ------------------------------------------------------------------------------------------
# the flow


def _tune(corpus: Path, workdir: Path, **kwargs: Any) -> dict[str, Any]:
    from zhflow.flows.tune import tune_pipeline

    options: dict[str, Any] = dict(space=TINY_SPACE, processes=1, seed=3, parallel=1)
    return tune_pipeline(corpus=str(corpus), workdir=str(workdir), **{**options, **kwargs})


def _study(summary: dict[str, Any]) -> Any:
    import optuna

    return optuna.load_study(study_name=summary["study"],
                             storage=f"sqlite:///{summary['storage']}")  # fmt: skip


@pytest.mark.prefect
@pytest.mark.slow
def test_three_trials_in_parallel_then_five_runs_only_two_more(
    prefect_server, tiny_csv: Path, tmp_path: Path
) -> None:
    first = _tune(tiny_csv, tmp_path / "w", trials=3, parallel=2)  # worker processes
    assert first["trials"] == {"completed": 3, "pruned": 0, "failed": 0}
    assert first["started"] == 3
    # One data set for all three (they share tokenizer and vocabulary settings).
    assert len(first["data_runs"]) == 1
    assert Path(first["model"], "weights.safetensors").is_file()
    assert first["best"]["hidden"] in (8, 16) and first["command"].startswith("zhflow run ")
    assert 0 <= first["test_accuracy"] <= 1 and 0 <= first["valid_score"] <= 1
    assert Path(first["report"]).is_file()
    again = _tune(tiny_csv, tmp_path / "w", trials=5, parallel=2)
    assert again["study"] == first["study"]
    assert again["started"] == 2
    assert again["trials"] == {"completed": 5, "pruned": 0, "failed": 0}
    # The rerun segments and encodes nothing: its one data set is all cached.
    assert [{t["state"] for t in r["tasks"]} for r in again["data_runs"]] == [{"Cached"}]
    numbers = sorted(t.number for t in _study(again).trials)
    assert numbers == [0, 1, 2, 3, 4]


@pytest.mark.prefect
def test_a_raising_trial_is_recorded_failed_and_the_tune_goes_on(
    prefect_server, tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zhflow.tasks import stages

    real = stages.train_fns.train_model

    def train_or_raise(model_config: Any, *args: Any, **kwargs: Any) -> Any:
        if model_config.hidden_size == 16:
            raise RuntimeError("boom: a bug in one trial")
        return real(model_config, *args, **kwargs)

    monkeypatch.setattr(stages.train_fns, "train_model", train_or_raise)
    summary = _tune(tiny_csv, tmp_path / "w", trials=4)  # one thread: the patch applies
    study = _study(summary)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed and all(t.params["hidden"] == 16 for t in failed)
    assert all("boom" in t.user_attrs["error"] for t in failed)
    assert summary["trials"] == {"completed": 4 - len(failed), "pruned": 0,
                                 "failed": len(failed)}  # fmt: skip
    assert summary["best"]["hidden"] == 8


@pytest.mark.prefect
def test_the_test_split_is_read_once_and_only_after_the_winner_is_chosen(
    prefect_server, tiny_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zhflow.flows import tune as tune_flow
    from zhflow.tasks import stages

    events: list[str] = []
    load, choose = stages.load_encoded_split, tune_flow.choose_winner

    def recording_load(encoded: Any, split: str) -> Any:
        events.append(split)
        return load(encoded, split)

    def recording_choose(trials: list, timed_out: float | None = None) -> Any:
        events.append("winner chosen")
        return choose(trials, timed_out)

    monkeypatch.setattr(stages, "load_encoded_split", recording_load)
    monkeypatch.setattr(tune_flow, "choose_winner", recording_choose)
    summary = _tune(tiny_csv, tmp_path / "w", trials=3)
    assert summary["trials"]["completed"] == 3
    chosen = events.index("winner chosen")
    assert "test" not in events[:chosen]
    assert events[:chosen].count("valid") >= 3  # each trial trained and scored on valid
    assert events[chosen:].count("test") == 1


@pytest.mark.prefect
def test_a_timeout_that_passes_before_any_trial_is_named(
    prefect_server, tiny_csv: Path, tmp_path: Path
) -> None:
    from zhflow.tasks.errors import ZhflowError

    with pytest.raises(ZhflowError, match=r"^no trial completed: --timeout 1e-09 s passed "
                                          r"before any trial started$"):  # fmt: skip
        _tune(tiny_csv, tmp_path / "w", trials=3, timeout=1e-9)


# ------------------------------------------------------------------------------------------
# a SIGKILLed tune, then a rerun (slow: real processes)


def _zhflow() -> list[str]:
    script = Path(sys.executable).with_name("zhflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zhflow.flows.cli"]


def _running_trial_with_an_epoch(storage: Path) -> bool:
    import sqlite3

    if not storage.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{storage}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT COUNT(*) FROM trials t JOIN trial_intermediate_values v "
                "ON v.trial_id = t.trial_id WHERE t.state = 'RUNNING'"
            ).fetchone()
    except sqlite3.Error:  # not created yet, or locked this instant
        return False
    return bool(rows and rows[0])


@pytest.mark.prefect
@pytest.mark.slow
def test_a_sigkilled_tune_resumes_and_completes_its_study(prefect_server, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    rows = tiny_corpus_rows(copies=40)  # long enough epochs to be caught in one
    corpus = tmp_path / "corpus.csv"
    pl.DataFrame({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}).write_csv(
        corpus
    )
    space = tmp_path / "space.json"
    space.write_text(json.dumps({**TINY_SPACE, "epochs": 4, "hidden": [16, 32]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=str(PREFECT_API_URL.value()), PREFECT_HOME=str(tmp_path / "ph"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PYTHONUNBUFFERED="1")  # fmt: skip
    workdir = tmp_path / "w"
    args = [*_zhflow(), "tune", str(corpus), "--workdir", str(workdir), "--space", str(space),
            "--trials", "3", "--parallel", "2", "--processes", "1", "--pruner", "none",
            "--json"]  # fmt: skip
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)
    storage = workdir / "tune" / "studies.db"
    try:
        deadline = time.monotonic() + 240
        while not _running_trial_with_an_epoch(storage):
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial reached an epoch in time"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the tune and its trial processes
        proc.wait(timeout=30)
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["trials"] == {"completed": 3, "pruned": 0, "failed": 0}
    assert summary["interrupted"] >= 1
    study = _study(summary)
    retried = [t for t in study.trials if "retry_of" in t.user_attrs]
    assert retried and all(t.state.name == "COMPLETE" for t in retried)
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "FAIL"}
    assert Path(summary["model"], "weights.safetensors").is_file()
