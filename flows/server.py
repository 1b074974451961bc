"""The persistent local Prefect server zhflow owns: ``zhflow server start|stop|status``, and how
every other command finds it.

``zhflow server start`` runs ``prefect server start --host 127.0.0.1`` in the background
(its own session, so ``stop`` can signal the whole process group) with all of its state in
``$ZHFLOW_HOME/server`` (``ZHFLOW_HOME`` defaults to ``~/.zhflow``)::

    server/
      server.json     pid, port, URLs, database, log: what ``status`` and the other commands read
      server.lock     the same state, and an advisory ``flock`` the server process holds for
                      its whole life (see below)
      server.log      the server's stdout and stderr
      prefect-home/   its PREFECT_HOME (profiles, prefect.db: the SQLite database)

One server per folder, so one per database: ``start`` takes ``server.lock`` exclusively
before it starts anything, hands the locked descriptor to the Prefect process (which keeps it
open until it exits, however it exits) and writes the state into it too. The lock is the
truth about whether a server is live; ``server.json`` is a copy. When that copy is missing,
damaged or names another process while the lock is held, ``start``, ``stop`` and ``status``
take the state from ``server.lock`` and restore ``server.json`` (and say so on stderr) rather
than start a second server on the same database; when neither file says which process holds
the lock they refuse with one line. The lock file is never removed (removing a lock file
races with a process opening it); a free lock means no server, whatever the file says.

``status`` exits 0 when the server answers ``/api/health``, 1 when none runs, and
:data:`NOT_ANSWERING_EXIT` (5) when its process runs but the API does not answer (hung,
stopped, or still starting).

Commands that run a flow call :func:`connect` first: ``PREFECT_API_URL`` (environment or
Prefect profile) wins; else, when the zhflow server answers ``/api/health``, they use it (no
temporary server, ~10 s saved per command); else they fall back to Prefect's temporary
server and say once, on stderr, how to start the persistent one.

This module imports no Prefect at import time (``zhflow --help`` and ``predict`` stay fast).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
LOG_FILE = "server.log"
LOCK_PATIENCE_S = 2.0  # a start holding the lock writes its state into it within milliseconds
NOT_ANSWERING_EXIT = 5  # `zhflow server status`: the process runs, its API does not answer
START_TIMEOUT_S = 180.0  # first start migrates a fresh SQLite database: ~20 s, more under load
STOP_GRACE_S = 20.0
HEALTH_TIMEOUT_S = 1.0
FALLBACK_HINT = (
    "zhflow: no zhflow server running; using a temporary Prefect server (about 10 s, no UI). "
    "Start a persistent one with `zhflow server start`."
)


class ServerError(click.ClickException):
    """One line on stderr, ``zhflow: error: ...``, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"zhflow: error: {self.message}", err=True)


# ------------------------------------------------------------------------------ where things are


def zhflow_home() -> Path:
    return Path(os.environ.get("ZHFLOW_HOME") or "~/.zhflow").expanduser()


def server_dir() -> Path:
    return zhflow_home() / "server"


def api_url(port: int) -> str:
    return f"http://{HOST}:{port}/api"


def ui_url_of(api: str) -> str:
    return api.rstrip("/").removesuffix("/api")


def flow_run_url(ui: str, flow_run_id: Any) -> str:
    return f"{ui}/runs/flow-run/{flow_run_id}"


#: What every reader of a state uses, with its type: a file lacking one is unusable.
_STATE_KEYS: dict[str, type] = {"pid": int, "port": int, "api_url": str, "ui_url": str,
                                "database": str, "log": str}  # fmt: skip


def _as_state(obj: Any) -> dict[str, Any] | None:
    """``obj`` when it is a state every command can use (keys and types), else None."""
    if not isinstance(obj, dict):
        return None
    for key, kind in _STATE_KEYS.items():
        if not isinstance(obj.get(key), kind) or isinstance(obj.get(key), bool):
            return None
    return obj if obj["pid"] > 0 and 0 < obj["port"] < 65536 else None


def _parse_state(data: bytes) -> dict[str, Any] | None:
    try:
        return _as_state(json.loads(data))
    except (ValueError, RecursionError):
        return None


def read_state(folder: Path | None = None) -> dict[str, Any] | None:
    """``server.json``; None when it is missing or not a usable state (a missing key, a
    wrong type, not JSON)."""
    try:
        return _parse_state(((folder or server_dir()) / STATE_FILE).read_bytes())
    except OSError:
        return None


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    from zhflow.tasks.storage import write_json_atomic

    write_json_atomic(folder / STATE_FILE, state)


# ------------------------------------------------------------------------------------ the lock


def _take_lock(folder: Path) -> int | None:
    """A descriptor holding ``server.lock`` exclusively, the file emptied; None while another
    process holds it (a live server, or a start under way)."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ServerError(f"{path}: cannot open the server's lock file ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_holder(folder: Path | None = None) -> dict[str, Any] | None:
    """None when no process holds ``server.lock``; else the state its holder wrote into it,
    or ``{}`` when the file holds no usable state (a start writing it, or a damaged file)."""
    path = (folder or server_dir()) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held
        except OSError:
            return None  # a file system without flock: nothing to learn from it
        else:
            return None  # free (closing the descriptor releases the probe's lock)
        with contextlib.suppress(OSError):
            return _parse_state(os.pread(fd, 1 << 16, 0)) or {}
        return {}
    finally:
        os.close(fd)


def _unidentified(folder: Path) -> str:
    lock = folder / LOCK_FILE
    database = _database(server_env(folder, DEFAULT_PORT))
    return (
        f"{lock} is held by a running process (a zhflow server, starting or running on "
        f"{database}), but neither it nor {STATE_FILE} says which; find it with "
        f"`fuser -v {lock}` and stop it, then zhflow server start"
    )


def _live_state(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The state of the zhflow server running on this folder, and a note when ``server.json``
    had to be restored from ``server.lock``; ``(None, None)`` when none runs.

    Raises ServerError when a process holds the lock but neither file names it."""
    state = read_state(folder)
    if state is not None and is_our_server(state):
        return state, None
    deadline = time.monotonic() + LOCK_PATIENCE_S
    while True:
        held = lock_holder(folder)
        if held is None:
            return None, None
        if held and is_our_server(held):
            break
        if time.monotonic() > deadline:
            raise ServerError(_unidentified(folder))
        time.sleep(0.1)
    path = folder / STATE_FILE
    if state is not None:
        why = f"stale (PID {state['pid']} is not the server)"
    else:
        why = "unreadable" if path.exists() else "missing"
    _write_state(folder, held)
    return held, (f"{path} was {why}; restored it from {folder / LOCK_FILE}, held by the "
                  f"server (PID {held['pid']}, port {held['port']})")  # fmt: skip


# ---------------------------------------------------------------------------- is it our server


def healthy(api: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """Does a Prefect API answer ``GET {api}/health`` with 200?"""
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=timeout) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None when it is gone (``/proc`` on Linux, else psutil)."""
    proc = Path(f"/proc/{pid}/cmdline")
    if proc.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            return [a for a in proc.read_bytes().decode(errors="replace").split("\0") if a]
        except OSError:
            return None
    try:
        import psutil

        return list(psutil.Process(pid).cmdline())
    except Exception:
        return None


def is_our_server(state: dict[str, Any]) -> bool:
    """The PID in ``server.json`` is alive *and* is a ``prefect server start`` on our port.

    A stale PID file whose number now belongs to another process must never be signalled.
    """
    argv = _cmdline(int(state["pid"]))
    if not argv:
        return False
    joined = " ".join(argv)
    return "prefect" in joined and "server" in argv and str(state["port"]) in argv


# ----------------------------------------------------------------------------------- start/stop


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _prefect_executable() -> str:
    beside = Path(sys.executable).parent / "prefect"
    return str(beside) if beside.exists() else "prefect"


def server_env(folder: Path, port: int) -> dict[str, str]:
    """The server's environment: its own PREFECT_HOME and SQLite file, offline, and the UI
    told where its API is (else the UI calls 127.0.0.1:4200 on any other port)."""
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_PROFILE", None)
    home = folder / "prefect-home"
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_UI_API_URL=api_url(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    env.setdefault(
        "PREFECT_SERVER_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    )
    return env


def _database(env: dict[str, str]) -> str:
    url = env["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    if url.startswith("sqlite"):
        return url.split(":///", 1)[-1]
    return url.split("@")[-1]  # never print a password


def _log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def start(port: int | None = None, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Start the server in the background and wait until it answers; return its state.

    ``port`` None: :data:`DEFAULT_PORT` for a new server, whichever it runs on for a running
    one. Already running (found through ``server.json``, or ``server.lock`` when that copy is
    lost): its state, unchanged (``already_running`` true, ``restored`` the note when
    ``server.json`` was restored), once it answers; ServerError when ``port`` names another
    port, or when it does not answer within ``timeout``.
    """
    folder = server_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(int(LOCK_PATIENCE_S / 0.1)):
        current, note = _live_state(folder)
        if current is not None:
            return _already_running(folder, current, note, port, timeout)
        lock = _take_lock(folder)
        if lock is not None:
            break
        time.sleep(0.1)  # another process took it between the two looks: look again
    else:
        raise ServerError(_unidentified(folder))
    try:
        proc, state = _launch(folder, DEFAULT_PORT if port is None else port, lock)
    finally:
        os.close(lock)  # the server holds it from now on
    return _wait_started(folder, proc, state, timeout)


def _already_running(
    folder: Path, state: dict[str, Any], note: str | None, port: int | None, timeout: float
) -> dict[str, Any]:
    from zhflow.flows import worker

    pid, running_on = state["pid"], state["port"]
    if port is not None and port != running_on:
        raise ServerError(
            f"the zhflow server already runs on port {running_on} (PID {pid}, "
            f"{state['ui_url']}); --port {port} was not used: to move it, "
            f"zhflow server stop, then zhflow server start --port {port}"
        )
    deadline = time.monotonic() + timeout
    while not healthy(state["api_url"]):  # it may be another start's server, still starting
        if not is_our_server(state):
            log = state["log"]
            raise ServerError(f"the zhflow server (PID {pid}) exited while starting "
                              f"({_log_tail(Path(log))}); log: {log}")  # fmt: skip
        if time.monotonic() > deadline:
            raise ServerError(f"the zhflow server runs (PID {pid}, port {running_on}) but its "
                              f"API did not answer within {timeout:.0f} s; log: {state['log']}; "
                              "stop it: zhflow server stop")  # fmt: skip
        time.sleep(0.3)
    warm = worker.start(folder, timeout)
    return {**state, "already_running": True, "restored": note, "worker": warm}


def _launch(folder: Path, port: int, lock: int) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start the Prefect process, the locked descriptor ``lock`` inherited by it; write the
    state into the lock file and ``server.json``."""
    if not _port_free(port):
        raise ServerError(f"port {port} on {HOST} is in use; choose another with --port")
    env = server_env(folder, port)
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    log_path = folder / LOG_FILE
    argv = [_prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    pass_fds=(lock,))  # fmt: skip
    except OSError as exc:
        raise ServerError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    api = api_url(port)
    state = {
        "pid": proc.pid,
        "port": port,
        "api_url": api,
        "ui_url": ui_url_of(api),
        "prefect_home": env["PREFECT_HOME"],
        "database": _database(env),
        "log": str(log_path),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    os.pwrite(lock, json.dumps(state).encode(), 0)
    _write_state(folder, state)  # before waiting, so `stop` can end a slow start
    return proc, state


def _wait_started(
    folder: Path, proc: subprocess.Popen[bytes], state: dict[str, Any], timeout: float
) -> dict[str, Any]:
    from zhflow.flows import worker

    log_path = Path(state["log"])
    launched = worker.launch(folder)  # warms up while the server starts
    deadline = time.monotonic() + timeout
    while not healthy(state["api_url"]):
        if proc.poll() is not None:
            worker.stop(folder)
            (folder / STATE_FILE).unlink(missing_ok=True)
            raise ServerError(
                f"the Prefect server exited with code {proc.returncode} while starting "
                f"({_log_tail(log_path)}); log: {log_path}"
            )
        if time.monotonic() > deadline:
            _signal_group(proc.pid, signal.SIGTERM)
            worker.stop(folder)
            (folder / STATE_FILE).unlink(missing_ok=True)
            raise ServerError(f"the Prefect server did not answer within {timeout:.0f} s; "
                              f"log: {log_path}")  # fmt: skip
        time.sleep(0.3)
    warm = launched if isinstance(launched, dict) else worker.wait_ready(folder, launched, timeout)
    return {**state, "already_running": False, "restored": None, "worker": warm}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # the server is its session's leader: pgid == pid


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it (tests)
        if _cmdline(pid) is None:
            return True
        time.sleep(0.2)
    return _cmdline(pid) is None


def stop() -> dict[str, Any] | None:
    """Stop the server ``start`` started (SIGTERM to its group, SIGKILL after a grace period).

    Returns its state, or None when none is running; a stale state file is removed, and a PID
    that now belongs to another process is never signalled. Found through ``server.lock``
    when ``server.json`` is lost, like :func:`start`.
    """
    from zhflow.flows import worker

    folder = server_dir()
    worker.stop(folder)  # first: its running commands end while the server still answers
    state, _ = _live_state(folder)
    if state is None:
        (folder / STATE_FILE).unlink(missing_ok=True)  # stale or damaged: nothing runs
        return None
    pid = int(state["pid"])
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, STOP_GRACE_S):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    (folder / STATE_FILE).unlink(missing_ok=True)
    return state


def status() -> dict[str, Any]:
    """``running`` (the process is ours and alive), ``healthy`` (its API answers), the state
    (URL, UI, PID, database, log), and ``restored``: the note when ``server.json`` was
    restored from ``server.lock``."""
    from zhflow.flows import worker

    folder = server_dir()
    state, note = _live_state(folder)
    warm = worker.status(folder)
    if state is None:
        return {"running": False, "healthy": False, "server_dir": str(folder), "worker": warm}
    return {**state, "running": True, "healthy": healthy(state["api_url"]), "restored": note,
            "worker": warm}  # fmt: skip


# ---------------------------------------------------------------------------- every command


@dataclass(frozen=True)
class Connection:
    """Which Prefect API a command talks to. ``ui_url`` is None for the temporary server."""

    kind: str  # "configured" (PREFECT_API_URL), "zhflow" (our server), "temporary"
    api_url: str | None
    ui_url: str | None


def _configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment, else from the active Prefect profile."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


_QUICK_EXIT = False


def allow_quick_exit() -> None:
    """Nothing this process started needs Python's exit handlers: see :func:`exit_quickly`."""
    global _QUICK_EXIT
    _QUICK_EXIT = True


def exit_quickly(code: int | str | None) -> None:
    """End the process now, skipping interpreter teardown (~1 s with torch and Prefect
    loaded), when :func:`allow_quick_exit` was called; else return and exit normally.

    Prefect's log and event workers are drained first, so the UI misses nothing. Never
    allowed with the temporary server: its exit handler is what stops it.
    """
    if not _QUICK_EXIT:
        return
    import logging

    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all()
        EventsWorker.drain_all()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def connect(announce: bool = True, quick_exit: bool = True) -> Connection:
    """Point this process at the Prefect API to use (sets ``PREFECT_API_URL`` for the zhflow
    server); with neither a configured API nor our server, Prefect starts a temporary one
    and, when ``announce``, one line on stderr says how to start the persistent server.
    ``quick_exit``: with a real server, the command may end with :func:`exit_quickly`."""
    configured = _configured_api_url()
    if configured:
        if quick_exit:
            allow_quick_exit()
        return Connection("configured", configured, ui_url_of(configured))
    state = read_state() or lock_holder()  # the lock's copy when server.json is lost
    if state and healthy(state["api_url"]):
        os.environ["PREFECT_API_URL"] = state["api_url"]
        _refresh_prefect_settings()
        if quick_exit:
            allow_quick_exit()
        return Connection("zhflow", state["api_url"], state.get("ui_url"))
    if announce:
        click.echo(FALLBACK_HINT, err=True)
    from zhflow.flows.lifecycle import watch_for_sigkill

    watch_for_sigkill()  # Prefect starts the temporary server; a SIGKILL must not orphan it
    return Connection("temporary", None, None)


def _refresh_prefect_settings() -> None:
    """Prefect reads its settings from the environment once per context; a context created
    before the variable was set would still see no API URL."""
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def run_flow(flow: Any, **kwargs: Any) -> dict[str, Any]:
    """Run ``flow`` on the server :func:`connect` picks; return its summary, with
    ``flow_run_url`` when that server has a UI."""
    connection = connect()
    state = flow(**kwargs, return_state=True)
    summary = dict(state.result())  # re-raises the flow's exception when it failed
    if connection.ui_url:
        summary["flow_run_url"] = flow_run_url(connection.ui_url, state.state_details.flow_run_id)
    return summary


# --------------------------------------------------------------------------------------- CLI


def _print_state(state: dict[str, Any]) -> None:
    click.echo(f"URL:      {state['ui_url']}  (API {state['api_url']})")
    click.echo(f"PID:      {state['pid']}")
    click.echo(f"database: {state['database']}")
    click.echo(f"log:      {state['log']}")
    click.echo(f"worker:   {_worker_line(state.get('worker') or {})}")


def _worker_line(warm: dict[str, Any]) -> str:
    if warm.get("running") and warm.get("answers") and not warm.get("stale"):
        served = f", {warm['served']} commands served" if "served" in warm else ""
        return (f"PID {warm['pid']}, warm: score/predict/evaluate run in it{served} "
                f"(log {warm['log']})")  # fmt: skip
    if warm.get("stale"):
        return (f"PID {warm['pid']}, code changed since it started: commands run cold "
                "until `zhflow server start` restarts it")  # fmt: skip
    if warm.get("running"):
        return f"PID {warm['pid']}, starting (log {warm['log']})"
    why = f" ({warm['error']})" if warm.get("error") else ""
    return f"not running{why}: commands run cold; `zhflow server start` starts it"


@click.group("server")
def server_command() -> None:
    """The persistent local Prefect server (UI + API on 127.0.0.1) that zhflow commands use."""


@server_command.command("start")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to start it on. When it already runs on another port: an error, exit 2, and "
    "nothing changes (stop it first); without --port a running server is kept on its port.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=START_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the server to answer.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the state as one JSON line.")
@click.pass_context
def start_command(ctx: click.Context, port: int, timeout: float, as_json: bool) -> None:
    """Start the server in the background (state and log in $ZHFLOW_HOME/server).

    Exit code 0 once it answers, also when it was already running (and answers); 2, with one
    `zhflow: error:` line, when it cannot start or does not answer within --timeout, or
    runs on another port than --port.
    """
    given = ctx.get_parameter_source("port") is not click.core.ParameterSource.DEFAULT
    state = start(port if given else None, timeout)
    if state.get("restored"):
        click.echo(f"zhflow: {state['restored']}", err=True)
    if as_json:
        click.echo(json.dumps(state))
        return
    if state["already_running"]:
        click.echo(f"zhflow server already running (PID {state['pid']}, port {state['port']})")
    else:
        click.echo("zhflow server started")
    _print_state(state)
    click.echo(f"open {state['ui_url']}; zhflow commands now use it; stop: zhflow server stop")


@server_command.command("stop")
def stop_command() -> None:
    """Stop the server `zhflow server start` started (nothing else)."""
    state = stop()
    if state is None:
        click.echo("zhflow server is not running")
    else:
        click.echo(f"zhflow server stopped (PID {state['pid']}, port {state['port']})")


@server_command.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON line.")
def status_command(as_json: bool) -> None:
    """URL, PID and database of the server.

    Exit code 0 when it runs and its API answers; 1 when it is not running; 5 when its
    process runs but the API does not answer (hung, stopped, or still starting).
    """
    info = status()
    if info.get("restored"):
        click.echo(f"zhflow: {info['restored']}", err=True)
    if as_json:
        click.echo(json.dumps(info))
    elif not info["running"]:
        click.echo(f"zhflow server is not running (start it: zhflow server start; "
                   f"state in {info['server_dir']})")  # fmt: skip
    else:
        click.echo("zhflow server running" + ("" if info["healthy"] else
                   " (API not answering: hung, stopped or still starting)"))  # fmt: skip
        _print_state(info)
    if not info["running"]:
        sys.exit(1)
    if not info["healthy"]:
        sys.exit(NOT_ANSWERING_EXIT)
