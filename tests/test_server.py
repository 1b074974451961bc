"""``zhflow server start|stop|status`` and how commands find the server (flows/server.py).

The fast tests fake the server's health endpoint with a tiny HTTP server; the slow one starts
a real ``prefect server start`` on a free loopback port with a temporary ``ZHFLOW_HOME``,
scores against it (the flow run is in that server's API), stops it, and scores again on the
temporary server.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from zhflow.flows import server
from zhflow.flows.cli import main

BIN = Path(sys.executable).parent
ZHFLOW_SERVER_START = ["server", "start"]  # always binds 127.0.0.1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _fake_api() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def _write_state(home: Path, pid: int, port: int) -> None:
    folder = home / "server"
    folder.mkdir(parents=True, exist_ok=True)
    api = server.api_url(port)
    state = {"pid": pid, "port": port, "api_url": api, "ui_url": server.ui_url_of(api),
             "database": "x.db", "log": "x.log", "prefect_home": "h"}  # fmt: skip
    (folder / server.STATE_FILE).write_text(json.dumps(state), encoding="utf-8")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path / "zhome"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings({PREFECT_API_URL: None}):  # as if no test server were running
        yield tmp_path / "zhome"


def test_server_dir_defaults_to_home_dot_zhflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZHFLOW_HOME")
    assert server.server_dir() == Path("~/.zhflow/server").expanduser()


def test_server_env_points_the_ui_at_its_own_port_and_keeps_state_in_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    monkeypatch.delenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", raising=False)
    env = server.server_env(tmp_path, 4321)
    assert env["PREFECT_UI_API_URL"] == "http://127.0.0.1:4321/api"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect-home")
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"].endswith(
        str(tmp_path / "prefect-home" / "prefect.db")
    )
    assert "PREFECT_API_URL" not in env
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def test_status_and_stop_when_nothing_runs(home: Path) -> None:
    result = CliRunner().invoke(main, ["server", "status"])
    assert result.exit_code == 1
    assert "not running" in result.output
    result = CliRunner().invoke(main, ["server", "stop"])
    assert result.exit_code == 0 and "not running" in result.output


def test_stop_never_signals_a_pid_that_is_not_our_server(home: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        _write_state(home, other.pid, _free_port())  # a stale file naming another process
        assert server.status()["running"] is False
        assert server.stop() is None
        time.sleep(0.2)
        assert other.poll() is None, "stop signalled a process it did not start"
        assert not (home / "server" / server.STATE_FILE).exists()  # the stale file is gone
    finally:
        other.kill()
        other.wait()


def test_start_refuses_a_port_in_use(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, [*ZHFLOW_SERVER_START, "--port", str(port)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"zhflow: error: port {port} on 127.0.0.1 is in use; choose another with --port"
    )


def test_connect_uses_the_zhflow_server_when_it_answers(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_api() as port:
        _write_state(home, os.getpid(), port)
        connection = server.connect()
        assert connection.kind == "zhflow"
        assert connection.api_url == f"http://127.0.0.1:{port}/api"
        assert connection.ui_url == f"http://127.0.0.1:{port}"
        assert os.environ["PREFECT_API_URL"] == connection.api_url
        from prefect.settings import Settings

        assert Settings().api.url == connection.api_url  # what a new Prefect context reads
    monkeypatch.delenv("PREFECT_API_URL")
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()
    assert capsys.readouterr().err == ""


def test_connect_falls_back_with_one_hint_when_the_server_is_down(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_state(home, os.getpid(), _free_port())  # nothing listens there
    connection = server.connect()
    assert connection == server.Connection("temporary", None, None)
    assert "PREFECT_API_URL" not in os.environ
    assert capsys.readouterr().err.strip() == server.FALLBACK_HINT
    assert "zhflow server start" in server.FALLBACK_HINT


def test_prefect_api_url_always_wins(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with _fake_api() as port:
        _write_state(home, os.getpid(), port)
        monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
        connection = server.connect()
    assert connection.kind == "configured"
    assert connection.api_url == "http://127.0.0.1:9/api"
    assert connection.ui_url == "http://127.0.0.1:9"
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- a real server


def _zhflow(args: list[str], env: dict[str, str], timeout: float = 300) -> Any:
    return subprocess.run([str(BIN / "zhflow"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _flow_runs(api: str) -> list[dict[str, Any]]:
    import httpx

    reply = httpx.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10)
    reply.raise_for_status()
    return list(reply.json())


@pytest.mark.slow
def test_start_status_stop_and_commands_use_it_then_fall_back(
    tmp_path: Path, tiny_csv: Path
) -> None:
    from tests.helpers import train_tiny_bundle

    bundle = train_tiny_bundle(tmp_path / "bundle", epochs=1)
    env = {**os.environ, "ZHFLOW_HOME": str(tmp_path / "zhome"),
           "PREFECT_HOME": str(tmp_path / "client-home")}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    port = _free_port()
    started = _zhflow(["server", "start", "--port", str(port), "--json"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads(started.stdout.strip().splitlines()[-1])
    try:
        api = f"http://127.0.0.1:{port}/api"
        assert state["api_url"] == api and state["already_running"] is False
        assert Path(state["database"]) == tmp_path / "zhome/server/prefect-home/prefect.db"
        assert Path(state["database"]).is_file()
        status = _zhflow(["server", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        for part in (f"http://127.0.0.1:{port}", f"PID:      {state['pid']}", state["database"]):
            assert part in status.stdout

        # A command finds it: its flow run is in that server's API, and it prints the link.
        scored = _zhflow(["score", "--model", str(bundle), str(tiny_csv),
                          "--output", str(tmp_path / "p1.parquet"), "--json"], env)  # fmt: skip
        assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
        assert server.FALLBACK_HINT not in scored.stderr
        summary = json.loads(scored.stdout.strip().splitlines()[-1])
        runs = _flow_runs(api)
        assert [r["name"] for r in runs] == ["score-tiny"]
        assert summary["flow_run_url"] == f"http://127.0.0.1:{port}/runs/flow-run/{runs[0]['id']}"
        assert runs[0]["state_type"] == "COMPLETED"
    finally:
        stopped = _zhflow(["server", "stop"], env)
    assert stopped.returncode == 0 and f"PID {state['pid']}" in stopped.stdout
    assert not server.healthy(f"http://127.0.0.1:{port}/api")
    assert _zhflow(["server", "status"], env).returncode == 1

    # Down: the same command falls back to a temporary server and says so once.
    scored = _zhflow(["score", "--model", str(bundle), str(tiny_csv),
                      "--output", str(tmp_path / "p2.parquet"), "--json"], env)  # fmt: skip
    assert scored.returncode == 0, scored.stdout[-2000:] + scored.stderr[-2000:]
    assert scored.stderr.count(server.FALLBACK_HINT) == 1
    assert "flow_run_url" not in json.loads(scored.stdout.strip().splitlines()[-1])


def test_exit_quickly_only_when_allowed_and_flushes_first() -> None:
    code = (
        "import sys\n"
        "from zhflow.flows import server\n"
        "server.exit_quickly(5)\n"  # not allowed yet: returns
        "print('still here', end='')\n"
        "server.allow_quick_exit()\n"
        "server.exit_quickly(3)\n"
        "print('never')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 3 and done.stdout == "still here"
