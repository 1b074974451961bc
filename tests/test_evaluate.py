from __future__ import annotations

import numpy as np
import pytest

from zhflow.tasks.evaluate import (
    compute_metrics,
    confusion_matrix,
    format_confusion_markdown,
    macro_f1,
)

# true:  a a b b b c c      (c is never predicted)
# pred:  a b b b a a b
Y_TRUE = np.array([0, 0, 1, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 0, 1])
LABELS = ["a", "b", "c"]


def test_compute_metrics_matches_hand_computed_values() -> None:
    m = compute_metrics(Y_TRUE, Y_PRED, LABELS)
    assert m["n"] == 7
    assert m["labels"] == LABELS
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [1, 1, 0]]
    assert m["accuracy"] == pytest.approx(3 / 7)

    a, b, c = (m["per_class"][k] for k in LABELS)
    # a: tp=1, predicted 3 times, support 2
    assert a == pytest.approx({"precision": 1 / 3, "recall": 1 / 2, "f1": 0.4, "support": 2})
    # b: tp=2, predicted 4 times, support 3
    assert b == pytest.approx({"precision": 1 / 2, "recall": 2 / 3, "f1": 4 / 7, "support": 3})
    # c: never predicted -> precision 0/0 -> 0.0; recall 0/2
    assert c == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((0.4 + 4 / 7 + 0.0) / 3)
    assert macro_f1(Y_TRUE, Y_PRED, 3) == pytest.approx(m["macro_f1"])


def test_metrics_are_plain_json_types() -> None:
    import json

    m = compute_metrics(Y_TRUE, Y_PRED, LABELS)
    assert json.loads(json.dumps(m)) == m


def test_perfect_and_empty_predictions() -> None:
    y = np.array([0, 1, 2, 1])
    m = compute_metrics(y, y, LABELS)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    empty = compute_metrics(np.array([], dtype=np.int64), np.array([], dtype=np.int64), LABELS)
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.5], [0], 3)
    with pytest.raises(ValueError, match="unique"):
        compute_metrics([0], [0], ["a", "a"])


def test_confusion_markdown() -> None:
    md = format_confusion_markdown(compute_metrics(Y_TRUE, Y_PRED, ["正面", "负|面", "c"]))
    lines = md.strip().splitlines()
    assert lines[0] == "| true \\ predicted | 正面 | 负\\|面 | c |"
    assert lines[1] == "|---|---:|---:|---:|"
    assert lines[2] == "| **正面** | 1 | 1 | 0 |"
    assert len(lines) == 5


# Issue 13: a class with no test rows (e.g. a single-row class that went to train) has no F1
# to average; macro-F1 is over the classes present in the split, as scikit-learn's labels=.
# true:  a a b b          (c has no test rows, but is predicted once)
# pred:  a b b c
ABSENT_TRUE = np.array([0, 0, 1, 1])
ABSENT_PRED = np.array([0, 1, 1, 2])


def test_macro_f1_averages_over_classes_present_in_the_split() -> None:
    m = compute_metrics(ABSENT_TRUE, ABSENT_PRED, LABELS)
    # a: tp 1, predicted 1, support 2 -> P 1, R 1/2, F1 2/3
    # b: tp 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
    # c: support 0 -> not averaged (it would add a 0 and give (2/3 + 1/2 + 0) / 3 = 0.389)
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["f1"] == pytest.approx(1 / 2)
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["labels_absent"] == ["c"]
    assert "present" in m["macro_f1_over"]
    assert macro_f1(ABSENT_TRUE, ABSENT_PRED, 3) == pytest.approx(m["macro_f1"])
    # Nothing absent: the plain mean over all classes, as before.
    assert compute_metrics(Y_TRUE, Y_PRED, LABELS)["labels_absent"] == []


def test_macro_f1_matches_scikit_learn_with_labels_present() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn not installed")
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = int(rng.integers(2, 7))
        y_true = rng.integers(0, k - 1, size=40)  # the last class never in the split
        y_pred = rng.integers(0, k, size=40)
        present = sorted(set(y_true.tolist()))
        want = sklearn_metrics.f1_score(
            y_true, y_pred, labels=present, average="macro", zero_division=0
        )
        got = compute_metrics(y_true, y_pred, [f"c{i}" for i in range(k)])["macro_f1"]
        assert got == pytest.approx(want)
