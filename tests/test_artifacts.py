"""Artifact builders (pure: rows and markdown from dicts) and plots; no Prefect server."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import polars as pl
import pytest

from zhflow.flows import artifacts as art
from zhflow.tasks import plots

METRICS = {
    "n": 20,
    "accuracy": 0.85,
    "macro_f1": 0.8484848,
    "labels": ["neg", "pos"],
    "per_class": {
        "neg": {"precision": 0.9, "recall": 0.8, "f1": 0.847058, "support": 10},
        "pos": {"precision": 0.818181, "recall": 0.9, "f1": 0.857142, "support": 10},
    },
    "confusion_matrix": [[8, 2], [1, 9]],
    "split": "test",
}
PROFILE = {
    "rows": 12_345,
    "rows_kept": 96,
    "empty_or_null_texts": 4,
    "null_labels": 0,
    "duplicate_texts": 2,
    "labels": {"neg": 48, "pos": 48},
    "text_length": {"min": 3, "p50": 14.0, "max": 40, "mean": 15.1234},
    "small_labels": [],
    "splits": {"test": 10, "train": 76, "valid": 10},
}
HISTORY = [
    {
        "epoch": e,
        "train_loss": 1 / e,
        "valid_loss": 1.2 / e,
        "valid_accuracy": 0.5 + e / 10,
        "valid_macro_f1": 0.45 + e / 10,
    }
    for e in (1, 2, 3)
]


def test_keys_are_valid_prefect_keys() -> None:
    assert len(set(art.KEYS)) == len(art.KEYS)
    for key in art.KEYS:
        assert re.fullmatch(r"[a-z0-9-]+", key), key
        assert key.startswith("zhflow-")


def test_profile_rows_flatten_labels_splits_and_lengths() -> None:
    rows = {r["metric"]: r["value"] for r in art.profile_rows(PROFILE)}
    assert rows["rows"] == "12,345" and rows["rows_kept"] == "96"
    assert rows["empty_or_null_texts"] == "4"
    assert rows["label pos"] == "48 (50.0%)"
    assert rows["split train"] == "76"
    assert rows["text length mean"] == "15.1" and rows["text length p50"] == "14.0"
    assert all(set(r) == {"metric", "value"} for r in art.profile_rows(PROFILE))


def test_ngram_rows_keep_the_top_per_n_in_count_order() -> None:
    table = pl.DataFrame(
        {
            "n": [1, 1, 1, 2, 2],
            "ngram": ["很", "好", "差", "很 好", "太 差"],
            "count": [9, 7, 8, 5, 6],
            "doc_freq": [5, 4, 4, 3, 3],
        }
    )
    rows = art.ngram_rows(table, top=2)
    assert [(r["n"], r["ngram"]) for r in rows] == [
        (1, "很"),
        (1, "差"),
        (2, "太 差"),
        (2, "很 好"),
    ]
    assert rows[0]["count"] == "9" and rows[0]["doc_freq"] == "5"
    assert art.ngram_rows(table.head(0)) == []


def test_ngram_rows_leave_out_punctuation_only_entries() -> None:
    table = pl.DataFrame(
        {
            "n": [1, 1, 1, 1, 2, 2, 2],
            "ngram": ["，", "好", "！！", "…", "， 。", "好 ，", "很 好"],
            "count": [5000, 7, 900, 800, 600, 5, 4],
            "doc_freq": [90, 4, 80, 70, 60, 3, 3],
        }
    )
    rows = art.ngram_rows(table, top=5)
    assert [(r["n"], r["ngram"]) for r in rows] == [(1, "好"), (2, "好 ，"), (2, "很 好")]
    assert rows[0]["count"] == "7"


def test_vocab_rows_summary_then_top_tokens() -> None:
    vocab = pl.DataFrame(
        {
            "id": [0, 1, 2, 3, 4, 5],
            "token": ["<pad>", "<unk>", "好", "差", "，", "。"],
            "count": [0, 0, 5, 12_009, 40_000, 30_000],
            "doc_freq": [0, 0, 3, 4, 9, 9],
        }
    )
    summary = {"size": 4, "token_occurrences": 1_234_567, "coverage": 0.7}
    rows = art.vocab_rows(summary, vocab, top=5)
    assert rows[:3] == [
        {"item": "size", "value": "4"},
        {"item": "token_occurrences", "value": "1,234,567"},
        {"item": "coverage", "value": "0.7000"},
    ]
    assert rows[3:] == [{"item": "token 差", "value": "12,009"}, {"item": "token 好", "value": "5"}]


def test_metrics_rows_per_class_macro_and_accuracy() -> None:
    rows = art.metrics_rows(METRICS)
    assert [r["class"] for r in rows] == ["neg", "pos", "macro avg", "accuracy"]
    assert rows[0] == {"class": "neg", "precision": "0.9000", "recall": "0.8000", "f1": "0.8471",
                       "support": "10"}  # fmt: skip
    assert rows[-1] == {"class": "accuracy", "precision": "", "recall": "", "f1": "0.8500",
                        "support": "20"}  # fmt: skip
    assert rows[2]["f1"] == "0.8485"
    assert "0.8500" in art.metrics_description(METRICS)


def test_confusion_markdown_counts_beside_row_shares_and_names_the_plots() -> None:
    text = art.confusion_markdown(METRICS, {"training curve": ["/w/metrics/k/training_curve.png"]})
    assert "| true \\ predicted | neg | pos | texts |" in text
    assert "| neg | 8 (80.0%) | 2 (20.0%) | 10 |" in text.replace("**", "")
    assert "| pos | 1 (10.0%) | 9 (90.0%) | 10 |" in text.replace("**", "")
    assert "`/w/metrics/k/training_curve.png`" in text
    assert "accuracy **0.8500**" in text
    assert "## Files" not in art.confusion_markdown(METRICS)
    assert "data:image" not in text


def test_confusion_markdown_with_the_png_inline(tmp_path: Path) -> None:
    matrix, labels = METRICS["confusion_matrix"], METRICS["labels"]
    png = plots.plot_confusion(matrix, labels, tmp_path / "c.png")  # type: ignore[arg-type]
    text = art.confusion_markdown(METRICS, image=png)
    found = re.search(r"!\[confusion matrix\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert found is not None
    assert base64.b64decode(found.group(1)) == png.read_bytes()


def test_png_markdown_round_trips_the_file(tmp_path: Path) -> None:
    png = plots.plot_training_curve(HISTORY, tmp_path / "t.png", best_epoch=3)
    text = art.png_markdown(png, "training curve")
    assert text.startswith("![training curve](data:image/png;base64,") and text.endswith(")")
    assert base64.b64decode(text.split(",", 1)[1][:-1]) == png.read_bytes()
    assert png.stat().st_size < 60_000  # small enough to inline in every run's artifact


def test_history_rows_one_per_epoch_with_the_best_marked() -> None:
    history = {"epochs": [{**r, "seconds": 1234.56 * r["epoch"]} for r in HISTORY],
               "best_epoch": 2, "seconds": 7000.0}  # fmt: skip
    rows = art.history_rows(history)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["best"] for r in rows] == ["", "best", ""]
    assert rows[0] == {"epoch": "1", "train_loss": "1.0000", "valid_loss": "1.2000",
                       "valid_accuracy": "0.6000", "valid_macro_f1": "0.5500",
                       "seconds": "1,234.6", "best": ""}  # fmt: skip
    text = art.curve_markdown(history, None)
    assert "best epoch **2** of 3" in text and "7,000.0 s" in text


def test_leaderboard_rows_rank_and_format() -> None:
    entries = [{"run": "a", "corpus": "x.csv", "tokenizer": "char", "model": "bilstm h8 x1",
                "settings": "epochs 1", "accuracy": 0.9, "macro_f1": 0.85, "cached": True,
                "bundle": "/w/bundle/k"}]  # fmt: skip
    (row,) = art.leaderboard_rows(entries)
    assert row["rank"] == "1" and row["accuracy"] == "0.9000" and row["macro_f1"] == "0.8500"
    assert row["cached"] == "yes" and row["bundle"] == "/w/bundle/k"


def test_score_rows_label_distribution() -> None:
    summary = {"rows": 10_000, "seconds": 0.12345, "docs_per_s": 81_000.0, "empty_texts": 1,
               "output": "/o.parquet", "labels": {"neg": 3_000, "pos": 6_000},
               "empty_inputs": ["/in/quiet.csv", "/in/none.csv"],
               "confidence": {"mean": 0.9, "p05": 0.51234, "p50": 0.97},
               "label_accuracy": {"column": "label", "rows": 9_000, "correct": 8_100,
                                  "accuracy": 0.9}}  # fmt: skip
    rows = {r["item"]: r["value"] for r in art.score_rows(summary)}
    assert rows["rows"] == "10,000" and rows["seconds"] == "0.1"
    assert rows["docs_per_s"] == "81,000.0"
    assert rows["label pos"] == "6,000 (66.7%)" and rows["label neg"] == "3,000 (33.3%)"
    assert rows["confidence p05"] == "0.5123" and rows["confidence p50"] == "0.9700"
    assert rows["accuracy vs input column 'label'"] == "0.9000 (8,100 of 9,000)"
    assert "confidence mean" in rows and rows["output"] == "/o.parquet"
    assert rows["inputs skipped: no rows"] == "/in/quiet.csv, /in/none.csv"
    assert "inputs skipped: no rows" not in {
        r["item"] for r in art.score_rows({"rows": 1, "empty_inputs": []})
    }


def test_score_rows_name_the_labels_the_model_does_not_know() -> None:
    truth = {"column": "label", "rows": 4, "correct": 1, "accuracy": 0.25,
             "unknown_labels": {"neutral": 2}, "accuracy_known": 0.5}  # fmt: skip
    rows = {r["item"]: r["value"] for r in art.score_rows({"label_accuracy": truth})}
    assert rows["accuracy vs input column 'label'"] == "0.2500 (1 of 4)"
    assert rows["labels unknown to the model (counted wrong)"] == "neutral (2)"
    assert rows["accuracy on known labels"] == "0.5000"
    plain = {r["item"] for r in art.score_rows({"label_accuracy": {**truth, "unknown_labels": {}}})}
    assert "accuracy on known labels" not in plain


def test_progress_percent_is_bounded() -> None:
    assert art.progress_percent(0, 10) == 0.0
    assert art.progress_percent(5, 10) == 50.0
    assert art.progress_percent(10, 10) == 100.0
    assert art.progress_percent(12, 10) == 100.0
    assert art.progress_percent(3, None) == 0.0
    assert art.progress_percent(999, 1000) <= 99.9


def test_estimate_rows(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    csv.write_text("text,label\n好,pos\n差,neg\n差,neg", encoding="utf-8")
    assert art.estimate_rows(str(csv)) == 3
    pq = tmp_path / "b.parquet"
    pl.DataFrame({"text": ["x"] * 7}).write_parquet(pq)
    assert art.estimate_rows(str(pq)) == 7
    folder = tmp_path / "lines"
    folder.mkdir()
    (folder / "pos.txt").write_text("好\n很好\n", encoding="utf-8")
    assert art.estimate_rows(str(folder), "lines") == 2
    assert art.estimate_rows(str(tmp_path / "missing.csv")) is None


def test_publishers_do_nothing_outside_a_prefect_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a flow or task run no API call is made (a unit test must not start a server)."""
    import prefect.artifacts

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("artifact API called outside a run")

    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", boom)
    monkeypatch.setattr(prefect.artifacts, "create_progress_artifact", boom)
    assert not art.in_prefect_run()
    assert art.publish_corpus_profile(PROFILE, ["/x/tiny.csv"]) is None
    assert art.publish_score_summary({"rows": 1, "labels": {}}) is None
    bar = art.Progress(art.KEY_TRAINING_PROGRESS, "training")
    bar.update(50.0, "half")
    bar.finish("done")
    assert bar.artifact_id is None


def _is_png(path: Path) -> bool:
    return (
        path.is_file()
        and path.stat().st_size > 1000
        and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    )


def test_training_curve_png(tmp_path: Path) -> None:
    out = plots.plot_training_curve(HISTORY, tmp_path / "m" / plots.TRAINING_CURVE, best_epoch=3)
    assert _is_png(out)
    assert _is_png(plots.plot_training_curve([], tmp_path / "empty.png"))
    assert not list(tmp_path.rglob("*.tmp"))


def test_confusion_png_with_chinese_labels(tmp_path: Path) -> None:
    out = plots.plot_confusion([[8, 2, 0], [1, 9, 0], [0, 1, 4]], ["负面", "正面", "中性"],
                               tmp_path / plots.CONFUSION_PNG)  # fmt: skip
    assert _is_png(out)


def test_calibration_markdown_with_the_reliability_diagram_inline(tmp_path: Path) -> None:
    from zhflow.tasks import evaluate

    probs = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]
    y = [0, 1, 1, 1]
    before = evaluate.uncalibrated(probs, 2.0)  # type: ignore[arg-type]  # lists work too
    png = plots.plot_reliability(
        evaluate.reliability_bins(before, y), evaluate.reliability_bins(probs, y),
        tmp_path / "r.png", evaluate.expected_calibration_error(before, y),
        evaluate.expected_calibration_error(probs, y),
    )  # fmt: skip
    metrics = {"calibration": {"temperature": 2.0, "mix": 0.7, "ece_before": 0.31,
                               "ece_after": 0.12, "bins": 15, "log_loss_before": 0.61,
                               "log_loss_after": 0.42}}  # fmt: skip
    text = art.calibration_markdown(metrics, png)
    assert "temperature **2.000**" in text and "**0.3100** before → **0.1200** after" in text
    assert "log-loss **0.6100** → **0.4200**" in text
    del metrics["calibration"]["log_loss_after"]  # an older run's metrics.json: no log-loss
    assert "log-loss" not in art.calibration_markdown(metrics, png)
    found = re.search(r"!\[reliability diagram\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert found is not None and base64.b64decode(found.group(1)) == png.read_bytes()
    assert "without calibration" in art.calibration_markdown({}, None)


def test_log_loss_agrees_with_scikit_learn() -> None:
    import numpy as np
    from sklearn.metrics import log_loss as sklearn_log_loss

    from zhflow.tasks import evaluate

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=50)
    y = rng.integers(0, 4, size=50)
    expected = sklearn_log_loss(y, probs, labels=[0, 1, 2, 3])
    assert evaluate.log_loss(probs, y) == pytest.approx(expected, rel=1e-9)
    # A right answer at probability 1 costs nothing; a wrong one at 0 is large but finite.
    assert str(evaluate.log_loss([[1.0, 0.0]], [0])) == "0.0"  # not "-0.0" in metrics.json
    assert 30 < evaluate.log_loss([[1.0, 0.0]], [1]) < 40
    assert evaluate.log_loss(np.empty((0, 2)), []) == 0.0


def test_expected_calibration_error_by_hand() -> None:
    from zhflow.tasks import evaluate

    # Two rows at confidence 0.9 (one right), one at 0.6 (right): bins (0.8, 0.867] is empty,
    # 0.9 falls in (0.867, 0.933]: |0.5 - 0.9| x 2/3; 0.6 in (0.6 - eps...]: |1 - 0.6| x 1/3.
    probs = [[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]]
    y = [0, 0, 0]
    assert evaluate.expected_calibration_error(probs, y) == pytest.approx(0.4 * 2 / 3 + 0.4 / 3)
    assert evaluate.uncalibrated(probs, 1.0).tolist() == probs  # type: ignore[arg-type]
    # softmax(T log p) undoes a temperature T: p = softmax(z / T) → softmax(z).
    import numpy as np

    z = np.array([[2.0, -1.0]])
    p = np.exp(z / 3) / np.exp(z / 3).sum()
    assert evaluate.uncalibrated(p, 3.0) == pytest.approx(np.exp(z) / np.exp(z).sum())
