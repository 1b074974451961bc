"""``zhflow tune``'s command line (the flow is ``flows/tune.py``, imported only when it runs).

Its data flags are ``zhflow run``'s own options (the same objects), so they read and check
the same; every other ``run`` setting is the search space's (``--space``).
"""

from __future__ import annotations

from typing import Any

import click

from zhflow.tasks.defaults import TUNE

#: ``zhflow run`` options that ``zhflow tune`` takes as they are: the corpus, its reading and
#: splitting, and where the sharded stages run. The rest is searched.
DATA_FLAGS = (
    "fmt", "text_col", "label_col", "id_col", "encoding", "workdir", "user_dict", "stopwords",
    "normalize", "dedupe", "seed", "processes", "dask_address", "dask_workers",
)  # fmt: skip


def _check_tune_paths(
    workdir: str, corpus: list[str] | None, space: str | None = None, **_: Any
) -> None:
    """Before a server starts: the run's path checks, the space file, and Optuna."""
    import importlib.util

    from zhflow.flows.cli import _check_run_paths
    from zhflow.tasks.errors import InputError
    from zhflow.tasks.guards import check_readable

    _check_run_paths(workdir, corpus, **_)
    if importlib.util.find_spec("optuna") is None:
        raise InputError("zhflow tune needs Optuna: pip install 'zhflow[tune]'")
    if space is not None:
        from zhflow.flows.tune import pipeline_defaults, space_rules
        from zhflow.tasks.tune import load_space

        check_readable(space)
        # A bad space (a value out of its `zhflow run` flag's range, settings that make no
        # model): one line naming the file and the setting, before any work.
        load_space(space, pipeline_defaults(), space_rules())


def _own_options(command: Any) -> Any:
    options = [
        click.option("--trials", type=click.IntRange(min=1), default=TUNE.trials,
                     show_default=True,
                     help="Trials in the study in all: a rerun with more continues it."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Seconds; no new trial starts after them (running ones finish)."),
        click.option("--space", type=click.Path(),
                     help="Search space, YAML or JSON (default: the built-in space; README)."),
        click.option("--metric", type=click.Choice(["macro_f1", "accuracy"]),
                     default=TUNE.metric, show_default=True,
                     help="Validation score the trials are ranked by."),
        click.option("--pruner", type=click.Choice(["median", "halving", "none"]),
                     default=TUNE.pruner, show_default=True,
                     help="Stop weak trials early: median or successive halving, per epoch."),
        click.option("--parallel", type=click.IntRange(min=1),
                     help="Trials at once (default: cores / training threads, or --dask-workers)."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print one JSON summary as the last line."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def tune_command(run: click.Command) -> click.Command:
    """``zhflow tune``, with ``run``'s data flags."""

    @click.command("tune")
    @click.argument("corpus", required=False, nargs=-1, type=click.Path())
    @_own_options
    def tune(corpus: tuple[str, ...], as_json: bool, **options: Any) -> None:
        """Search model and training settings on CORPUS's validation split (Optuna), then
        test and package the winner; print the `zhflow run` line that reproduces it.

        Trials run in parallel worker processes, or with --dask-address/--dask-workers on that
        Dask cluster. The study is kept in WORKDIR/tune/studies.db: rerun to resume or
        continue it."""
        from zhflow.flows import server
        from zhflow.flows.cli import _emit, _run_guarded, _with_link
        from zhflow.flows.tune import tune_pipeline

        options["corpus"] = list(corpus) if corpus else None
        summary = _run_guarded(
            server.run_flow, precheck=_check_tune_paths, flow=tune_pipeline, **options
        )
        trials = summary["trials"]
        lines = [
            f"trials: {trials['completed']} completed, {trials['pruned']} pruned, "
            f"{trials['failed']} failed ({summary['started']} started by this call)",
            f"best: trial {summary['best_trial']}, validation {summary['metric']} "
            f"{summary['valid_score']:.4f}",
            f"test accuracy {summary['test_accuracy']:.4f}  macro-F1 "
            f"{summary['test_macro_f1']:.4f}",
            f"model bundle: {summary['model']}",
            f"reproduce: {summary['command']}",
            f"report: {summary['report']}",
        ]
        _emit(summary, as_json, _with_link(lines, summary))

    shared = [p for p in run.params if p.name in DATA_FLAGS]
    tune.params[1:1] = shared  # after CORPUS, before tune's own options
    return tune
