"""``zhflow server start|stop|status`` and how commands find the server (flows/server.py).

The fast tests fake the server's health endpoint with a tiny HTTP server, in this process or,
for start/stop/status, as a fake ``prefect`` executable (its own process, so it can be
stopped with SIGSTOP and holds the lock as the real one does) with the warm worker switched
off. The slow ones start a real Prefect server on a free loopback port with a temporary
``ZHFLOW_HOME``: one scores against it (the flow run is in that server's API), stops it, and
scores again on the temporary server; one loses its state file, hangs it, and asks for
another port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
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


# ------------------------------------------------- start/stop/status with a fake Prefect server

_FAKE_PREFECT = """\
import os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args):
        pass

with open(os.environ["FAKE_PREFECT_PIDS"], "a") as pids:
    print(os.getpid(), file=pids)
port = int(sys.argv[sys.argv.index("--port") + 1])
httpd = ThreadingHTTPServer(("127.0.0.1", port), Health)
signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
print("fake Prefect server on", port, flush=True)
httpd.serve_forever()
"""


class _Started:
    """The PIDs of the fake servers started, in order (each appends its own to a file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pids(self) -> list[int]:
        with contextlib.suppress(FileNotFoundError):
            return [int(line) for line in self.path.read_text(encoding="utf-8").split()]
        return []


@pytest.fixture
def fake(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Started]:
    """``zhflow server start`` runs a fake ``prefect`` (a health endpoint, ~0.1 s to start,
    its argv as the real one's) and no warm worker; the default port is a free one. Yields
    what was started; each fake server is killed at the end, whatever the test did."""
    from zhflow.flows import worker

    exe = tmp_path / "bin" / "prefect"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\n{_FAKE_PREFECT}", encoding="utf-8")
    exe.chmod(0o755)
    monkeypatch.setattr(server, "_prefect_executable", lambda: str(exe))
    monkeypatch.setattr(server, "DEFAULT_PORT", _free_port())  # never 4200, even when broken
    off = {"running": False, "error": "off in this test"}
    monkeypatch.setattr(worker, "launch", lambda folder: off)
    monkeypatch.setattr(worker, "start", lambda folder, timeout=0: off)
    monkeypatch.setattr(worker, "stop", lambda folder: None)
    monkeypatch.setattr(worker, "status", lambda folder: off)
    started = _Started(tmp_path / "fake-prefect.pids")
    monkeypatch.setenv("FAKE_PREFECT_PIDS", str(started.path))
    try:
        yield started
    finally:
        for pid in started.pids():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def _start(*args: str) -> Any:
    return _cli(*ZHFLOW_SERVER_START, *args)


def _gone(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return server._cmdline(pid) is None


def test_start_status_stop_with_the_lock_held_by_the_server_process(
    home: Path, fake: _Started
) -> None:
    port = _free_port()
    started = _start("--port", str(port), "--json")
    assert started.exit_code == 0, started.output
    state = json.loads(started.stdout)
    assert state["already_running"] is False and state["port"] == port
    assert fake.pids() == [state["pid"]]
    folder = home / "server"
    held = server.lock_holder(folder)  # held, and it names the server
    assert held is not None and held["pid"] == state["pid"] and held["port"] == state["port"]
    assert _cli("server", "status").exit_code == 0
    again = _start()  # no --port: a running server stays where it is
    assert again.exit_code == 0, again.output
    assert f"already running (PID {state['pid']}, port {state['port']})" in again.stdout
    assert fake.pids() == [state["pid"]]
    # The server process holds the lock, not the process that started it: killed, it is free.
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.lock_holder(folder) is None
    status = _cli("server", "status")
    assert status.exit_code == 1 and "not running" in status.stdout


@pytest.mark.parametrize("damage", ["missing", "garbage", "wrong types", "stale"])
def test_a_lost_or_damaged_state_file_is_restored_from_the_lock_never_a_second_server(
    home: Path, fake: _Started, damage: str
) -> None:
    """Before: `status` said "not running" (exit 1), `start` started a second server on the
    same database and left the first running untracked, `stop` stopped only the new one."""
    started = _start("--port", str(_free_port()), "--json")
    assert started.exit_code == 0, started.output
    state = json.loads(started.stdout)
    path = home / "server" / server.STATE_FILE
    original = json.loads(path.read_text(encoding="utf-8"))
    other = subprocess.Popen(["sleep", "30"])  # a live PID that is not the server

    def damage_it() -> None:
        if damage == "missing":
            path.unlink(missing_ok=True)
        elif damage == "garbage":
            path.write_text("{garbage", encoding="utf-8")
        elif damage == "wrong types":
            path.write_text(json.dumps({**original, "pid": "x", "port": None}), encoding="utf-8")
        else:
            path.write_text(json.dumps({**original, "pid": other.pid}), encoding="utf-8")

    why = {"missing": "missing", "garbage": "unreadable", "wrong types": "unreadable",
           "stale": f"stale (PID {other.pid} is not the server)"}[damage]  # fmt: skip
    note = (f"zhflow: {path} was {why}; restored it from {path.with_name(server.LOCK_FILE)}, "
            f"held by the server (PID {state['pid']}, port {state['port']})")  # fmt: skip
    try:
        damage_it()
        status = _cli("server", "status")
        assert status.exit_code == 0, status.output
        assert f"PID:      {state['pid']}" in status.stdout
        assert status.stderr.strip() == note
        assert json.loads(path.read_text(encoding="utf-8")) == original  # restored

        damage_it()
        again = _start("--json")
        assert again.exit_code == 0, again.output
        assert again.stderr.strip() == note
        assert json.loads(again.stdout)["already_running"] is True
        assert json.loads(again.stdout)["pid"] == state["pid"]
        assert fake.pids() == [state["pid"]], "a second server was started on the same database"

        damage_it()
        stopped = _cli("server", "stop")
        assert stopped.exit_code == 0, stopped.output
        assert stopped.stdout.strip() == (
            f"zhflow server stopped (PID {state['pid']}, port {state['port']})"
        )
        assert _gone(state["pid"]) and server.lock_holder(home / "server") is None
        assert not path.exists()
        assert other.poll() is None, "stop signalled a process that is not the server"
    finally:
        other.kill()
        other.wait()


def test_a_hung_server_is_not_running_as_far_as_scripts_go(home: Path, fake: _Started) -> None:
    """SIGSTOP: the process runs, its API does not answer. Before: `status` exited 0."""
    started = _start("--port", str(_free_port()), "--json")
    assert started.exit_code == 0, started.output
    pid = json.loads(started.stdout)["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        status = _cli("server", "status")
        assert status.exit_code == 5 == server.NOT_ANSWERING_EXIT, status.output
        assert status.stdout.startswith("zhflow server running (API not answering")
        assert json.loads(_cli("server", "status", "--json").stdout)["healthy"] is False
        again = _start("--timeout", "1")  # no second server, and no "already running", exit 0
        assert again.exit_code == 2
        assert again.output.strip().startswith(f"zhflow: error: the zhflow server runs (PID {pid}")
        assert "did not answer within 1 s" in again.output and len(again.output.splitlines()) == 1
        assert fake.pids() == [pid]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert _cli("server", "status").exit_code == 0
    assert _cli("server", "stop").exit_code == 0 and _gone(pid)


def test_start_on_another_port_says_so_and_changes_nothing(home: Path, fake: _Started) -> None:
    """Before: "already running", exit 0, --port silently ignored."""
    port, other = _free_port(), _free_port()
    started = _start("--port", str(port), "--json")
    assert started.exit_code == 0, started.output
    pid = json.loads(started.stdout)["pid"]
    moved = _start("--port", str(other))
    assert moved.exit_code == 2
    assert moved.output.strip() == (
        f"zhflow: error: the zhflow server already runs on port {port} (PID {pid}, "
        f"http://127.0.0.1:{port}); --port {other} was not used: to move it, "
        f"zhflow server stop, then zhflow server start --port {other}"
    )
    assert fake.pids() == [pid] and server._port_free(other)
    same = _start("--port", str(port))
    assert same.exit_code == 0 and f"already running (PID {pid}, port {port})" in same.stdout
    assert _start().exit_code == 0  # without --port: whichever port it runs on
    assert fake.pids() == [pid]


def test_two_starts_at_once_start_one_server(home: Path, fake: _Started) -> None:
    """The lock is taken before anything starts: the second start finds the first's server
    (waiting for it to answer) instead of starting its own on the same database."""
    port = _free_port()
    results: list[Any] = []

    def one() -> None:
        try:
            results.append(server.start(port, timeout=30))
        except Exception as exc:  # shown by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and all(isinstance(r, dict) for r in results), results
    assert len(fake.pids()) == 1, "two servers on one database"
    assert sorted(r["already_running"] for r in results) == [False, True]
    assert {r["pid"] for r in results} == set(fake.pids())


def test_a_held_lock_that_names_no_server_is_refused_in_one_line(
    home: Path, fake: _Started, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Something holds the lock and neither file says what: nothing is started or signalled."""
    monkeypatch.setattr(server, "LOCK_PATIENCE_S", 0.3, raising=False)
    folder = home / "server"
    folder.mkdir(parents=True)
    lock = folder / server.LOCK_FILE
    lock.write_text("{garbage", encoding="utf-8")
    code = "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); " \
           "print('held', flush=True); time.sleep(60)"  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert server.lock_holder(folder) == {}
        for args in (["server", "status"], ["server", "stop"], [*ZHFLOW_SERVER_START]):
            result = _cli(*args)
            assert result.exit_code == 2, (args, result.output)
            assert result.output.startswith(f"zhflow: error: {lock} is held by a running process")
            assert len(result.output.splitlines()) == 1 and "fuser -v" in result.output
        assert fake.pids() == [] and holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    assert _cli("server", "status").exit_code == 1  # a free lock: nothing runs


def test_a_state_file_with_wrong_types_is_unusable_not_a_traceback(home: Path) -> None:
    folder = home / "server"
    folder.mkdir(parents=True)
    good = {"pid": os.getpid(), "port": 4242, "api_url": "a", "ui_url": "u", "database": "d",
            "log": "l"}  # fmt: skip
    (folder / server.STATE_FILE).write_text(json.dumps(good), encoding="utf-8")
    assert server.read_state(folder) == good
    for bad in ({**good, "pid": "1"}, {**good, "port": True}, {**good, "pid": -1},
                {**good, "port": 70000}, {"pid": 1, "port": 2}, [good], "[" * 100_000):  # fmt: skip
        text = bad if isinstance(bad, str) else json.dumps(bad)
        (folder / server.STATE_FILE).write_text(text, encoding="utf-8")
        assert server.read_state(folder) is None, bad
        result = _cli("server", "status")
        assert result.exit_code == 1 and "Traceback" not in result.output


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


@pytest.mark.slow
def test_a_real_server_found_without_its_state_file_hung_and_asked_for_another_port(
    tmp_path: Path,
) -> None:
    """The hostile pass's three reports, on a real Prefect server (and its warm worker)."""
    env = {**os.environ, "ZHFLOW_HOME": str(tmp_path / "zhome"),
           "PREFECT_HOME": str(tmp_path / "client-home")}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    folder = tmp_path / "zhome" / "server"
    port, other = _free_port(), _free_port()
    started = _zhflow(["server", "start", "--port", str(port), "--json"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads(started.stdout.strip().splitlines()[-1])["pid"]
    try:
        held = server.lock_holder(folder)  # the Prefect process holds the lock
        assert held is not None and held["pid"] == pid
        # 1. server.json lost, then damaged: found through the lock, never a second server.
        (folder / server.STATE_FILE).unlink()
        status = _zhflow(["server", "status"], env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"PID:      {pid}" in status.stdout and "was missing; restored" in status.stderr
        (folder / server.STATE_FILE).write_text("{garbage", encoding="utf-8")
        again = _zhflow(["server", "start", "--port", str(port), "--json"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "was unreadable; restored" in again.stderr
        again_state = json.loads(again.stdout.strip().splitlines()[-1])
        assert again_state["already_running"] is True and again_state["pid"] == pid
        # 3. another --port: said, not ignored.
        moved = _zhflow(["server", "start", "--port", str(other)], env)
        assert moved.returncode == 2 and moved.stdout == ""
        assert moved.stderr.strip().endswith(f"--port {other} was not used: to move it, "
                                             f"zhflow server stop, then zhflow server start "
                                             f"--port {other}")  # fmt: skip
        assert len(moved.stderr.splitlines()) == 1 and server._port_free(other)
        # 2. hung: the process runs, the API does not answer.
        os.kill(pid, signal.SIGSTOP)
        hung = _zhflow(["server", "status"], env)
        assert hung.returncode == 5, hung.stdout + hung.stderr
        assert "API not answering" in hung.stdout
        os.kill(pid, signal.SIGCONT)
        assert _zhflow(["server", "status"], env).returncode == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        stopped = _zhflow(["server", "stop"], env)
    assert stopped.returncode == 0 and f"PID {pid}" in stopped.stdout, stopped.stderr
    assert server._cmdline(pid) is None and server.lock_holder(folder) is None
    assert not server.healthy(f"http://127.0.0.1:{port}/api")
    assert _zhflow(["server", "status"], env).returncode == 1


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
