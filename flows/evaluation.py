"""The evaluation flow: a trained bundle + a newly labelled corpus → metrics, the check people
schedule to notice drift.

Reads the corpus with the training reader (``zhflow.tasks.corpus.read_corpus`` + ``clean_corpus``),
labels its texts with the scorer's arithmetic (``zhflow.tasks.predict``), measures with
``zhflow.tasks.evaluate``, and writes into one folder (each file under a temporary name, then
renamed)::

    metrics.json       accuracy, macro-F1, per-class P/R/F1, confusion matrix, unknown labels
    confusion.md       the confusion matrix as a table
    confusion.png      the same as a plot
    predictions.parquet id, label (true), predicted, confidence, correct

It publishes ``zhflow-eval-metrics`` (table) and ``zhflow-eval-confusion`` (markdown). With
``min_accuracy`` the flow run *fails* (visibly, in the UI) when accuracy is below it.

The click command is in ``flows/commands.py`` (it imports this module when it runs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from zhflow.flows.scoring import resolve_bundle
from zhflow.tasks import catalog
from zhflow.tasks.defaults import SCORE
from zhflow.tasks.errors import InputError, ZhflowError

KEY_EVAL_METRICS = "zhflow-eval-metrics"
KEY_EVAL_CONFUSION = "zhflow-eval-confusion"
DEFAULT_OUTPUT_ROOT = "data/work/evaluations"
OUTPUT_FILES = (
    catalog.METRICS_JSON,
    catalog.CONFUSION_MD,
    catalog.CONFUSION_PNG,
    catalog.PREDICTIONS_PARQUET,
)
#: Exit code of a completed evaluation whose accuracy is below ``--min-accuracy``: not bad
#: input (2) nor a refused bundle (3), so a scheduler can tell "the model got worse" apart.
BELOW_MINIMUM_EXIT = 4
_PREDICT_ROWS = 50_000  # texts labelled per call: bounds memory on a large corpus


class BelowMinimumAccuracy(ZhflowError):
    """The evaluation ran, and the model's accuracy is below the required minimum."""

    exit_code = BELOW_MINIMUM_EXIT

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


# ------------------------------------------------------------------------------ pure helpers


def default_output_dir(corpus: str | list[str], root: str = DEFAULT_OUTPUT_ROOT) -> Path:
    """``ROOT/<corpus stem>-<UTC time>``: one folder per evaluation, so runs never overwrite."""
    first = corpus if isinstance(corpus, str) else corpus[0]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(root) / f"{Path(first).stem or 'corpus'}-{stamp}"


def check_output_dir(output_dir: Path, bundle: Path, corpus: list[str]) -> None:
    """An output is never one of the inputs: not the bundle (its manifest would break), not
    any other sealed folder (another bundle, a work dir's artifacts), and none of the files
    written may be a corpus file."""
    from zhflow.tasks.guards import check_output_outside_sealed

    check_output_outside_sealed(output_dir, [bundle], flag="--output-dir", is_folder=True)
    out = output_dir.resolve()
    inputs = {Path(p).resolve() for p in corpus}
    for name in OUTPUT_FILES:
        if out / name in inputs:
            raise InputError(f"--output-dir {output_dir}: would overwrite the corpus {out / name}")
    present = [name for name in OUTPUT_FILES if (out / name).exists()]
    if present and not _an_earlier_evaluation(out):
        raise InputError(f"--output-dir {output_dir}: holds {', '.join(present)} that zhflow "
                         "evaluate did not write; pick a new or empty folder")  # fmt: skip


def _an_earlier_evaluation(folder: Path) -> bool:
    """``folder`` holds what an evaluation writes (then a rerun may replace it): its metrics
    name the bundle digest and the corpus, as :func:`evaluate_bundle` writes them."""
    try:
        metrics = json.loads((folder / catalog.METRICS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and {"accuracy", "bundle_digest", "corpus"} <= set(metrics)


def check_min_accuracy(metrics: dict[str, Any], min_accuracy: float | None) -> str | None:
    """The one-line failure when accuracy is below ``min_accuracy``, else None."""
    if min_accuracy is None or metrics["accuracy"] >= min_accuracy:
        return None
    return (
        f"accuracy {metrics['accuracy']:.4f} is below --min-accuracy {min_accuracy:g} "
        f"({metrics['n']} texts; macro-F1 {metrics['macro_f1']:.4f})"
    )


def confusion_report(metrics: dict[str, Any], bundle: str, corpus: list[str], png: Path) -> str:
    """The markdown of ``confusion.md`` and of the ``zhflow-eval-confusion`` artifact."""
    from zhflow.tasks.evaluate import format_confusion_markdown

    lines = [
        "# zhflow: evaluation",
        "",
        f"bundle `{bundle}` on `{', '.join(corpus)}`",
        "",
        f"accuracy **{metrics['accuracy']:.4f}** · macro-F1 **{metrics['macro_f1']:.4f}** · "
        f"{metrics['n']} texts",
        "",
        format_confusion_markdown(metrics).rstrip(),
        "",
    ]
    if metrics["unknown_labels"]:
        unknown = ", ".join(f"`{k}` ({v})" for k, v in metrics["unknown_labels"].items())
        lines += [
            f"**Labels unknown to the bundle**: {unknown}: counted as wrong; accuracy on the "
            f"known labels {metrics['accuracy_known']:.4f}.",
            "",
        ]
    lines += [f"Plot: `{png}`", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the work


def evaluate_bundle(
    bundle_path: str,
    corpus: list[str],
    output_dir: Path,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = SCORE.encoding,
    batch_size: int = SCORE.batch_size,
) -> dict[str, Any]:
    """Label ``corpus`` with the bundle, measure, write the folder; return the summary.

    No Prefect in here (the flow below wraps it), so it is testable on its own."""
    import polars as pl

    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.corpus import clean_corpus, read_corpus
    from zhflow.tasks.evaluate import check_labels_overlap, evaluate_labels
    from zhflow.tasks.plots import plot_confusion
    from zhflow.tasks.predict import predict_frame
    from zhflow.tasks.storage import atomic_path, write_json_atomic
    from zhflow.tasks.train import pick_device

    started = time.perf_counter()
    bundle = load_bundle(bundle_path, device=pick_device("auto"))
    check_output_dir(output_dir, bundle.path, corpus)
    source: str | list[str] = corpus[0] if len(corpus) == 1 else corpus
    raw = read_corpus(source, fmt, text_col, label_col, id_col, encoding, require_labels=True)
    clean, counts = clean_corpus(raw, require_labels=True, source=source)
    if clean.height == 0:
        raise InputError(f"{', '.join(corpus)}: no rows with both a text and a label")
    check_labels_overlap(clean["label"].to_list(), bundle.labels, source)
    texts = clean["text"].to_list()
    frames = [
        predict_frame(bundle, texts[i : i + _PREDICT_ROWS], batch_size)
        for i in range(0, len(texts), _PREDICT_ROWS)
    ]
    predicted = pl.concat(frames)
    y_true = clean["label"].to_list()
    y_pred = predicted["label"].to_list()
    metrics = evaluate_labels(y_true, y_pred, bundle.labels)
    metrics.update(
        bundle=str(bundle.path),
        bundle_digest=bundle.digest,
        corpus=corpus,
        rows_read=counts["rows_in"],
        empty_texts=counts["empty_text"],
        null_labels=counts["null_label"],
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    png = output_dir / catalog.CONFUSION_PNG
    write_json_atomic(output_dir / catalog.METRICS_JSON, metrics)
    with atomic_path(output_dir / catalog.CONFUSION_MD) as tmp:
        tmp.write_text(confusion_report(metrics, str(bundle.path), corpus, png), encoding="utf-8")
    with atomic_path(png) as tmp:
        plot_confusion(metrics["confusion_matrix"], metrics["labels"], tmp)
    rows = pl.DataFrame(
        {
            "id": clean["id"].cast(pl.Utf8),
            "label": clean["label"],
            "predicted": predicted["label"],
            "confidence": predicted["confidence"],
        }
    ).with_columns((pl.col("label") == pl.col("predicted")).alias("correct"))
    with atomic_path(output_dir / catalog.PREDICTIONS_PARQUET) as tmp:
        rows.write_parquet(tmp)
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n": metrics["n"],
        "unknown_labels": metrics["unknown_labels"],
        "accuracy_known": metrics["accuracy_known"],
        "per_class": metrics["per_class"],
        "output_dir": str(output_dir.resolve()),
        "files": {name: str((output_dir / name).resolve()) for name in OUTPUT_FILES},
        "bundle": str(bundle.path),
        "corpus": corpus,
        "rows_read": counts["rows_in"],
        "empty_texts": counts["empty_text"],
        "null_labels": counts["null_label"],
        "seconds": round(time.perf_counter() - started, 3),
    }


# ----------------------------------------------------------------------------- the Prefect flow


def _publish(summary: dict[str, Any]) -> None:
    """The two keyed artifacts; the UI is a view, so a failure here never fails the run."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from zhflow.flows.artifacts import metrics_rows, png_markdown

    metrics = json.loads(Path(summary["files"][catalog.METRICS_JSON]).read_text(encoding="utf-8"))
    description = (
        f"Evaluation of `{summary['bundle']}` on `{', '.join(summary['corpus'])}`: "
        f"accuracy **{metrics['accuracy']:.4f}**, macro-F1 **{metrics['macro_f1']:.4f}** "
        f"on {metrics['n']} texts"
    )
    markdown = Path(summary["files"][catalog.CONFUSION_MD]).read_text(encoding="utf-8")
    try:
        # The plot inline: the UI shows a data: image, never a file path (flows/artifacts.py).
        image = png_markdown(summary["files"][catalog.CONFUSION_PNG], "confusion matrix")
        markdown += f"\n{image}\n"
        create_table_artifact(
            table=metrics_rows(metrics), key=KEY_EVAL_METRICS, description=description
        )
        create_markdown_artifact(markdown=markdown, key=KEY_EVAL_CONFUSION, description=description)
    except Exception as exc:
        get_run_logger().warning(
            f"evaluation artifacts not published ({type(exc).__name__}: {exc})"
        )


def _eval_run_name() -> str:
    from prefect.runtime import flow_run

    corpus = flow_run.parameters.get("corpus") or ["corpus"]
    first = corpus if isinstance(corpus, str) else corpus[0]
    return f"evaluate-{Path(first).stem}"


@task(name="evaluate", task_run_name="evaluate", tags=["zhflow", "evaluate"])
def evaluate_task(bundle: str, corpus: list[str], output_dir: str, **options: Any) -> dict:
    return evaluate_bundle(resolve_bundle(bundle), corpus, Path(output_dir), **options)


@flow(name="zhflow-evaluate", flow_run_name=_eval_run_name, log_prints=True)
def evaluate_pipeline(
    bundle: str,
    corpus: str | list[str],
    output_dir: str | None = None,
    output_root: str = DEFAULT_OUTPUT_ROOT,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = SCORE.encoding,
    batch_size: int = SCORE.batch_size,
    min_accuracy: float | None = None,
) -> dict[str, Any]:
    paths = [corpus] if isinstance(corpus, str) else list(corpus)
    folder = output_dir or str(default_output_dir(paths, output_root))
    summary = evaluate_task(bundle, paths, folder, fmt=fmt, text_col=text_col,
                            label_col=label_col, id_col=id_col, encoding=encoding,
                            batch_size=batch_size)  # fmt: skip
    logger = get_run_logger()
    logger.info(
        f"accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f} on "
        f"{summary['n']} texts → {summary['output_dir']}"
    )
    if summary["unknown_labels"]:
        logger.warning(f"labels unknown to the bundle: {summary['unknown_labels']}")
    _publish(summary)
    failure = check_min_accuracy(summary, min_accuracy)
    if failure:
        raise BelowMinimumAccuracy(failure, summary)  # the flow run fails, in the UI too
    return summary
