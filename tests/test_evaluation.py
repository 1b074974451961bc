"""``zhflow evaluate``: metrics of a bundle on a labelled corpus (flows/evaluation.py,
tasks/evaluate.py:evaluate_labels), checked by hand on small fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

from zhflow.flows.cli import main
from zhflow.tasks.errors import InputError
from zhflow.tasks.evaluate import check_labels_overlap, evaluate_labels


def test_evaluate_labels_by_hand_with_a_label_the_model_does_not_know() -> None:
    # true:  a a a b b c     (c: unknown to the model)
    # pred:  a a b b a a
    m = evaluate_labels(list("aaabbc"), list("aabbaa"), known=["a", "b"])
    assert m["labels"] == ["a", "b", "c"]
    assert m["confusion_matrix"] == [[2, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(3 / 6)
    # a: P 2/4, R 2/3, F1 2*.5*.6667/(1.1667) = 4/7;  b: P 1/2, R 1/2, F1 1/2;  c: 0
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 2 / 3, "f1": 4 / 7, "support": 3}
    )
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"]["c"]["f1"] == 0.0 and m["per_class"]["c"]["support"] == 1
    assert m["macro_f1"] == pytest.approx((4 / 7 + 0.5 + 0) / 3)
    assert m["unknown_labels"] == {"c": 1}
    assert m["accuracy_known"] == pytest.approx(3 / 5) and m["n_known"] == 5


def test_evaluate_labels_all_known() -> None:
    m = evaluate_labels(["pos", "neg"], ["pos", "pos"], known=["neg", "pos"])
    assert m["unknown_labels"] == {} and m["confusion_matrix"] == [[0, 1], [0, 1]]
    assert m["accuracy"] == m["accuracy_known"] == 0.5


def test_a_corpus_with_none_of_the_models_labels_is_refused_in_one_line() -> None:
    check_labels_overlap(["pos", "neutral"], ["neg", "pos"], "a.csv")  # one known: measured
    check_labels_overlap([], ["neg", "pos"], "a.csv")  # nothing to measure: not this check's
    with pytest.raises(InputError) as refused:
        check_labels_overlap(["1", "0", "1", "1"], ["neg", "pos"], "new.csv")
    assert str(refused.value) == (
        "new.csv: none of its labels is one of the model's ('neg', 'pos'); it has '1' (3), '0' (1)"
    )
    many = [str(i) for i in range(7) for _ in range(7 - i)]  # '0' x7 ... '6' x1
    with pytest.raises(InputError, match=r"'4' \(3\) and 2 more$"):
        check_labels_overlap(many, ["neg", "pos"], ["a.txt", "b.txt"])


def _labelled(path: Path, rows: list[tuple[str, str]]) -> Path:
    pl.DataFrame({"review": [t for t, _ in rows], "y": [lab for _, lab in rows]}).write_csv(path)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import train_tiny_bundle

    return train_tiny_bundle(tmp_path_factory.mktemp("eval") / "bundle", epochs=2)


def test_evaluate_bundle_matches_the_predictions_and_writes_its_folder(
    bundle: Path, tmp_path: Path
) -> None:
    from zhflow.flows.evaluation import evaluate_bundle
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.predict import predict_texts

    rows = [("这家店的菜很好吃", "pos"), ("太难吃了，再也不会点", "neg"), ("质量很差", "neg"),
            ("物流很快，非常满意", "pos"), ("一般般吧", "neutral"), ("   ", "pos")]  # fmt: skip
    corpus = _labelled(tmp_path / "new.csv", rows)
    out = tmp_path / "eval"
    summary = evaluate_bundle(str(bundle), [str(corpus)], out, text_col="review", label_col="y")

    kept = rows[:5]  # the blank text is dropped and counted
    predicted = [p["label"] for p in predict_texts(load_bundle(bundle), [t for t, _ in kept])]
    right = sum(p == lab for p, (_, lab) in zip(predicted, kept, strict=True))
    assert summary["n"] == 5 and summary["empty_texts"] == 1 and summary["rows_read"] == 6
    assert summary["accuracy"] == pytest.approx(right / 5)
    assert summary["unknown_labels"] == {"neutral": 1}
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["labels"] == ["neg", "pos", "neutral"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 5
    assert metrics["confusion_matrix"][2] == [predicted[4] == "neg", predicted[4] == "pos", 0]
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "neutral" in (out / "confusion.md").read_text(encoding="utf-8")
    table = pl.read_parquet(out / "predictions.parquet")
    assert table["predicted"].to_list() == predicted
    assert table["correct"].sum() == right
    assert not list(out.glob(".*.tmp"))


def test_evaluate_refuses_to_write_into_the_bundle(bundle: Path, tmp_path: Path) -> None:
    from zhflow.flows.evaluation import evaluate_bundle

    corpus = _labelled(tmp_path / "new.csv", [("很好", "pos"), ("很差", "neg")])
    before = sorted(p.name for p in bundle.iterdir())
    with pytest.raises(InputError, match="inside the model bundle"):
        evaluate_bundle(str(bundle), [str(corpus)], bundle / "eval", text_col="review",
                        label_col="y")  # fmt: skip
    assert sorted(p.name for p in bundle.iterdir()) == before


def test_evaluate_bundle_refuses_labels_spelt_otherwise_before_writing(
    bundle: Path, tmp_path: Path
) -> None:
    from zhflow.flows.evaluation import evaluate_bundle

    corpus = _labelled(tmp_path / "new.csv", [("很好", "1"), ("很差", "0"), ("不错", "1")])
    with pytest.raises(InputError, match=r"new\.csv: none of its labels is one of the model's"):
        evaluate_bundle(str(bundle), [str(corpus)], tmp_path / "eval", text_col="review",
                        label_col="y")  # fmt: skip
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("where", ["other_bundle", "inside_other_bundle", "workdir_metrics"])
def test_evaluate_never_writes_into_another_sealed_folder(
    bundle: Path, tmp_path: Path, where: str
) -> None:
    from zhflow.flows.evaluation import evaluate_bundle
    from zhflow.tasks import catalog

    other = tmp_path / "other"  # another model bundle: a folder with a manifest
    other.mkdir()
    (other / "_manifest.json").write_text("{}", encoding="utf-8")
    workdir = tmp_path / "wd"  # a work dir (it has a cache folder) and one metrics artifact
    (workdir / catalog.CACHE_DIR).mkdir(parents=True)
    (workdir / "metrics" / "k").mkdir(parents=True)
    target = {"other_bundle": other, "inside_other_bundle": other / "eval",
              "workdir_metrics": workdir / "metrics" / "k"}[where]  # fmt: skip
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    corpus = _labelled(tmp_path / "new.csv", [("很好", "pos"), ("很差", "neg")])
    with pytest.raises(InputError, match=r"--output-dir is inside the (sealed folder|work dir)"):
        evaluate_bundle(str(bundle), [str(corpus)], target, text_col="review", label_col="y")
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p != corpus}
    assert after == before


def test_evaluate_never_overwrites_files_it_did_not_write(bundle: Path, tmp_path: Path) -> None:
    from zhflow.flows.evaluation import evaluate_bundle

    corpus = _labelled(tmp_path / "new.csv", [("很好", "pos"), ("很差", "neg")])
    mine = tmp_path / "myfiles"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep", encoding="utf-8")
    (mine / "metrics.json").write_text('{"mine": 1}', encoding="utf-8")
    with pytest.raises(InputError, match=r"holds metrics\.json that zhflow evaluate did not write"):
        evaluate_bundle(str(bundle), [str(corpus)], mine, text_col="review", label_col="y")
    assert (mine / "metrics.json").read_text(encoding="utf-8") == '{"mine": 1}'
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.json", "notes.txt"]
    # A folder with other files only takes the evaluation beside them; a rerun replaces it.
    (mine / "metrics.json").unlink()
    for _ in range(2):
        evaluate_bundle(str(bundle), [str(corpus)], mine, text_col="review", label_col="y")
    assert (mine / "notes.txt").read_text(encoding="utf-8") == "keep"
    assert json.loads((mine / "metrics.json").read_text(encoding="utf-8"))["n"] == 2


def test_check_min_accuracy_message() -> None:
    from zhflow.flows.evaluation import check_min_accuracy

    metrics = {"accuracy": 0.5, "macro_f1": 0.4, "n": 10}
    assert check_min_accuracy(metrics, None) is None
    assert check_min_accuracy(metrics, 0.5) is None
    assert check_min_accuracy(metrics, 0.8) == (
        "accuracy 0.5000 is below --min-accuracy 0.8 (10 texts; macro-F1 0.4000)"
    )


@pytest.mark.prefect
def test_evaluate_command_artifacts_and_exit_code_under_min_accuracy(
    prefect_server, bundle: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from zhflow.flows.evaluation import KEY_EVAL_CONFUSION, KEY_EVAL_METRICS

    # One label the bundle does not know: accuracy is below 1.0 whatever it predicts.
    corpus = _labelled(tmp_path / "new.csv", [("很好吃", "pos"), ("很难吃", "neg"),
                                              ("还行", "neutral")])  # fmt: skip
    args = ["evaluate", "--model", str(bundle), str(corpus), "--text-col", "review",
            "--label-col", "y", "--json"]  # fmt: skip
    ok = CliRunner().invoke(main, [*args, "--output-dir", str(tmp_path / "a"),
                                   "--min-accuracy", "0"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["unknown_labels"] == {"neutral": 1} and summary["n"] == 3
    assert summary["output_dir"] == str((tmp_path / "a").resolve())

    low = CliRunner().invoke(main, [*args, "--output-dir", str(tmp_path / "b"),
                                    "--min-accuracy", "1.0"])  # fmt: skip
    assert low.exit_code == 4
    errors = [line for line in low.stderr.splitlines() if line.startswith("zhflow: error:")]
    assert errors == [
        f"zhflow: error: accuracy {summary['accuracy']:.4f} is below --min-accuracy 1 "
        f"(3 texts; macro-F1 {summary['macro_f1']:.4f})"
    ]
    assert "Traceback" not in low.stderr
    assert json.loads(low.stdout.strip().splitlines()[-1])["accuracy"] == summary["accuracy"]
    assert (tmp_path / "b" / "metrics.json").is_file()  # the metrics are kept

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[KEY_EVAL_METRICS, KEY_EVAL_CONFUSION])
            )
        )
        runs = client.read_flow_runs()
    assert {a.key for a in found} == {KEY_EVAL_METRICS, KEY_EVAL_CONFUSION}
    table: Any = next(a for a in found if a.key == KEY_EVAL_METRICS)
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["class"] for r in rows} >= {"neg", "pos", "neutral", "accuracy"}
    confusion: Any = next(a for a in found if a.key == KEY_EVAL_CONFUSION)
    assert "](data:image/png;base64," in confusion.data  # the plot inline, not just its path
    states = sorted(r.state_type.value for r in runs if r.name == "evaluate-new")  # type: ignore[union-attr]
    assert states == ["COMPLETED", "FAILED"]  # the run under --min-accuracy failed, visibly


def test_evaluate_bad_column_is_one_line(bundle: Path, tmp_path: Path) -> None:
    corpus = _labelled(tmp_path / "new.csv", [("很好", "pos"), ("很差", "neg")])
    from zhflow.flows.evaluation import evaluate_bundle

    with pytest.raises(InputError, match="nope"):
        evaluate_bundle(str(bundle), [str(corpus)], tmp_path / "o", text_col="nope")
