"""The scoring flow: a trained bundle + any corpus → one prediction row per input row."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import flow

from zhflow.flows import artifacts, score_report
from zhflow.flows import progress as terminal
from zhflow.tasks.cluster import ClusterSpec
from zhflow.tasks.defaults import SCORE
from zhflow.tasks.errors import InputError
from zhflow.tasks.scoring import SCORE_WATCHERS, resolve_bundle, score_corpus


def check_score_paths(bundle: str, input: str | list[str], output: str) -> None:
    """Refuse, before anything is read, an output that would replace an input or land in
    the model bundle or a work dir's artifact folders, and a bundle that is not sealed."""
    from zhflow.tasks.bundle import check_sealed

    check_score_output(bundle, input, output)
    check_sealed(resolve_bundle(bundle))


def check_score_output(bundle: str, input: str | list[str], output: str) -> None:
    """:func:`check_score_paths` less the bundle's own check (``zhflow serve`` checks this at
    start, when the work dir's bundle may be trained only later)."""
    from zhflow.tasks.guards import check_output_not_input, check_output_outside_sealed, is_workdir

    inputs = [input] if isinstance(input, str) else list(input)
    resolved = Path(resolve_bundle(bundle))  # a work dir: its last run's bundle
    check_output_not_input(output, inputs)
    # The bundle itself, never a work dir given as --bundle (one with no bundle yet, or not
    # made yet): its top level and serve's default WORKDIR/scores/ take outputs, and the
    # guard refuses its artifact folders.
    sealed = [resolved] if resolved.exists() and not is_workdir(resolved) else []
    check_output_outside_sealed(output, sealed)
    target = Path(output)
    # A folder or a device is refused by the writer, which says so; a file of another name
    # would silently hold Parquet under a misleading suffix (``pred.csv``).
    if target.suffix.lower() != ".parquet" and (target.is_file() or not target.exists()):
        raise InputError(f"{output}: --output must be a .parquet file (zhflow score writes "
                         "Parquet)")  # fmt: skip


@contextlib.contextmanager
def _report_progress(input: str | list[str], fmt: str | None) -> Iterator[Callable[[int], None]]:
    """The score task's watcher: the ``zhflow-score-progress`` artifact and, when one listens,
    the terminal bar (flows/progress.py)."""
    with artifacts.watch_scoring(input, fmt) as artifact_progress:
        yield terminal.scoring_listener(
            artifact_progress, lambda: artifacts.estimate_rows(input, fmt)
        )


@contextlib.contextmanager
def watching_scoring() -> Iterator[None]:
    """While the block runs, the score task reports its progress here."""
    SCORE_WATCHERS.append(_report_progress)
    try:
        yield
    finally:
        SCORE_WATCHERS.remove(_report_progress)


def score_run_name() -> str:
    from prefect.runtime import flow_run

    source = flow_run.parameters.get("input") or "input"
    first = source if isinstance(source, str) else source[0]
    return f"score-{Path(first).stem}"


@flow(name="zhflow-score", flow_run_name=score_run_name, log_prints=True)
def score_pipeline(
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
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    check_score_paths(bundle, input, output)
    cluster = ClusterSpec.from_params(dask_address, dask_workers)
    with watching_scoring():
        state = score_corpus(bundle, input, output, fmt, text_col, id_col, encoding,
                             batch_size, chunk_rows, processes,
                             cluster.to_dict() if cluster else None,
                             return_state=True)  # fmt: skip
    summary = dict(state.result())
    summary["tasks"] = [{"name": "score", "state": state.name}]
    summary["confidence"] = score_report.confidence_summary(output)
    labels = list(summary.get("labels") or {})
    truth = score_report.label_accuracy(output, input, labels, fmt, text_col, encoding)
    if truth is not None:
        summary["label_accuracy"] = truth
    artifacts.publish_score_summary(summary)
    return summary
