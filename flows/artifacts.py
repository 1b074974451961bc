"""Prefect artifacts (UI-visible tables, markdown and progress bars) with stable keys.

Two halves:

* pure builders (``*_rows``, ``*_markdown``, ``estimate_rows``): dicts in, table rows or
  markdown out; no Prefect, no server, unit-tested directly;
* publishers (``publish_*``, ``watch_*``): called by the flows after (or around) a task.
  They only talk to the API inside a flow or task run (outside one they do nothing, so a
  unit test never starts a server) and never fail the pipeline: a failed API call is
  logged as a warning.

Keys (lowercase and dashes, as Prefect requires; each run adds a version under its key):

=============================  ==========  =================================================
key                            type        content
=============================  ==========  =================================================
``zhflow-corpus-profile``      table       rows, empty texts, duplicates, labels, lengths
``zhflow-top-ngrams``          table       most frequent n-grams per n (train split)
``zhflow-vocab``               table       vocabulary size, coverage, most frequent tokens
``zhflow-segment-progress``    progress    segmentation, updated per shard
``zhflow-training-progress``   progress    training, updated each epoch
``zhflow-training-history``    table       per epoch: losses, accuracy, macro-F1, seconds, best
``zhflow-training-curve``      markdown    the training curve PNG, inline
``zhflow-test-metrics``        table       accuracy, macro-F1, per-class P/R/F1 (test split)
``zhflow-confusion-matrix``    markdown    confusion matrix: counts + row shares, PNG inline
``zhflow-calibration``         markdown    temperature, mix, ECE before/after, reliability PNG
``zhflow-leaderboard``         table       every model trained in the work dir, best first
``zhflow-score-progress``      progress    batch scoring, updated per chunk
``zhflow-score-summary``       table       rows, speed, labels, confidence quantiles, accuracy
=============================  ==========  =================================================

Table cells are display strings: fixed decimals and thousands separators (``12,345``,
``0.8731``), so columns line up in the UI.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zhflow.tasks import catalog
from zhflow.tasks.display import plain
from zhflow.tasks.errors import ZhflowError

if TYPE_CHECKING:
    from zhflow.tasks.storage import ArtifactRef

KEY_PROFILE = "zhflow-corpus-profile"
KEY_NGRAMS = "zhflow-top-ngrams"
KEY_VOCAB = "zhflow-vocab"
KEY_SEGMENT_PROGRESS = "zhflow-segment-progress"
KEY_TRAINING_PROGRESS = "zhflow-training-progress"
KEY_HISTORY = "zhflow-training-history"
KEY_CURVE = "zhflow-training-curve"
KEY_METRICS = "zhflow-test-metrics"
KEY_CONFUSION = "zhflow-confusion-matrix"
KEY_CALIBRATION = "zhflow-calibration"
KEY_LEADERBOARD = "zhflow-leaderboard"
KEY_SCORE_PROGRESS = "zhflow-score-progress"
KEY_SCORE = "zhflow-score-summary"
KEYS = (
    KEY_PROFILE,
    KEY_NGRAMS,
    KEY_VOCAB,
    KEY_SEGMENT_PROGRESS,
    KEY_TRAINING_PROGRESS,
    KEY_HISTORY,
    KEY_CURVE,
    KEY_METRICS,
    KEY_CONFUSION,
    KEY_LEADERBOARD,
    KEY_SCORE_PROGRESS,
    KEY_SCORE,
)

TOP_NGRAMS = 15  # per n
TOP_TOKENS = 20
#: A token or n-gram made only of punctuation and spaces (，。！ ...): left out of the top lists,
#: where it would crowd out the words (polars regex, Unicode categories).
PUNCTUATION_ONLY = r"^[\p{P}\s]+$"
PUNCTUATION_NOTE = "punctuation-only entries (，。！…) left out"

# ------------------------------------------------------------------------------------------
# pure builders


def fixed(x: Any, digits: int = 4) -> str:
    """A number as table text: floats with ``digits`` decimals, ints with thousands
    separators (``12,345``), booleans as yes/no, None as an empty cell, anything else as is."""
    if x is None:
        return ""
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def _count_share(count: int, total: int) -> str:
    return f"{count:,} ({count / total:.1%})" if total else f"{count:,}"


def png_markdown(path: str | Path, alt: str) -> str:
    """A PNG file as an inline markdown image (``data:image/png;base64``): the Prefect UI shows
    it in a markdown artifact, where a file path or a non-public URL shows nothing."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"![{alt}](data:image/png;base64,{data})"


def profile_rows(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """``profile.json`` → ``[{"metric", "value"}]`` rows (labels and lengths flattened)."""
    rows: list[dict[str, Any]] = []
    for name in ("rows", "rows_kept", "empty_or_null_texts", "null_labels", "duplicate_texts",
                 "conflicting_label_texts", "conflicting_rows_dropped",
                 "cross_split_duplicate_texts"):  # fmt: skip
        if name in profile:
            rows.append({"metric": name, "value": fixed(profile[name])})
    kept = profile.get("rows_kept") or sum(profile.get("labels", {}).values()) or 0
    for label, count in profile.get("labels", {}).items():
        rows.append({"metric": f"label {plain(label)}", "value": _count_share(count, kept)})
    for split, count in (profile.get("splits") or {}).items():
        rows.append({"metric": f"split {split}", "value": fixed(count)})
    for name, value in (profile.get("text_length") or {}).items():
        rows.append({"metric": f"text length {name}", "value": fixed(float(value), 1)})
    if profile.get("small_labels"):
        small = ", ".join(map(plain, profile["small_labels"]))
        rows.append({"metric": "labels with < 3 rows", "value": small})
    return rows


def ngram_rows(ngrams: Any, top: int = TOP_NGRAMS) -> list[dict[str, Any]]:
    """An n-gram table (polars: n, ngram, count, doc_freq) → the ``top`` most frequent per n,
    punctuation-only n-grams left out."""
    import polars as pl

    frame = ngrams if isinstance(ngrams, pl.DataFrame) else pl.DataFrame(ngrams)
    if frame.height == 0:
        return []
    best = (
        frame.filter(~pl.col("ngram").str.contains(PUNCTUATION_ONLY))
        .sort(["n", "count", "ngram"], descending=[False, True, False])
        .group_by("n", maintain_order=True)
        .head(top)
    )
    return [
        {
            "n": int(r["n"]),
            "ngram": plain(r["ngram"]),
            "count": fixed(int(r["count"])),
            "doc_freq": fixed(int(r["doc_freq"])),
        }
        for r in best.iter_rows(named=True)
    ]


def vocab_rows(
    summary: dict[str, Any], vocab: Any = None, top: int = TOP_TOKENS
) -> list[dict[str, Any]]:
    """Vocabulary summary (size, coverage...) then its ``top`` most frequent real tokens
    (specials and punctuation-only tokens left out)."""
    rows: list[dict[str, Any]] = [{"item": k, "value": fixed(v)} for k, v in summary.items()]
    if vocab is not None:
        import polars as pl

        frame = vocab if isinstance(vocab, pl.DataFrame) else pl.DataFrame(vocab)
        real = frame.filter(pl.col("count") > 0) if "count" in frame.columns else frame
        real = real.filter(~pl.col("token").str.contains(PUNCTUATION_ONLY))
        real = real.sort(["count", "token"], descending=[True, False]).head(top)
        for r in real.iter_rows(named=True):
            rows.append({"item": f"token {plain(r['token'])}", "value": fixed(int(r["count"]))})
    return rows


def metrics_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Test metrics → per-class P/R/F1 rows, then ``macro avg`` and ``accuracy`` rows."""
    rows: list[dict[str, Any]] = []
    for label in metrics.get("labels", []):
        c = metrics["per_class"][label]
        rows.append(
            {
                "class": plain(label),
                "precision": fixed(float(c["precision"])),
                "recall": fixed(float(c["recall"])),
                "f1": fixed(float(c["f1"])),
                "support": fixed(int(c["support"])),
            }
        )
    # The macro average is over the classes present in the test split (tasks/evaluate.py).
    per = [metrics["per_class"][lab] for lab in metrics.get("labels", [])]
    per = [c for c in per if c["support"] > 0] or per
    if per:
        rows.append(
            {
                "class": "macro avg",
                "precision": fixed(sum(c["precision"] for c in per) / len(per)),
                "recall": fixed(sum(c["recall"] for c in per) / len(per)),
                "f1": fixed(float(metrics["macro_f1"])),
                "support": fixed(int(metrics.get("n", 0))),
            }
        )
    rows.append(
        {
            "class": "accuracy",
            "precision": "",
            "recall": "",
            "f1": fixed(float(metrics["accuracy"])),
            "support": fixed(int(metrics.get("n", 0))),
        }
    )
    return rows


def metrics_description(metrics: dict[str, Any]) -> str:
    return (
        f"Test split: accuracy **{metrics['accuracy']:.4f}**, "
        f"macro-F1 **{metrics['macro_f1']:.4f}** on {fixed(metrics.get('n', 0))} texts"
    )


def confusion_share_markdown(metrics: dict[str, Any]) -> str:
    """The confusion matrix as a markdown table, each cell its count and (beside it) its share
    of the row, i.e. of the texts with that true label; the last column is the row's total."""
    from zhflow.tasks.display import markdown

    labels = [markdown(label) for label in metrics["labels"]]
    lines = [
        "| true \\ predicted | " + " | ".join(labels) + " | texts |",
        "|---|" + "---:|" * (len(labels) + 1),
    ]
    for label, row in zip(labels, metrics["confusion_matrix"], strict=True):
        total = sum(int(v) for v in row)
        cells = [_count_share(int(v), total) for v in row]
        lines.append(f"| **{label}** | " + " | ".join(cells) + f" | {total:,} |")
    return "\n".join(lines) + "\n"


def confusion_markdown(
    metrics: dict[str, Any],
    plots: Mapping[str, Sequence[str]] | None = None,
    image: str | Path | None = None,
) -> str:
    """The confusion matrix as markdown: accuracy, macro-F1, the table (counts and row shares),
    the PNG ``image`` inline, and where the plot files are."""
    lines = [
        "# zhflow: confusion matrix (test split)",
        "",
        f"accuracy **{metrics['accuracy']:.4f}** · macro-F1 **{metrics['macro_f1']:.4f}** · "
        f"{metrics.get('n', 0):,} texts · cells: count (share of the true label's texts)",
        "",
        confusion_share_markdown(metrics).rstrip(),
        "",
    ]
    if image is not None:
        lines += [png_markdown(image, "confusion matrix"), ""]
    if plots:
        lines += ["## Files", ""]
        for name, paths in plots.items():
            lines.append(f"- **{name}**: " + ", ".join(f"`{p}`" for p in paths))
        lines.append("")
    return "\n".join(lines)


def history_rows(history: dict[str, Any]) -> list[dict[str, Any]]:
    """``history.json`` → one row per epoch: losses, validation accuracy and macro-F1, the
    epoch's seconds, and which epoch's weights were kept (``best``)."""
    best = history.get("best_epoch")
    return [
        {
            "epoch": fixed(int(r["epoch"])),
            "train_loss": fixed(float(r["train_loss"])),
            "valid_loss": fixed(float(r["valid_loss"])),
            "valid_accuracy": fixed(float(r["valid_accuracy"])),
            "valid_macro_f1": fixed(float(r["valid_macro_f1"])),
            "seconds": fixed(float(r.get("seconds", 0.0)), 1),
            "best": "best" if r["epoch"] == best else "",
        }
        for r in history.get("epochs", [])
    ]


def curve_markdown(history: dict[str, Any], image: str | Path | None) -> str:
    """The training curve artifact: best epoch and time in a line, then the PNG inline."""
    epochs = history.get("epochs", [])
    best = next((r for r in epochs if r["epoch"] == history.get("best_epoch")), None)
    lines = ["# zhflow: training curve", ""]
    if best is not None:
        lines.append(
            f"best epoch **{best['epoch']}** of {len(epochs)}: valid accuracy "
            f"**{best['valid_accuracy']:.4f}**, macro-F1 **{best['valid_macro_f1']:.4f}** · "
            f"{float(history.get('seconds', 0.0)):,.1f} s in all"
        )
        lines.append("")
    if image is not None:
        lines += [png_markdown(image, "training curve"), ""]
    return "\n".join(lines)


def leaderboard_rows(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leaderboard entries (``flows/leaderboard.py``, best first) → table rows."""
    return [
        {
            "rank": fixed(rank),
            "run": e.get("run", ""),
            "corpus": e.get("corpus", ""),
            "tokenizer": e.get("tokenizer", ""),
            "model": e.get("model", ""),
            "settings": e.get("settings", ""),
            "accuracy": fixed(e.get("accuracy")),
            "macro_f1": fixed(e.get("macro_f1")),
            "cached": fixed(bool(e.get("cached"))),
            "bundle": e.get("bundle", ""),
        }
        for rank, e in enumerate(entries, start=1)
    ]


def score_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Scoring summary → ``[{"item", "value"}]``: rows, seconds, speed, label distribution,
    confidence quantiles and, when the input had labels, the accuracy against them."""
    rows: list[dict[str, Any]] = []
    for name, digits in (("rows", 0), ("seconds", 1), ("docs_per_s", 1), ("empty_texts", 0),
                         ("output", 0), ("bundle", 0), ("device", 0)):  # fmt: skip
        if name in summary:
            rows.append({"item": name, "value": fixed(summary[name], digits)})
    if summary.get("empty_inputs"):
        skipped = ", ".join(plain(path) for path in summary["empty_inputs"])
        rows.append({"item": "inputs skipped: no rows", "value": skipped})
    scored = sum((summary.get("labels") or {}).values())
    for label, count in (summary.get("labels") or {}).items():
        rows.append({"item": f"label {plain(label)}", "value": _count_share(count, scored)})
    for name, value in (summary.get("confidence") or {}).items():
        rows.append({"item": f"confidence {name}", "value": fixed(value)})
    truth = summary.get("label_accuracy")
    if truth:
        rows.append(
            {
                "item": f"accuracy vs input column {plain(truth['column'])!r}",
                "value": f"{truth['accuracy']:.4f} ({truth['correct']:,} of {truth['rows']:,})",
            }
        )
    if truth and truth.get("unknown_labels"):
        unknown = ", ".join(f"{plain(k)} ({v:,})" for k, v in truth["unknown_labels"].items())
        rows.append({"item": "labels unknown to the model (counted wrong)", "value": unknown})
        rows.append({"item": "accuracy on known labels", "value": fixed(truth["accuracy_known"])})
    return rows


def progress_percent(done: float, total: float | None) -> float:
    """0..100, never above 99.0 while work remains (an estimated total may be short)."""
    if not total or total <= 0:
        return 0.0
    pct = 100.0 * done / total
    return max(0.0, min(pct, 99.0 if done < total else 100.0))


def estimate_rows(source: str | Sequence[str], fmt: str | None = None) -> int | None:
    """A cheap row-count estimate of a scoring input (for a progress bar), or None.

    Parquet: exact, from the footer. Text formats: newline count (less the header line for
    csv/tsv), read in 1 MiB blocks. Folders: all files under them.
    """
    from zhflow.tasks.corpus import READERS, detect_format

    paths = [Path(source)] if isinstance(source, str | Path) else [Path(p) for p in source]
    files: list[tuple[Path, str | None]] = []  # a folder's files are format lines
    for p in paths:
        if p.is_dir():
            files += [(f, fmt or "lines") for f in sorted(p.rglob("*")) if f.is_file()]
        else:
            files.append((p, fmt))
    total = 0
    try:
        for f, kind in files:
            # The reader's own count (the parquet footer; newlines less a csv/tsv header), for
            # the format the reader itself picks (.pq is parquet; an unknown suffix: newlines).
            try:
                kind = kind or detect_format(f)
            except ZhflowError:
                kind = "lines"
            total += READERS[kind].estimate_rows(f)
    except (OSError, KeyError):
        return None
    return total or None


# ------------------------------------------------------------------------------------------
# publishers (inside a flow or task run only)

_log = logging.getLogger("zhflow.artifacts")


def in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _say(message: str, warning: bool = False) -> None:
    try:
        from prefect import get_run_logger

        logger: Any = get_run_logger()
    except Exception:
        logger = _log
    (logger.warning if warning else logger.info)(message)


def _safely(what: str, fn: Callable[[], Any]) -> Any:
    if not in_prefect_run():
        return None
    try:
        return fn()
    except Exception as exc:  # the UI is a view; never fail a pipeline over it
        _say(f"artifact {what}: not published ({type(exc).__name__}: {exc})", warning=True)
        return None


def _table(key: str, rows: list[dict[str, Any]], description: str) -> Any:
    from prefect.artifacts import create_table_artifact

    return _safely(key, lambda: create_table_artifact(table=rows, key=key, description=description))


def _read_json(ref: ArtifactRef, name: str) -> Any:
    import json

    return json.loads((Path(ref.path) / name).read_text(encoding="utf-8"))


def publish_corpus_profile(profile: dict[str, Any], source: Sequence[str]) -> Any:
    names = ", ".join(Path(s).name for s in source)
    return _table(
        KEY_PROFILE,
        profile_rows(profile),
        f"Corpus profile of {names}: {fixed(profile.get('rows_kept'))} texts kept "
        f"of {fixed(profile.get('rows'))}",
    )


def publish_ngrams(ngrams_ref: ArtifactRef) -> Any:
    def rows() -> list[dict[str, Any]]:
        import polars as pl

        return ngram_rows(pl.read_parquet(Path(ngrams_ref.path) / catalog.NGRAMS_PARQUET))

    built = _safely(KEY_NGRAMS, rows)
    if built is None:
        return None
    return _table(
        KEY_NGRAMS,
        built,
        f"Top {TOP_NGRAMS} n-grams per n (train split; {PUNCTUATION_NOTE}), "
        f"from `{ngrams_ref.path}`",
    )


def publish_vocab(vocab_ref: ArtifactRef) -> Any:
    def rows() -> list[dict[str, Any]]:
        import polars as pl

        vocab = pl.read_parquet(Path(vocab_ref.path) / catalog.VOCAB_PARQUET)
        return vocab_rows(_read_json(vocab_ref, catalog.SUMMARY_JSON), vocab)

    built = _safely(KEY_VOCAB, rows)
    if built is None:
        return None
    return _table(
        KEY_VOCAB,
        built,
        f"Vocabulary summary and top {TOP_TOKENS} tokens ({PUNCTUATION_NOTE}), "
        f"from `{vocab_ref.path}`",
    )


def _log_loss_note(cal: dict[str, Any]) -> str:
    if "log_loss_after" not in cal:  # a metrics.json from before 2026-12-07
        return ""
    return f" · log-loss **{cal['log_loss_before']:.4f}** → **{cal['log_loss_after']:.4f}**"


def calibration_markdown(metrics: dict[str, Any], image: str | Path | None) -> str:
    """How far ``confidence`` can be trusted: the fitted temperature (and the branches' mix),
    the test split's expected calibration error and log-loss before and after them, the
    diagram inline."""
    cal = metrics.get("calibration")
    if not cal:
        return "# zhflow: calibration\n\nThis model was trained without calibration.\n"
    lines = [
        "# zhflow: calibration (test split)",
        "",
        f"temperature **{cal['temperature']:.3f}**"
        + (f" · wide-branch weight in the mix **{cal['mix']:.2f}**" if "mix" in cal else "")
        + f" · expected calibration error ({cal.get('bins', 15)} bins): "
        f"**{cal['ece_before']:.4f}** before → **{cal['ece_after']:.4f}** after calibration"
        + _log_loss_note(cal),
        "",
        "Both were fitted on the validation split; before = without them (temperature 1"
        + (", mix 0.5" if "mix" in cal else "")
        + "); 0 = confidence equals accuracy.",
        "",
    ]
    if image is not None:
        lines += [png_markdown(image, "reliability diagram"), ""]
    return "\n".join(lines)


def plot_paths(
    metrics_ref: ArtifactRef, bundle_ref: ArtifactRef | None = None
) -> dict[str, list[str]]:
    from zhflow.tasks.plots import CONFUSION_PNG, RELIABILITY_PNG, TRAINING_CURVE

    out: dict[str, list[str]] = {}
    for title, name in (("training curve", TRAINING_CURVE), ("confusion matrix", CONFUSION_PNG),
                        ("reliability diagram", RELIABILITY_PNG)):  # fmt: skip
        where = [Path(r.path) / name for r in (metrics_ref, bundle_ref) if r is not None]
        found = [str(p) for p in where if p.exists()]
        if found:
            out[title] = found
    return out


def _markdown(key: str, markdown: str, description: str) -> Any:
    from prefect.artifacts import create_markdown_artifact

    return _safely(
        key,
        lambda: create_markdown_artifact(markdown=markdown, key=key, description=description),
    )


def _png(ref: ArtifactRef, name: str) -> Path | None:
    path = Path(ref.path) / name
    return path if path.is_file() else None


def publish_metrics(metrics_ref: ArtifactRef, bundle_ref: ArtifactRef | None = None) -> Any:
    """``zhflow-test-metrics`` (table) and ``zhflow-confusion-matrix`` (markdown, PNG inline)."""
    from zhflow.tasks.plots import CONFUSION_PNG

    metrics = _read_json(metrics_ref, catalog.METRICS_JSON)
    description = metrics_description(metrics)
    if bundle_ref is not None:
        description += f"; model bundle `{bundle_ref.path}`"
    table = _table(KEY_METRICS, metrics_rows(metrics), description)
    markdown = confusion_markdown(
        metrics, plot_paths(metrics_ref, bundle_ref), image=_png(metrics_ref, CONFUSION_PNG)
    )
    _markdown(KEY_CONFUSION, markdown, description)
    from zhflow.tasks.plots import RELIABILITY_PNG

    _markdown(KEY_CALIBRATION, calibration_markdown(metrics, _png(metrics_ref, RELIABILITY_PNG)),
              description)  # fmt: skip
    return table


def publish_training(model_ref: ArtifactRef, metrics_ref: ArtifactRef) -> Any:
    """``zhflow-training-history`` (table, a row per epoch) and ``zhflow-training-curve``
    (markdown, the curve PNG inline)."""
    from zhflow.tasks.plots import TRAINING_CURVE

    history = _read_json(model_ref, catalog.HISTORY_JSON)
    best = history.get("best_epoch")
    _markdown(
        KEY_CURVE,
        curve_markdown(history, _png(metrics_ref, TRAINING_CURVE)),
        f"Training curve of `{model_ref.path}`",
    )
    return _table(
        KEY_HISTORY,
        history_rows(history),
        f"{len(history.get('epochs', []))} epochs; the weights of epoch {best} were kept "
        f"(best validation macro-F1); `{model_ref.path}`",
    )


def publish_leaderboard(entries: Sequence[dict[str, Any]], board_file: str | Path) -> Any:
    """``zhflow-leaderboard``: every model trained in this work dir, best macro-F1 first."""
    return _table(
        KEY_LEADERBOARD,
        leaderboard_rows(entries),
        f"{len(entries)} models trained in this work dir, best test macro-F1 first "
        f"(from `{board_file}`)",
    )


def publish_score_summary(summary: dict[str, Any]) -> Any:
    return _table(
        KEY_SCORE,
        score_rows(summary),
        f"Scored {fixed(summary.get('rows'))} rows in {fixed(summary.get('seconds'), 1)} s "
        f"→ `{summary.get('output')}`",
    )


class Progress:
    """A progress artifact created on the first update (so a cached task makes none), plus
    throttled terminal log lines (every ``log_every`` percent, and the last)."""

    def __init__(
        self, key: str, what: str, log_every: float | None = 10.0, min_seconds: float = 0.5
    ) -> None:
        self.key, self.what = key, what
        self.log_every, self.min_seconds = log_every, min_seconds
        self.artifact_id: Any = None
        self.failed = False
        self.last_logged = -1.0
        self.last_sent = 0.0

    def update(self, percent: float, message: str) -> None:
        percent = max(0.0, min(100.0, float(percent)))
        step = int(percent // self.log_every) if self.log_every else 0
        if self.log_every is not None and (percent >= 100.0 or step > self.last_logged):
            self.last_logged = step
            _say(f"{self.what}: {message}")
        now = time.monotonic()
        if self.failed or (
            percent < 100.0
            and now - self.last_sent < self.min_seconds
            and self.artifact_id is not None
        ):
            return
        self.last_sent = now
        self._send(percent, f"{self.what}: {message}")

    def _send(self, percent: float, description: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self.artifact_id is None:
            self.artifact_id = _safely(
                self.key,
                lambda: create_progress_artifact(
                    progress=percent, key=self.key, description=description
                ),
            )
            self.failed = self.artifact_id is None
        else:
            ok = _safely(
                self.key,
                lambda: update_progress_artifact(
                    artifact_id=self.artifact_id, progress=percent, description=description
                ),
            )
            self.failed = ok is None

    def finish(self, message: str) -> None:
        if self.artifact_id is not None and not self.failed:
            self._send(100.0, f"{self.what}: {message}")


@contextmanager
def watch_segmentation() -> Iterator[Progress]:
    """Around the segmentation task: terminal lines + ``zhflow-segment-progress``."""
    from zhflow.tasks.stages import SEGMENT_HOOKS

    bar = Progress(KEY_SEGMENT_PROGRESS, "segmentation")

    def hook(record: dict) -> None:
        done, total = int(record["done"]), int(record["total"])
        bar.update(progress_percent(done, total), f"{done}/{total} texts")

    SEGMENT_HOOKS.hooks.append(hook)
    try:
        yield bar
    finally:
        SEGMENT_HOOKS.hooks.remove(hook)


@contextmanager
def watch_training(epochs: int) -> Iterator[Progress]:
    """Around the training task: ``zhflow-training-progress``, updated each epoch (the
    train loop itself logs one line per epoch). Early stopping completes the bar."""
    from zhflow.tasks.stages import EPOCH_HOOKS

    bar = Progress(KEY_TRAINING_PROGRESS, "training", log_every=None, min_seconds=0.0)
    last: dict[str, Any] = {}

    def hook(record: dict) -> None:
        last.update(record)
        bar.update(progress_percent(record["epoch"], epochs), _epoch_text(record, epochs))

    EPOCH_HOOKS.hooks.append(hook)
    try:
        yield bar
        if last and last["epoch"] < epochs:
            bar.finish(_epoch_text(last, epochs) + " (early stop)")
    finally:
        EPOCH_HOOKS.hooks.remove(hook)


def _epoch_text(record: dict, epochs: int) -> str:
    return (
        f"epoch {record['epoch']}/{epochs}, train loss {record['train_loss']:.4f}, "
        f"valid acc {record['valid_accuracy']:.4f}, macro-F1 {record['valid_macro_f1']:.4f}"
    )


@contextmanager
def watch_scoring(source: str | Sequence[str], fmt: str | None) -> Iterator[Callable[[int], None]]:
    """A ``progress(rows)`` callback for ``score_file``: a terminal line per chunk and
    ``zhflow-score-progress`` (against an estimated total); completed when the block ends."""
    total = estimate_rows(source, fmt)
    bar = Progress(KEY_SCORE_PROGRESS, "scoring", log_every=None)
    seen = [0]

    def progress(rows: int) -> None:
        seen[0] = rows
        pct = progress_percent(rows, total)
        text = f"{rows} rows" + (f" of ~{total} ({pct:.0f}%)" if total else "")
        _say(f"scored {text}")
        bar.update(pct, text)

    yield progress
    bar.finish(f"{seen[0]} rows")
