from __future__ import annotations

import numpy as np
import pytest

from tasks.evaluate import compute_metrics, confusion_matrix, format_confusion_markdown, macro_f1

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
