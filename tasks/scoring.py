"""The scoring stage's Prefect task (the flow is flows/scoring.py): a bundle + a corpus → one
prediction row per input row, through the pure ``score_file`` / ``score_on_cluster``.

The task does not know who watches it: a flow registers its progress reporters (the Prefect
progress artifact, the terminal bar) in :data:`SCORE_WATCHERS` for the duration of a run,
as the training flow does with ``tasks.stages.EPOCH_HOOKS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from zhflow.tasks.bundle import load_bundle, resolve_bundle
from zhflow.tasks.cluster import ClusterSpec, score_on_cluster
from zhflow.tasks.defaults import SCORE
from zhflow.tasks.score import score_file
from zhflow.tasks.segment import default_workers
from zhflow.tasks.train import pick_device

#: A scoring run's watcher: called with ``(input, fmt)`` when the task starts, it returns a
#: context manager whose value is a ``progress(rows scored so far)`` callback; the context
#: ends when scoring does. Process-local, never a task parameter.
ScoreWatcher = Callable[[str | list[str], str | None], contextlib.AbstractContextManager]
SCORE_WATCHERS: list[ScoreWatcher] = []


def score_task_run_name() -> str:
    """``score-reviews.csv-b512``: the input's file name (not its absolute path), ``+N`` more."""
    from prefect.runtime import task_run

    params = task_run.parameters
    source = params.get("input") or "input"
    files = [source] if isinstance(source, str) else list(source)
    more = f"+{len(files) - 1}" if len(files) > 1 else ""
    return f"score-{Path(files[0]).name}{more}-b{params.get('batch_size')}"


@contextlib.contextmanager
def _watched(input: str | list[str], fmt: str | None) -> Any:
    """One ``progress(rows)`` callback that reports to every registered watcher."""
    with contextlib.ExitStack() as stack:
        callbacks = [stack.enter_context(watch(input, fmt)) for watch in list(SCORE_WATCHERS)]

        def progress(rows: int) -> None:
            for callback in callbacks:
                callback(rows)

        yield progress


@task(name="score", task_run_name=score_task_run_name, tags=["zhflow", "score"])
def score_corpus(
    bundle: str,
    input: str | list[str],
    output: str,
    fmt: str | None = None,
    text_col: str | None = None,
    id_col: str | None = None,
    encoding: str = SCORE.encoding,
    batch_size: int = SCORE.batch_size,
    chunk_rows: int = SCORE.chunk_rows,
    processes: int | None = None,
    cluster: dict | None = None,
) -> dict[str, Any]:
    loaded = load_bundle(resolve_bundle(bundle), device=pick_device("auto"))
    logger = get_run_logger()
    logger.info(f"scoring {input} with {loaded.path.name} ({len(loaded.labels)} labels)")
    with _watched(input, fmt) as progress:
        if cluster:
            summary = score_on_cluster(
                loaded, input, output, ClusterSpec(**cluster), batch_size, chunk_rows,
                fmt=fmt, text_col=text_col, id_col=id_col, encoding=encoding, progress=progress,
            )  # fmt: skip
        else:
            summary = score_file(
                loaded, input, output, fmt, text_col, id_col, encoding, batch_size, chunk_rows,
                processes or default_workers(), progress=progress,
            )  # fmt: skip
    for path in summary["empty_inputs"]:
        logger.warning(f"{path}: empty (no rows), skipped; the other inputs were scored")
    return summary
