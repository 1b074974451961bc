"""The scoring flow: a trained bundle + any corpus → one prediction row per input row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from tasks.bundle import load_bundle
from tasks.score import score_file
from tasks.segment import default_workers
from tasks.train import pick_device


@task(name="score", task_run_name="score-{input}", tags=["zhflow", "score"])
def score_corpus(
    bundle: str,
    input: str | list[str],
    output: str,
    fmt: str | None = None,
    text_col: str | None = None,
    id_col: str | None = None,
    encoding: str = "utf-8",
    batch_size: int = 512,
    chunk_rows: int = 50_000,
    workers: int | None = None,
) -> dict[str, Any]:
    loaded = load_bundle(bundle, device=pick_device("auto"))
    logger = get_run_logger()
    logger.info(f"scoring {input} with {loaded.path.name} ({len(loaded.labels)} labels)")
    return score_file(
        loaded, input, output, fmt, text_col, id_col, encoding, batch_size, chunk_rows,
        workers or default_workers(),
        progress=lambda rows: logger.info(f"scored {rows} rows"),
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
    encoding: str = "utf-8",
    batch_size: int = 512,
    chunk_rows: int = 50_000,
    workers: int | None = None,
) -> dict[str, Any]:
    state = score_corpus(bundle, input, output, fmt, text_col, id_col, encoding, batch_size,
                         chunk_rows, workers, return_state=True)  # fmt: skip
    summary = dict(state.result())
    summary["tasks"] = [{"name": "score", "state": state.name}]
    return summary
