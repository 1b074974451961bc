"""Classification metrics in plain numpy: accuracy, macro-F1, per-class P/R/F1, confusion matrix.

Conventions: macro-F1 averages the per-class F1 over the classes *present* in the evaluated
split (support > 0), as scikit-learn's ``f1_score(y_true, y_pred, labels=<present>,
average="macro", zero_division=0)``: a class with no test rows has no F1 to average (counting
it as 0 halved the figure of a corpus with one single-row class). Any 0/0 ratio is 0.0.
``compute_metrics`` says so in its output (``macro_f1_over``, ``labels_absent``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from zhflow.tasks import display
from zhflow.tasks.errors import InputError


def _as_labels(y: ArrayLike, num_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} holds class ids outside [0, {num_classes})")
    return arr


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows = true class, columns = predicted class."""
    t = _as_labels(y_true, num_classes, "y_true")
    p = _as_labels(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


#: What ``macro_f1`` averages over, as written into metrics.json.
MACRO_F1_OVER = "classes present in the split (support > 0)"


def _present_mean(f1: np.ndarray, support: np.ndarray) -> float:
    present = support > 0
    return float(f1[present].mean()) if present.any() else 0.0


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over the classes present in ``y_true``."""
    _, _, f1, support = _prf(confusion_matrix(y_true, y_pred, num_classes))
    return _present_mean(f1, support)


def compute_metrics(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[str]) -> dict[str, Any]:
    """All metrics as a JSON-ready dict (plain floats, ints, lists)."""
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("labels must not be empty")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be unique")
    cm = confusion_matrix(y_true, y_pred, len(labels))
    precision, recall, f1, support = _prf(cm)
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": _present_mean(f1, support),
        "macro_f1_over": MACRO_F1_OVER,
        "labels_absent": [label for i, label in enumerate(labels) if support[i] == 0],
        "labels": labels,
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def _cell(text: str) -> str:
    return display.markdown(text)  # a label is text: no HTML, markdown or escape sequences


def format_confusion_markdown(metrics: dict[str, Any]) -> str:
    """The confusion matrix as a markdown table: rows = true label, columns = prediction."""
    labels = [_cell(label) for label in metrics["labels"]]
    cm = metrics["confusion_matrix"]
    lines = [
        "| true \\ predicted | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for label, row in zip(labels, cm, strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


#: Equal-width confidence bins of the expected calibration error (Guo et al. 2017 use 15).
ECE_BINS = 15


def reliability_bins(
    probs: ArrayLike, y_true: ArrayLike, bins: int = ECE_BINS
) -> list[dict[str, float | int]]:
    """Per confidence bin: rows, mean confidence, accuracy (empty bins included, n = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.int64)
    confidence = p.max(axis=1) if p.size else np.empty(0)
    correct = (p.argmax(axis=1) == t) if p.size else np.empty(0, dtype=bool)
    # Bin k holds confidences in (k/bins, (k+1)/bins]; confidence 0 goes to bin 0.
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    out: list[dict[str, float | int]] = []
    for k in range(bins):
        mask = which == k
        n = int(mask.sum())
        out.append({
            "low": k / bins, "high": (k + 1) / bins, "n": n,
            "confidence": float(confidence[mask].mean()) if n else 0.0,
            "accuracy": float(correct[mask].mean()) if n else 0.0,
        })  # fmt: skip
    return out


def expected_calibration_error(probs: ArrayLike, y_true: ArrayLike, bins: int = ECE_BINS) -> float:
    """Sum over bins of (rows in bin / rows) x |accuracy - mean confidence|: 0 = calibrated."""
    table = reliability_bins(probs, y_true, bins)
    total = sum(int(b["n"]) for b in table)
    if not total:
        return 0.0
    return float(sum(int(b["n"]) * abs(b["accuracy"] - b["confidence"]) for b in table) / total)


def log_loss(probs: ArrayLike, y_true: ArrayLike) -> float:
    """Mean negative log-probability of the true label (nats): the proper score that the
    temperature is fitted to. Unlike the ECE it has no bins, so on a few thousand rows it
    separates two calibrations that the ECE's binning noise cannot."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if not len(y):
        return 0.0
    # The floor keeps a confidently wrong row finite (scikit-learn clips at float eps too).
    loss = -np.log(np.clip(p[np.arange(len(y)), y], np.finfo(np.float64).eps, None)).mean()
    return float(loss) + 0.0  # + 0.0: every row right at probability 1 gives 0.0, not -0.0


def uncalibrated(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Undo a softmax temperature: ``softmax(T * log p)`` = the probabilities at T = 1."""
    if temperature == 1.0:  # exactly the input: before/after figures then agree to the bit
        return np.asarray(probs, dtype=np.float64)
    logits = temperature * np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-30, None))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def evaluate_labels(
    y_true: Sequence[str], y_pred: Sequence[str], known: Sequence[str]
) -> dict[str, Any]:
    """Metrics of predicted against true *label names* on a newly labelled corpus.

    ``known`` are the model's labels. A true label it does not know cannot be predicted: it
    is reported in ``unknown_labels`` (label → rows), kept in the confusion matrix (after the
    known labels, so every row is counted) and counts as wrong in ``accuracy``;
    ``accuracy_known`` is the accuracy on the rows whose label the model knows.
    """
    known = [str(label) for label in known]
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}")
    unknown: dict[str, int] = {}
    for label in y_true:
        if label not in known:
            unknown[label] = unknown.get(label, 0) + 1
    labels = known + sorted(unknown)
    index = {label: i for i, label in enumerate(labels)}
    t = np.fromiter((index[label] for label in y_true), dtype=np.int64, count=len(y_true))
    p = np.fromiter((index[label] for label in y_pred), dtype=np.int64, count=len(y_pred))
    metrics = compute_metrics(t, p, labels)
    is_known = t < len(known)
    n_known = int(is_known.sum())
    metrics["unknown_labels"] = dict(sorted(unknown.items()))
    metrics["accuracy_known"] = float((t == p)[is_known].mean()) if n_known else 0.0
    metrics["n_known"] = n_known
    return metrics


def check_labels_overlap(
    y_true: Sequence[str], known: Sequence[str], source: str | Sequence[str]
) -> None:
    """Refuse a labelled corpus none of whose labels the model knows (``1``/``0`` where it
    learnt ``pos``/``neg``): every row would count as wrong, and an accuracy of 0 would
    read as a model failure when the labels are just spelt differently."""
    counts = Counter(y_true)
    if not counts or any(label in counts for label in known):
        return
    common = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    seen = ", ".join(f"{display.plain(label)!r} ({n:,})" for label, n in common[:5])
    more = f" and {len(common) - 5:,} more" if len(common) > 5 else ""
    names = ", ".join(repr(display.plain(label)) for label in known)
    where = source if isinstance(source, str) else ", ".join(source)
    raise InputError(
        f"{where}: none of its labels is one of the model's ({names}); it has {seen}{more}"
    )
