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
    assert lines[-1].startswith("zhflow: error: --train-param: epochs: Input should be a valid")
    assert len(lines) == 2
