"""The everyday commands: ``evaluate`` (a Prefect flow), ``predict`` and ``info`` (no Prefect).

``predict`` and ``info`` never import Prefect nor reach a server: they load the bundle with
the pure functions (``zhflow.tasks.bundle``, ``zhflow.tasks.predict``), so labelling one
sentence costs the imports of torch and jieba, not a flow run. ``flows/cli.py`` registers the
three commands; every heavy import here happens inside the command that needs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from zhflow.flows.flag_types import FiniteFloatRange
from zhflow.tasks import catalog
from zhflow.tasks.defaults import SCORE

FORMATS = ["csv", "tsv", "jsonl", "parquet", "lines"]
DEFAULT_EVAL_ROOT = "data/work/evaluations"  # zhflow.flows.evaluation.DEFAULT_OUTPUT_ROOT
BELOW_MINIMUM_EXIT = (
    4  # zhflow.flows.evaluation.BELOW_MINIMUM_EXIT (not imported: it loads Prefect)
)


def _fail(exc: Exception) -> None:
    click.echo(f"zhflow: error: {exc}", err=True)
    sys.exit(getattr(exc, "exit_code", 2))


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False, default=str))


# ------------------------------------------------------------------------------------ evaluate


def _evaluation_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"accuracy {summary['accuracy']:.4f}  macro-F1 {summary['macro_f1']:.4f}  "
        f"({summary['n']} texts)",
        f"{'class':>12} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}",
    ]
    for label, c in summary["per_class"].items():
        lines.append(f"{label:>12} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['f1']:>7.4f} "
                     f"{c['support']:>7}")  # fmt: skip
    if summary["unknown_labels"]:
        lines.append(
            f"labels unknown to the bundle (counted as wrong): {summary['unknown_labels']}; "
            f"accuracy on known labels {summary['accuracy_known']:.4f}"
        )
    lines.append(f"metrics: {summary['output_dir']}")
    if summary.get("flow_run_url"):
        lines.append(f"flow run: {summary['flow_run_url']}")
    return lines


def _emit_evaluation(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(summary)
    else:
        for line in _evaluation_lines(summary):
            click.echo(line)


#: ``--bundle`` (score, evaluate, predict); ``--model`` is its old spelling, kept as an alias
#: (``run --model`` is the cell).
bundle_option = click.option(
    "--bundle",
    "--model",
    "bundle",
    required=True,
    type=click.Path(),
    help="Model bundle directory (--model: the old spelling).",
)


def _check_evaluate_inputs(
    bundle: str, corpus: list[str], fmt: str | None = None, text_col: str | None = None,
    label_col: str | None = None, id_col: str | None = None, encoding: str = "utf-8",
    **_: Any,
) -> None:  # fmt: skip
    """Before a server starts: the bundle is sealed, each corpus exists and its header has
    the text and label columns asked for, and ``--output-dir`` can take the evaluation."""
    from zhflow.flows.evaluation import check_output_dir
    from zhflow.flows.scoring import resolve_bundle
    from zhflow.tasks.bundle import check_sealed
    from zhflow.tasks.corpus import check_corpus_header
    from zhflow.tasks.errors import InputError

    resolved = resolve_bundle(bundle)
    check_sealed(resolved)
    check_corpus_header(corpus, fmt, text_col, label_col, id_col, encoding)
    output_dir = _.get("output_dir")
    if output_dir is not None:
        if not output_dir.strip():  # "" would silently be the default folder
            raise InputError("--output-dir is empty: name a folder (or leave it out)")
        if Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise InputError(f"--output-dir {output_dir}: is not a folder")
        check_output_dir(Path(output_dir), Path(resolved), corpus)


@click.command("evaluate")
@bundle_option
@click.argument("corpus", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Input format (default: suffix).")
@click.option("--text-col", help="Text column (default: text/review/content/sentence).")
@click.option("--label-col", help="Label column (default: label/class/category/cat).")
@click.option("--id-col", help="Id column (default: row number).")
@click.option("--encoding", default=SCORE.encoding, show_default=True)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=SCORE.batch_size, show_default=True
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False),
    help="Folder of metrics.json, confusion.md, confusion.png, predictions.parquet "
    f"(default: {DEFAULT_EVAL_ROOT}/<corpus>-<UTC time>).",
)
@click.option(
    "--min-accuracy",
    type=FiniteFloatRange(0, 1),
    help=f"Fail (exit {BELOW_MINIMUM_EXIT}, a failed flow run) when accuracy is below this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary as the last line.")
def evaluate_command(corpus: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Measure a bundle on a labelled CORPUS: accuracy, macro-F1, per-class P/R/F1, confusion
    matrix (files + Prefect artifacts zhflow-eval-metrics, zhflow-eval-confusion)."""
    from zhflow.flows import server
    from zhflow.flows.cli import _run_guarded
    from zhflow.flows.evaluation import BelowMinimumAccuracy, evaluate_pipeline

    def evaluate(**kwargs: Any) -> dict[str, Any]:
        try:
            return server.run_flow(evaluate_pipeline, **kwargs)
        except BelowMinimumAccuracy as exc:
            _emit_evaluation(exc.summary, as_json)  # the metrics, then the one error line
            raise

    summary = _run_guarded(evaluate, precheck=_check_evaluate_inputs, corpus=list(corpus),
                           **options)  # fmt: skip
    _emit_evaluation(summary, as_json)


# ------------------------------------------------------------------------------------- predict


def _load(bundle: str) -> Any:
    from zhflow.tasks.bundle import load_bundle, resolve_bundle
    from zhflow.tasks.errors import ZhflowError

    try:
        return load_bundle(resolve_bundle(bundle))  # a work dir: its last run's bundle
    except ZhflowError as exc:
        _fail(exc)


@click.command("predict")
@bundle_option
@click.argument("text", nargs=-1)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=SCORE.batch_size, show_default=True
)
@click.option(
    "--explain",
    is_flag=True,
    help="Also list the n-grams that weighed most for each label (bundles with the wide branch).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per text, one per line.")
def predict_command(
    bundle: str, text: tuple[str, ...], batch_size: int, explain: bool, as_json: bool
) -> None:
    """Label each TEXT (or each line of stdin when no TEXT is given) with its confidence.

    No Prefect server: the bundle is loaded and run here (in the warm worker when `zhflow
    server start` runs one). --bundle may be a work dir: its last run's bundle."""
    import torch

    from zhflow.flows.server import allow_quick_exit
    from zhflow.tasks.errors import ZhflowError
    from zhflow.tasks.predict import predict_stream, predict_texts, require_utf8

    allow_quick_exit()  # nothing here needs exit handlers; torch's teardown costs ~0.5 s

    torch.set_num_threads(1)  # a few texts: one thread starts fastest and is not slower
    loaded = _load(bundle)
    if explain and loaded.featurizer is None:
        _fail(ZhflowError(f"{bundle}: --explain needs a bundle with the wide n-gram branch "
                          "(this one was trained with --no-wide)"))  # fmt: skip
    try:
        if text:
            texts = [require_utf8(t, f"TEXT {i}") for i, t in enumerate(text, start=1)]
            results: Any = predict_texts(loaded, texts, batch_size)
        else:
            results = predict_stream(loaded, iter(sys.stdin), batch_size)
        _print_predictions(loaded, results, explain, as_json)
    except ZhflowError as exc:
        _fail(exc)


_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})


def tsv_field(text: str) -> str:
    """``text`` as one tab-separated field: backslash, tab, newline, CR and NUL escaped as
    PostgreSQL's text format does (``\\t``...), so a prediction is one line of three fields."""
    return text.translate(_TSV_ESCAPES)


def _print_predictions(loaded: Any, results: Any, explain: bool, as_json: bool) -> None:
    from zhflow.tasks.predict import explain_texts

    for item in results:
        if explain:
            item["explain"] = explain_texts(loaded, [item["text"]], [item["label"]])[0]
        if as_json:
            _echo_json(item)
        elif item["label"] is None:
            click.echo(f"-\t-\t{tsv_field(item['text'])}\t({item.get('reason')})")
        else:
            click.echo(f"{item['label']}\t{item['confidence']:.4f}\t{tsv_field(item['text'])}")
            for part in item.get("explain", []):
                click.echo(f"\t{part['weight']:+.3f}\t{part['kind']}\t{part['ngram']}")


# ---------------------------------------------------------------------------------------- info


def _installed(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _read_json_or_none(path: Path) -> Any:
    """A JSON file's value; None when it is missing or not JSON (an altered bundle)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else {}: a field of the wrong type reads as absent."""
    return value if isinstance(value, dict) else {}


def bundle_info(path: str | Path) -> dict[str, Any]:
    """What a bundle (or a work dir's last bundle) holds, from its JSON files and manifest:
    nothing is loaded or unpickled.

    ``intact`` says whether every file still matches the manifest. Bundles written before
    the training record existed have ``training: null``. An altered bundle is still
    described, as far as its files can be read."""
    from zhflow.tasks.bundle import resolve_bundle, why_no_bundle
    from zhflow.tasks.errors import BundleError
    from zhflow.tasks.storage import verify_artifact

    folder = Path(resolve_bundle(str(path)))
    config_path = folder / catalog.CONFIG_JSON
    if not config_path.is_file():
        why = why_no_bundle(folder, [catalog.CONFIG_JSON])
        raise BundleError(f"{folder}: refused model bundle: {why}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        labels = json.loads((folder / catalog.LABELS_JSON).read_text(encoding="utf-8"))["labels"]
        if not isinstance(config, dict) or not isinstance(labels, list):
            raise TypeError("config.json must hold an object and labels.json a list of labels")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{folder}: refused model bundle: unreadable config or labels "
                          f"({exc})") from None  # fmt: skip
    metrics = _mapping(_read_json_or_none(folder / catalog.METRICS_JSON))
    digest = verify_artifact(folder, deep=True)
    tokenizer = _mapping(config.get("tokenizer"))
    identity = _mapping(tokenizer.get("identity"))
    return {
        "bundle": str(folder.resolve()),
        "format": config.get("format"),
        "intact": digest is not None,
        "digest": digest,
        "tokenizer": identity or None,
        "tokenizer_spec": _mapping(tokenizer.get("spec")) or None,
        "model": _mapping(config.get("model")) or None,
        # Members averaged by `--seeds K` (1: a single model); bundles before ensembles: 1.
        "ensemble": config.get("ensemble", 1),
        "max_len": config.get("max_len"),
        "vocab_size": config.get("vocab_size"),
        "labels": labels,
        "test_metrics": (
            {k: metrics.get(k) for k in ("accuracy", "macro_f1", "n")}
            if isinstance(metrics.get("accuracy"), int | float)
            and isinstance(metrics.get("macro_f1", 0.0), int | float)
            else None
        ),
        "training": _mapping(config.get("training")) or None,
        "versions": {
            "bundle": {
                "zhflow": config.get("zhflow_version"),
                "torch": config.get("torch_version"),
                # TokenizerSpec.identity() names it engine_version (None for `char`).
                str(identity.get("engine", "tokenizer")): identity.get("engine_version"),
            },
            "installed": {name: _installed(name) for name in ("zhflow", "torch", "jieba")},
        },
    }


def _info_lines(info: dict[str, Any]) -> list[str]:
    model = info["model"] or {}
    tok = info["tokenizer"] or {}
    metrics = info["test_metrics"]
    training = info["training"] or {}
    state = "intact" if info["intact"] else "ALTERED: files differ from its manifest"
    lines = [
        f"bundle:     {info['bundle']}",
        f"format:     {info['format']}  ({state})",
        "tokenizer:  " + ", ".join(f"{k}={v}" for k, v in tok.items() if v not in (None, "")),
        "model:      " + ", ".join(f"{k}={v}" for k, v in model.items()),
        f"ensemble:   {info['ensemble']} member{'s' if info['ensemble'] != 1 else ''}"
        + (" (--seeds), probabilities averaged" if info["ensemble"] != 1 else ""),
        f"vocab:      {info['vocab_size']} tokens, max_len {info['max_len']}",
        f"labels:     {', '.join(map(str, info['labels']))}",
    ]
    if metrics:
        accuracy, f1 = metrics.get("accuracy", float("nan")), metrics.get("macro_f1", float("nan"))
        lines.append(f"test:       accuracy {accuracy:.4f}, macro-F1 {f1:.4f} on "
                     f"{metrics.get('n')} texts")  # fmt: skip
    else:
        lines.append("test:       no metrics recorded")
    if training:
        lines.append(f"trained:    {training.get('trained_at')} on corpus sha256 "
                     f"{training.get('corpus_digest')} ({training.get('rows')} rows)")  # fmt: skip
    else:
        lines.append("trained:    not recorded (bundle written before zhflow recorded it)")
    for where, versions in info["versions"].items():
        lines.append(f"{where + ':':<11} " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


@click.command("info")
@click.argument("bundle", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(bundle: str, as_json: bool) -> None:
    """What BUNDLE holds: tokenizer, model config, vocabulary, labels, test metrics, training
    corpus digest and date, versions. BUNDLE may be a work dir (its last run's bundle). Reads
    its JSON files and checks every file against the manifest: no Prefect, no torch."""
    from zhflow.tasks.errors import ZhflowError

    try:
        info = bundle_info(bundle)
    except ZhflowError as exc:
        _fail(exc)
    if as_json:
        _echo_json(info)
    else:
        for line in _info_lines(info):
            click.echo(line)
