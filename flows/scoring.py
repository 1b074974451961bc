"""The scoring flow: a trained bundle + any corpus → one prediction row per input row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from zhflow.flows import artifacts, score_report
from zhflow.flows import progress as terminal
from zhflow.tasks import catalog
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.cluster import ClusterSpec, score_on_cluster
from zhflow.tasks.defaults import SCORE
from zhflow.tasks.score import score_file
from zhflow.tasks.segment import default_workers
from zhflow.tasks.train import pick_device


def resolve_bundle(bundle: str) -> str:
    """A bundle folder as is; a work dir (no ``config.json``, has ``runs/latest.json``) means
    the bundle of its last training run, so a scheduled scoring deployment follows retraining."""
    import json

    path = Path(bundle).expanduser()
    latest = path / catalog.LATEST_RUN
    if not (path / catalog.CONFIG_JSON).exists() and latest.is_file():
        try:
            model = json.loads(latest.read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError, AttributeError):
            return bundle  # unreadable: the bundle check names the folder
        if model:
            return str(path / model)  # relative to the work dir (absolute in old records)
    return bundle


def check_score_paths(bundle: str, input: str | list[str], output: str) -> None:
    """Refuse, before anything is read, an output that would replace an input or land in
    the model bundle or a work dir's artifact folders, and a bundle that is not sealed."""
    from zhflow.tasks.bundle import check_sealed
    from zhflow.tasks.guards import check_output_not_input, check_output_outside_sealed

    inputs = [input] if isinstance(input, str) else list(input)
    check_output_not_input(output, inputs)
    check_output_outside_sealed(output, [bundle, resolve_bundle(bundle)])
    check_sealed(resolve_bundle(bundle))


def score_task_run_name() -> str:
    """``score-reviews.csv-b512``: the input's file name (not its absolute path), ``+N`` more."""
    from prefect.runtime import task_run

    params = task_run.parameters
    source = params.get("input") or "input"
    files = [source] if isinstance(source, str) else list(source)
    more = f"+{len(files) - 1}" if len(files) > 1 else ""
    return f"score-{Path(files[0]).name}{more}-b{params.get('batch_size')}"


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
    with artifacts.watch_scoring(input, fmt) as artifact_progress:
        progress = terminal.scoring_listener(
            artifact_progress, lambda: artifacts.estimate_rows(input, fmt)
        )
        if cluster:
            return score_on_cluster(
                loaded, input, output, ClusterSpec(**cluster), batch_size, chunk_rows,
                fmt=fmt, text_col=text_col, id_col=id_col, encoding=encoding, progress=progress,
            )  # fmt: skip
        return score_file(
            loaded, input, output, fmt, text_col, id_col, encoding, batch_size, chunk_rows,
            processes or default_workers(), progress=progress,
        )  # fmt: skip


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
    state = score_corpus(bundle, input, output, fmt, text_col, id_col, encoding, batch_size,
                         chunk_rows, processes, cluster.to_dict() if cluster else None,
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
