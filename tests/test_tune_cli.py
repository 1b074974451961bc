"""``zhflow tune``'s command line on its own (flows/tune_cli.py): run's data flags shared as the
same objects, and the checks that run before any server starts."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from zhflow.flows.cli import main
from zhflow.flows.tune_cli import DATA_FLAGS, _check_tune_paths, tune_command
from zhflow.tasks.errors import InputError


def _run_command() -> click.Command:
    run = main.commands["run"]
    assert isinstance(run, click.Command)
    return run


def test_tune_takes_runs_data_flags_as_the_same_objects_after_the_corpus() -> None:
    run = _run_command()
    tune = tune_command(run)
    names = [p.name for p in tune.params]
    assert names[0] == "corpus"
    shared = [p for p in run.params if p.name in DATA_FLAGS]
    assert {p.name for p in shared} == set(DATA_FLAGS)  # every listed flag exists on run
    assert tune.params[1 : 1 + len(shared)] == shared  # the same objects, in run's order
    assert {"trials", "space", "metric", "pruner", "parallel", "as_json"} <= set(names)
    assert "epochs" not in names and "cell" not in names  # those are the search space's


def test_checks_before_a_server_starts(tmp_path: Path, tiny_csv: Path) -> None:
    workdir = str(tmp_path / "w")
    _check_tune_paths(workdir, [str(tiny_csv)])  # fine: nothing raised, nothing written
    assert not (tmp_path / "w").exists()
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)  # a corpus that cannot even be looked at is named here
    with pytest.raises(InputError, match=r"loop\.csv"):
        _check_tune_paths(workdir, [str(loop)])
    with pytest.raises(InputError, match=r"nospace\.yaml: cannot read the space"):
        _check_tune_paths(workdir, [str(tiny_csv)], space=str(tmp_path / "nospace.yaml"))
    bad = tmp_path / "space.yaml"
    bad.write_text("[]\n", encoding="utf-8")
    with pytest.raises(InputError, match="non-empty mapping"):
        _check_tune_paths(workdir, [str(tiny_csv)], space=str(bad))


def test_a_space_no_trial_could_use_is_refused_before_a_server_starts(
    tmp_path: Path, tiny_csv: Path
) -> None:
    """Out of its `zhflow run` flag's range, or a combination no config takes: named with
    the file and the setting(s), before a server starts or anything is written."""
    workdir = str(tmp_path / "w")
    space = tmp_path / "m.yaml"
    space.write_text("epochs: 1\nhidden: [8, -5]\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"^.*m\.yaml: hidden: -5 is below 1$"):
        _check_tune_paths(workdir, [str(tiny_csv)], space=str(space))
    space.write_text("wide_word_ngrams: 0\nwide_char_ngrams: 0\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"m\.yaml: wide_word_ngrams: 0 with wide_char_ngrams: 0"):
        _check_tune_paths(workdir, [str(tiny_csv)], space=str(space))
    assert not (tmp_path / "w").exists()
