"""zhflow serve's building blocks, without a server (the live serve test is in test_ui.py)."""

from __future__ import annotations

import pytest

from zhflow.flows.serve import ServeError, build_deployments, check_server, parse_params


def test_parse_params_reads_json_values_and_dashed_keys() -> None:
    params = parse_params(("epochs=3", "embedding-dim=64", "model=gru"),
                          {"epochs", "embedding_dim", "model"}, "--train-param")  # fmt: skip
    assert params == {"epochs": 3, "embedding_dim": 64, "model": "gru"}


@pytest.mark.parametrize("pair", ["epochs", "=3", "layers=2"])
def test_parse_params_rejects_bad_pairs(pair: str) -> None:
    with pytest.raises(ServeError, match="--train-param"):
        parse_params((pair,), {"epochs"}, "--train-param")


def test_build_deployments_has_schedules_and_parameters(tmp_path) -> None:
    deployments = build_deployments(
        corpus=("reviews.csv",), workdir=str(tmp_path / "w"), score_input=("in.csv",),
        score_output=str(tmp_path / "out.parquet"), train_cron="0 2 * * *", score_interval=600,
        train_params={"epochs": 3},
    )  # fmt: skip
    assert [d.name for d in deployments] == ["nightly", "nightly"]
    train, score = deployments
    assert train.parameters["epochs"] == 3 and train.parameters["workdir"] == str(tmp_path / "w")
    assert train.schedules and score.schedules


def test_check_server_needs_an_api_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(ServeError):
        check_server()


def test_build_deployments_serves_the_evaluation_on_its_own_schedule(tmp_path) -> None:
    deployments = build_deployments(
        workdir=str(tmp_path / "w"), eval_input=("labelled.csv",), eval_cron="30 7 * * *",
        eval_params={"min_accuracy": 0.9},
    )  # fmt: skip
    assert [d.flow_name for d in deployments] == ["zhflow-train", "zhflow-evaluate"]
    evaluate = deployments[1]
    assert evaluate.name == "nightly"
    assert evaluate.parameters["bundle"] == str((tmp_path / "w").resolve())  # the latest bundle
    assert evaluate.parameters["corpus"] == [str((tmp_path.cwd() / "labelled.csv").resolve())]
    assert evaluate.parameters["output_root"] == str((tmp_path / "w" / "evaluations").resolve())
    assert evaluate.parameters["min_accuracy"] == 0.9
    assert evaluate.schedules[0].schedule.cron == "30 7 * * *"


def test_a_parameter_of_the_wrong_type_is_one_line_before_any_server(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from zhflow.flows import server
    from zhflow.flows.cli import main

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("reached the server")

    monkeypatch.setattr(server, "connect", no_server)
    result = CliRunner().invoke(main, ["serve", "--corpus", str(tmp_path / "nope.csv"),
                                       "--train-param", "epochs=abc"])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (f"zhflow serve: warning: --corpus {tmp_path / 'nope.csv'} does not exist "
                        "(yet): its runs fail until it does")  # fmt: skip
    assert lines[-1] == (
        "zhflow: error: --train-param epochs=\"abc\": 'abc' is not a valid integer range."
    )  # click's IntRange words it so
    assert len(lines) == 2


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--train-interval", "1e300"], "is not in the range 1<=x<=31622400"),
        (["--score-interval", "nan"], "'nan' is not a finite number"),
        (["--train-name", "a/b"], "--train-name 'a/b': a deployment name cannot hold /"),
        (["--eval-name", " "], "--eval-name is empty"),
        (["--train-param", "lr=NaN"], "--train-param lr=NaN: nan is not a finite number"),
        (["--train-param", "epochs=0"], "--train-param epochs=0: 0 is not in the range x>=1"),
        (["--train-param", "tokenizer=klingon"], "'klingon' is not one of 'jieba'"),
        (["--train-param", "seed=99999999999"], "is not in the range 0<=x<=4294967295"),
        (["--train-param", "valid_frac=0.8", "--train-param", "test_frac=0.5"],
         "bad split fractions (valid 0.8, test 0.5)"),
        (["--train-param", "ngram_features=1"], "1 is neither 0 (off) nor >= 2"),
        (["--train-param", "wide_word_ngrams=0", "--train-param", "wide_char_ngrams=0"],
         "--wide: "),
        (["--eval-input", "{corpus}", "--eval-param", "min_accuracy=NaN"],
         "min_accuracy=NaN: nan is not a finite number"),
        (["--score-input", "{corpus}", "--score-output", "{tmp}/out.csv"],
         "--output must be a .parquet file"),
        (["--score-input", "{corpus}", "--score-output", "{corpus}"], "--output is the input"),
        (["--workdir", "{corpus}"], "is a file, not a folder"),
        (["--score-cron", "* * * * * *"], "a cron expression has 5 fields"),
        (["--train-cron", ""], "a cron expression has 5 fields (minute hour day month "
                               "weekday), this has 0"),
    ],
)  # fmt: skip
def test_serve_refuses_what_run_score_and_evaluate_refuse_before_any_server(
    tmp_path, monkeypatch: pytest.MonkeyPatch, args: list[str], said: str
) -> None:
    from click.testing import CliRunner

    from zhflow.flows import server
    from zhflow.flows.cli import main

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("reached the server")

    monkeypatch.setattr(server, "connect", no_server)
    corpus = tmp_path / "c.csv"
    corpus.write_text("text,label\n" + "".join(f"好吃{i},pos\n难吃{i},neg\n" for i in range(6)),
                      encoding="utf-8")  # fmt: skip
    filled = [a.format(corpus=corpus, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, ["serve", "--corpus", str(corpus),
                                       "--workdir", str(tmp_path / "w"), *filled])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(errors) == 1 and said in errors[0], result.stderr
