"""zhflow as Prefect users run it: a real ``prefect server start`` on a free loopback port, a
training run against it, its artifacts by key, the UI in headless Chromium, and ``zhflow
serve`` firing scheduled runs of both deployments.

One server for the module (~20-50 s to start); everything binds to 127.0.0.1. The browser
test needs Debian's ``chromium`` (``.ci/run`` installs it) and the ``playwright`` package
(the ``dev`` extra); ``playwright install`` is not needed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from tests.conftest import tiny_corpus_rows
from zhflow.flows import artifacts as art

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
BIN = Path(sys.executable).parent
TINY = ["--tokenizer", "char", "--epochs", "1", "--hidden", "8", "--embedding-dim", "8"]
TRAIN_PARAMS = [f"--train-param={k[2:]}={v}" for k, v in zip(TINY[::2], TINY[1::2], strict=True)]
RUN_NAME = "tiny-gru-train"  # flow_run_name: corpus stem, model (default gru), until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGINT (Prefect shuts down cleanly, serve pauses its schedules), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _log_tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``prefect server start`` + one tiny ``zhflow run`` against it."""
    tmp = tmp_path_factory.mktemp("live")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect_home"),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,  # else the UI calls 127.0.0.1:4200
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # `zhflow serve` picks due runs up quickly
        "PREFECT_LOGGING_LEVEL": "INFO",
        "COLUMNS": "250",  # rich tables of the prefect CLI: no truncated names
        "OMP_NUM_THREADS": "1",
        # Interval schedules of 10 s: let the server pre-create a few runs, not 100 each.
        "PREFECT_SERVER_SERVICES_SCHEDULER_MAX_RUNS": "3",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_RUNS": "1",
        "PREFECT_SERVER_SERVICES_SCHEDULER_MIN_SCHEDULED_TIME": "PT60S",
    }
    env.pop("PREFECT_PROFILE", None)
    server_log = tmp / "server.log"
    started = time.monotonic()
    with open(server_log, "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prefect server did not start:\n{_log_tail(server_log)}")
            time.sleep(0.5)
        server_seconds = time.monotonic() - started

        corpus = tmp / "tiny.csv"
        rows = tiny_corpus_rows()
        pl.DataFrame({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}).write_csv(
            corpus
        )
        workdir = tmp / "work"
        t0 = time.monotonic()
        done = subprocess.run(
            [str(BIN / "zhflow"), "run", str(corpus), "--workdir", str(workdir), *TINY, "--json"],
            env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        yield {
            "api": api,
            "ui": api.removesuffix("/api"),
            "env": env,
            "tmp": tmp,
            "corpus": corpus,
            "workdir": workdir,
            "summary": summary,
            "run_log": done.stdout + done.stderr,
            "timings": {"server_start_s": server_seconds, "zhflow_run_s": time.monotonic() - t0},
        }
    finally:
        _stop(server)


def _read_artifacts(api: str, keys: list[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
        )


def test_run_against_server_publishes_keyed_artifacts_and_plots(live: dict) -> None:
    summary = live["summary"]
    keys = [art.KEY_PROFILE, art.KEY_NGRAMS, art.KEY_VOCAB, art.KEY_SEGMENT_PROGRESS,
            art.KEY_TRAINING_PROGRESS, art.KEY_METRICS, art.KEY_CONFUSION]  # fmt: skip
    found = {a.key: a for a in _read_artifacts(live["api"], keys)}
    assert set(found) == set(keys), live["run_log"][-3000:]
    assert found[art.KEY_TRAINING_PROGRESS].data == 100.0
    assert found[art.KEY_SEGMENT_PROGRESS].data == 100.0
    metrics = found[art.KEY_METRICS]
    rows = json.loads(metrics.data) if isinstance(metrics.data, str) else metrics.data
    accuracy_row = next(r for r in rows if r["class"] == "accuracy")
    assert accuracy_row["f1"] == f"{summary['accuracy']:.4f}"  # table cells: fixed decimals
    assert f"{summary['accuracy']:.4f}" in metrics.description
    confusion = found[art.KEY_CONFUSION].data
    assert "training_curve.png" in confusion and "confusion.png" in confusion
    # The PNGs exist in the metrics folder and in the bundle, as the markdown says.
    for folder in (summary["artifacts"]["metrics"], summary["model"]):
        for name in ("training_curve.png", "confusion.png"):
            assert Path(folder, name).stat().st_size > 1000
            assert str(Path(folder, name)) in confusion
    # Terminal progress: segmentation and the epoch line.
    assert "segmentation: 96/96 texts" in live["run_log"]
    assert "epoch 1/1" in live["run_log"]
    # `prefect artifact ls` lists them by key too.
    listing = subprocess.run([str(BIN / "prefect"), "artifact", "ls"], env=live["env"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    for key in keys:
        assert key in listing.stdout
    print("timings", live["timings"])


def test_ui_in_headless_chromium_lists_the_run_and_shows_accuracy(live: dict) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: `apt-get install -y chromium` (.ci/run installs it)")
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (dev extra)"
    )
    accuracy = f"{live['summary']['accuracy']:.4f}"
    shots = live["tmp"] / "screenshots"
    shots.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{live['ui']}/runs")
            page.get_by_text(RUN_NAME).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "runs.png"))
            page.goto(f"{live['ui']}/artifacts/key/{art.KEY_METRICS}")
            page.get_by_text(accuracy).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert art.KEY_METRICS in body and f"accuracy {accuracy}" in body
            page.screenshot(path=str(shots / "metrics.png"), full_page=True)
        finally:
            browser.close()
    for name in ("runs.png", "metrics.png"):
        assert (shots / name).stat().st_size > 1000


# -- issue 15: plots inline, runs compared ------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Two trainings with different settings in a work dir of their own (the leaderboard's).
BOARD_RUNS = (["--epochs", "2"], ["--epochs", "3", "--hidden", "12"])


def _browser_page(p: Any) -> tuple[Any, Any]:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": 1400, "height": 1000})


def _playwright() -> Any:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: `apt-get install -y chromium` (.ci/run installs it)")
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")


def _latest(api: str, key: str) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        (found,) = client.read_latest_artifacts(
            artifact_filter=ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
        )
    return found


def _artifact_page(live: dict, key: str) -> str:
    """The page of a key's latest version, where the UI renders its content (the key's own
    page lists the versions)."""
    return f"{live['ui']}/artifacts/artifact/{_latest(live['api'], key).latest_id}"


def _table_rows(artifact: Any) -> list[dict[str, Any]]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


@pytest.fixture(scope="module")
def board_runs(live: dict) -> list[dict[str, Any]]:
    workdir = live["tmp"] / "work-board"
    summaries = []
    for settings in BOARD_RUNS:
        done = subprocess.run(
            [str(BIN / "zhflow"), "run", str(live["corpus"]), "--workdir", str(workdir), *TINY,
             *settings, "--json"],
            env=live["env"], capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        summaries.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return summaries


def test_ui_shows_the_confusion_matrix_and_training_curve_inline(live: dict) -> None:
    playwright = _playwright()
    drawn = {f.read_bytes() for f in live["tmp"].rglob("metrics/*/*.png")}
    seen: dict[str, bytes] = {}
    with playwright.sync_playwright() as p:
        browser, page = _browser_page(p)
        try:
            for key in (art.KEY_CONFUSION, art.KEY_CURVE):
                page.goto(_artifact_page(live, key))
                image = page.locator('img[src^="data:image/png;base64,"]').first
                image.wait_for(timeout=60_000)
                # Decoded by the browser, not just present in the markup.
                page.wait_for_function("(img) => img.complete && img.naturalWidth > 100",
                                       arg=image.element_handle(), timeout=30_000)  # fmt: skip
                seen[key] = base64.b64decode(image.get_attribute("src").split(",", 1)[1])
            body = page.inner_text("body")
        finally:
            browser.close()
    for key, png in seen.items():
        assert png[:8] == PNG_MAGIC and png in drawn, key
    assert "best epoch" in body


def test_history_artifact_has_a_row_per_epoch(live: dict, board_runs: list[dict]) -> None:
    epochs = int(BOARD_RUNS[-1][1])
    rows = _table_rows(_latest(live["api"], art.KEY_HISTORY))
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, epochs + 1)]
    assert [r["best"] for r in rows].count("best") == 1
    assert set(rows[0]) == {"epoch", "train_loss", "valid_loss", "valid_accuracy",
                            "valid_macro_f1", "seconds", "best"}  # fmt: skip
    playwright = _playwright()
    with playwright.sync_playwright() as p:
        browser, page = _browser_page(p)
        try:
            page.goto(_artifact_page(live, art.KEY_HISTORY))
            page.get_by_text("valid_macro_f1").first.wait_for(timeout=60_000)
            table = page.locator("table").filter(has_text="valid_macro_f1").first
            cells = [table.locator("tbody tr").nth(i).inner_text() for i in range(epochs)]
            extra = table.locator("tbody tr").count()
        finally:
            browser.close()
    assert extra == epochs
    for row, cell in zip(rows, cells, strict=True):
        assert row["valid_loss"] in cell and row["train_loss"] in cell


def test_leaderboard_lists_both_runs_after_two_trainings(
    live: dict, board_runs: list[dict]
) -> None:
    rows = _table_rows(_latest(live["api"], art.KEY_LEADERBOARD))
    assert len(rows) == 2
    assert {r["bundle"] for r in rows} == {s["model"] for s in board_runs}
    assert {r["settings"].split(" · ")[0] for r in rows} == {"epochs 2", "epochs 3"}
    assert {r["model"].split()[1] for r in rows} == {"h8", "h12"}  # e.g. "bigru h8 x1 +wide"
    assert [r["rank"] for r in rows] == ["1", "2"] and {r["cached"] for r in rows} == {"no"}
    by_bundle = {s["model"]: s for s in board_runs}
    for row in rows:
        assert row["macro_f1"] == f"{by_bundle[row['bundle']]['macro_f1']:.4f}"
    playwright = _playwright()
    with playwright.sync_playwright() as p:
        browser, page = _browser_page(p)
        try:
            page.goto(_artifact_page(live, art.KEY_LEADERBOARD))
            page.get_by_text(rows[0]["model"]).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert all(r["model"] in body and r["macro_f1"] in body for r in rows)
    assert all(s["model"] in body for s in board_runs)


def test_training_runs_are_tagged_and_say_their_scores(live: dict, board_runs: list[dict]) -> None:
    query = {"flow_runs": {"tags": {"all_": ["zhflow"]}}, "limit": 50}
    runs = httpx.post(f"{live['api']}/flow_runs/filter", json=query, timeout=10).json()
    messages = {r["state"]["message"] for r in runs}
    for summary in (live["summary"], *board_runs):
        assert f"accuracy {summary['accuracy']:.4f}, macro-F1 {summary['macro_f1']:.4f}" in messages


def _scheduled_run_states(api: str) -> dict[str, set[str]]:
    """Flow name → state types of its auto-scheduled runs that have started (not SCHEDULED)."""
    started = ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
    query = {"flow_runs": {"state": {"type": {"any_": started}}}, "limit": 200}
    runs = httpx.post(f"{api}/flow_runs/filter", json=query, timeout=10)
    runs.raise_for_status()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{api}/flows/filter", json={}).json()}
    out: dict[str, set[str]] = {}
    for run in runs.json():
        if run.get("auto_scheduled") and run.get("deployment_id"):
            out.setdefault(flows.get(run["flow_id"], "?"), set()).add(run["state_type"])
    return out


def test_serve_registers_both_deployments_and_a_scheduled_run_completes(live: dict) -> None:
    env, tmp = live["env"], live["tmp"]
    serve_log = tmp / "serve.log"
    with open(serve_log, "wb") as log:
        serve = subprocess.Popen(
            [str(BIN / "zhflow"), "serve", "--corpus", str(live["corpus"]),
             "--workdir", str(live["workdir"]), "--score-input", str(live["corpus"]),
             "--score-output", str(tmp / "scores" / "preds.parquet"),
             "--train-interval", "10", "--score-interval", "10", "--limit", "2",
             *TRAIN_PARAMS],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        listing = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and serve.poll() is None:
            listed = subprocess.run([str(BIN / "prefect"), "deployment", "ls"], env=env,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            listing = listed.stdout
            if "zhflow-train/nightly" in listing and "zhflow-score/nightly" in listing:
                break
            time.sleep(1)
        assert "zhflow-train/nightly" in listing and "zhflow-score/nightly" in listing, (
            listing + _log_tail(serve_log)
        )
        deployment = httpx.get(
            f"{live['api']}/deployments/name/zhflow-train/nightly", timeout=10
        ).json()
        assert deployment["schedules"][0]["schedule"]["interval"] == 10.0
        assert deployment["schedules"][0]["schedule"]["timezone"] == "Asia/Shanghai"
        assert deployment["parameters"]["tokenizer"] == "char"

        states: dict[str, set[str]] = {}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and serve.poll() is None:
            states = _scheduled_run_states(live["api"])
            if all("COMPLETED" in states.get(f, ()) for f in ("zhflow-train", "zhflow-score")):
                break
            bad = {
                f: s & {"FAILED", "CRASHED"} for f, s in states.items() if s & {"FAILED", "CRASHED"}
            }
            assert not bad, f"{bad}\n{_log_tail(serve_log)}"
            time.sleep(2)
        for name in ("zhflow-train", "zhflow-score"):
            assert "COMPLETED" in states.get(name, ()), f"{states}\n{_log_tail(serve_log)}"
        assert pl.read_parquet(tmp / "scores" / "preds.parquet").height == 96
        assert {a.key for a in _read_artifacts(live["api"], [art.KEY_SCORE])} == {art.KEY_SCORE}
    finally:
        _stop(serve, grace=20)
    shutil.rmtree(tmp / "scores", ignore_errors=True)


def test_ui_in_headless_chromium_shows_the_evaluation_artifact(live: dict) -> None:
    """`zhflow evaluate` against the server: its metrics artifact opens in the UI."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} missing: `apt-get install -y chromium` (.ci/run installs it)")
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (dev extra)"
    )
    from zhflow.flows.evaluation import KEY_EVAL_CONFUSION, KEY_EVAL_METRICS

    done = subprocess.run(
        [str(BIN / "zhflow"), "evaluate", "--model", live["summary"]["model"],
         str(live["corpus"]), "--output-dir", str(live["tmp"] / "evaluation"), "--json"],
        env=live["env"], capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    evaluation = json.loads(done.stdout.strip().splitlines()[-1])
    assert evaluation["flow_run_url"].startswith(live["ui"] + "/runs/flow-run/")
    accuracy = f"{evaluation['accuracy']:.4f}"
    found = {a.key for a in _read_artifacts(live["api"], [KEY_EVAL_METRICS, KEY_EVAL_CONFUSION])}
    assert found == {KEY_EVAL_METRICS, KEY_EVAL_CONFUSION}
    shots = live["tmp"] / "screenshots"
    shots.mkdir(exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{live['ui']}/artifacts/key/{KEY_EVAL_METRICS}")
            page.get_by_text(accuracy).first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert KEY_EVAL_METRICS in body and f"accuracy {accuracy}" in body
            page.screenshot(path=str(shots / "evaluation.png"), full_page=True)
        finally:
            browser.close()
    assert (shots / "evaluation.png").stat().st_size > 1000
