"""The warm worker: a long-lived process beside the zhflow server that has torch, Prefect,
polars, jieba's dictionary and the scoring code imported, and recently used bundles loaded,
so ``zhflow score``, ``predict`` and ``evaluate`` skip ~5 s of start-up.

``zhflow server start`` starts it (``python -m zhflow.flows.worker DIR``), ``stop`` stops it,
``status`` reports it; its files are in ``$ZHFLOW_HOME/server`` (made 0700)::

    worker.sock   the Unix socket clients connect to (0600); only this user's processes
                  are served (SO_PEERCRED is checked too)
    worker.json   pid, socket, log, start time
    worker.log    one line per command, and anything the worker itself prints

Each accepted command runs in a **fork** of the warm process (flows/client.py describes the
protocol): the child takes on the client's standard streams, working directory,
environment, umask and niceness, re-reads Prefect's settings and logging from that
environment, and runs ``zhflow.flows.cli.entry`` exactly as a cold ``zhflow`` process would. So
the Prefect flow run, its UI link and artifacts, the output and the exit code are the cold
path's; and two commands at once are two processes. Nothing is ever unpickled: messages are
JSON lines, descriptors come by SCM_RIGHTS.

Why a fork per command and not threads: a command's working directory, environment, signal
handling and standard streams are per process. Forking is safe here because the warm
process stays single-threaded: it never enters a torch parallel region (one torch thread
until the fork; each child gets a fresh process's thread count back), never starts polars'
thread pool (no frame is read before a fork), and keeps no SQLite connection (jieba's full
dictionary, not its on-disk index) and no Prefect client open.

A request is declined (the client runs it cold, silently) when this process could not
behave as a fresh one would: another Python executable, zhflow's code or installed packages
changed since the worker started (:func:`zhflow.flows.client.code_fingerprint`), or a variable that
is read once at interpreter or library start-up differs (:data:`PINNED_ENV_PREFIXES`).

Bundles: before forking, the worker loads the network of the command's ``--bundle`` bundle
(up to :data:`BUNDLES_KEPT`, least recently used dropped) into ``zhflow.tasks.bundle.PRELOADED``,
keyed on its real path, manifest digest and device. The child's ``load_bundle`` still
re-hashes every file, reads the small tables, and uses the preloaded network only when the
digest matches, so a changed bundle is loaded afresh (and replaces the old copy).

Ctrl-C on the client is forwarded to the command's process group (it unwinds as a cold
process does: temporary files removed, exit 130); a client that vanishes gets its command
SIGTERMed; a stopped worker SIGTERMs its running commands. The worker never waits on a
client.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhflow.flows import client
from zhflow.tasks import catalog

STATE_FILE = "worker.json"
LOG_FILE = "worker.log"
BUNDLES_KEPT = 4
READ_TIMEOUT_S = 5.0
START_TIMEOUT_S = 180.0
STOP_GRACE_S = 20.0
#: Environment read once, when the interpreter or a native library starts (hash seed, import
#: path, thread pools, locale): a request whose values differ runs cold.
PINNED_ENV_PREFIXES = (
    "PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "POLARS_", "RAYON_",
    "PYTORCH_", "CUDA_", "LC_", "LANG",
)  # fmt: skip
MODULE = "zhflow.flows.worker"
#: Imported before the first command. fastapi: Prefect imports it to serialise a flow's
#: parameters (~0.5 s).
WARM_MODULES = (
    "fastapi", "prefect.flow_engine", "prefect.task_engine", "zhflow.flows.cli",
    "zhflow.flows.evaluation", "zhflow.flows.scoring", "zhflow.tasks.predict", "zhflow.tasks.score",
)  # fmt: skip


def _pinned_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(PINNED_ENV_PREFIXES)}


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the warm process


def warm_up() -> int:
    """Import what the commands need and load jieba's dictionary; return the torch thread
    count a fresh process would have (each child gets it back)."""
    import torch

    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP thread team may exist before a fork
    for name in WARM_MODULES:
        importlib.import_module(name)
    from zhflow.tasks import engines, segment

    engines.USE_JIEBA_INDEX = False  # the full dictionary, shared by every child
    segment.make_tokenizer(segment.TokenizerSpec(engine="jieba"))
    return default_threads


def _bundle_arg(argv: list[str]) -> str | None:
    """The ``--bundle`` (or old ``--model``) value in a command line (a hint for preloading:
    a wrong guess only costs the preload)."""
    for i, arg in enumerate(argv):
        for flag in ("--bundle", "--model"):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{flag}="):
                return arg.split("=", 1)[1]
    return None


def _manifest_digest(folder: str) -> str | None:
    try:
        manifest = json.loads((Path(folder) / catalog.MANIFEST).read_text(encoding="utf-8"))
        return str(manifest["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def preload_bundle(argv: list[str], cwd: str) -> str | None:
    """Load the network of the command's bundle into ``zhflow.tasks.bundle.PRELOADED`` unless that
    version is there; return its real path, or None when there is nothing (valid) to load.

    Only the network (and its tokenizer's dictionary): the vocabulary and n-gram tables are
    polars frames, and polars' thread pool must never start in a process that forks (its
    children would wait forever on threads they do not have). They take tens of ms to
    read in the child."""
    import torch

    from zhflow.flows.scoring import resolve_bundle
    from zhflow.tasks import bundle as bundles
    from zhflow.tasks.segment import make_tokenizer

    given = _bundle_arg(argv)
    if given is None or torch.version.cuda is not None or torch.version.hip is not None:
        return None  # a CUDA build picks its device in the child: never touch CUDA here
    real = os.path.realpath(resolve_bundle(os.path.join(cwd, os.path.expanduser(given))))
    digest = _manifest_digest(real)
    if digest is None:
        return None
    key = (real, digest, "cpu")
    if key in bundles.PRELOADED:
        bundles.PRELOADED[key] = bundles.PRELOADED.pop(key)  # most recently used last
        return real
    try:
        digest, tokenizer, model = bundles.preload_model(real)
        make_tokenizer(tokenizer)  # its engine (user dictionary) stays loaded too
    except Exception as exc:  # the child reports it, through the cold path's code
        _log(f"not preloaded: {real}: {exc}")
        return None
    for old in [k for k in bundles.PRELOADED if k[0] == real]:
        del bundles.PRELOADED[old]  # an older version of the same folder
    bundles.PRELOADED[(real, digest, "cpu")] = model
    while len(bundles.PRELOADED) > BUNDLES_KEPT:
        del bundles.PRELOADED[next(iter(bundles.PRELOADED))]
    gc.collect()
    gc.freeze()  # children's garbage collector leaves these pages shared
    _log(f"preloaded {real} ({digest[:12]})")
    return real


# ------------------------------------------------------------------------------ the child


def _die_with_parent() -> None:
    """SIGTERM this command if the worker dies (Linux), so it never runs on unsupervised."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _exit_status(code: Any) -> int:
    """What Python's own exit would make of ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


_REPLACED_STREAMS: list[Any] = []  # the worker's own: kept so no finaliser closes fd 0-2


def _own_streams(info: list[dict[str, Any]]) -> None:
    """New sys.stdin/stdout/stderr on descriptors 0-2 (now the client's), built as Python
    builds them at start-up, with the client's encodings and buffering (the worker's were
    made for its log file: seekable, block-buffered)."""
    _REPLACED_STREAMS.extend((sys.stdin, sys.stdout, sys.stderr))
    made = []
    for fd, spec in enumerate(info):
        raw = io.FileIO(fd, "rb" if fd == 0 else "wb", closefd=False)
        buffered = io.BufferedReader(raw) if fd == 0 else io.BufferedWriter(raw)
        made.append(io.TextIOWrapper(buffered, encoding=spec["encoding"], errors=spec["errors"],
                                     line_buffering=spec["line_buffering"],
                                     write_through=spec.get("write_through", False)))  # fmt: skip
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made  # type: ignore[misc]


def become_client(request: dict[str, Any], fds: list[int], default_threads: int) -> None:
    """Turn this freshly forked child into the client's process: its process group,
    streams, directory, environment, umask and niceness; Prefect reconfigured from it."""
    os.setpgid(0, 0)  # its own group: a forwarded Ctrl-C reaches its subprocesses too
    _die_with_parent()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    atexit._clear()  # the worker's exit handlers are not this command's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    lower = int(request["nice"]) - os.getpriority(os.PRIO_PROCESS, 0)
    if lower > 0:
        os.nice(lower)
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None  # re-read TMPDIR
    _own_streams(request["streams"])
    sys.argv = list(request["argv"])
    sys.modules["__main__"].__package__ = request.get("main_package")  # click's program name

    import numpy
    import torch
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    from zhflow.flows.settings import apply_defaults
    from zhflow.tasks import engines

    apply_defaults()
    torch.set_num_threads(default_threads)
    numpy.random.seed()  # a fresh process's entropy, not the worker's state
    engines.USE_JIEBA_INDEX = True
    refresh_global_settings_context()
    setup_logging(incremental=False)  # handlers on this stream, levels from this environment


def run_command() -> int:
    """``zhflow.flows.cli.entry`` as the console script runs it; the exit status."""
    from zhflow.flows import cli, server

    code: Any = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
    except BaseException:
        traceback.print_exc()
        code = 1
    server.exit_quickly(code)  # returns unless a real server was used
    atexit._run_exitfuncs()  # e.g. the temporary server's stop
    status = _exit_status(code)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return status


# ------------------------------------------------------------------------------- serving


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


@dataclass
class Job:
    pid: int
    conn: socket.socket
    command: str
    started: float
    pidfd: int | None = None
    buffer: bytes = b""


@dataclass
class Worker:
    listener: socket.socket
    fingerprint: str
    pinned: dict[str, str]
    default_threads: int
    jobs: dict[int, Job] = field(default_factory=dict)
    served: int = 0
    stopping: bool = False
    selector: selectors.BaseSelector = field(init=False)

    def __post_init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, ("accept", None))

    # -- requests

    def decline_reason(self, request: dict[str, Any]) -> str | None:
        if request.get("protocol") != client.PROTOCOL:
            return f"protocol {request.get('protocol')!r}, worker speaks {client.PROTOCOL}"
        if request.get("executable") != sys.executable:
            return f"another Python ({request.get('executable')})"
        if request.get("fingerprint") != self.fingerprint:
            return "zhflow's code or packages changed since the worker started"
        env = request.get("env")
        if not isinstance(env, dict):
            return "no environment"
        theirs = _pinned_env(env)
        differ = sorted(k for k in theirs.keys() | self.pinned.keys()
                        if theirs.get(k) != self.pinned.get(k))  # fmt: skip
        if differ:
            return f"start-up environment differs: {', '.join(differ)}"
        if not isinstance(request.get("argv"), list) or len(request["argv"]) < 2:
            return "no command"
        if request["argv"][1] not in client.WARM_COMMANDS:
            return f"{request['argv'][1]!r} is not run in the worker"
        return None

    def status(self) -> dict[str, Any]:
        from zhflow.tasks.bundle import PRELOADED

        return {"pong": True, "pid": os.getpid(), "served": self.served,
                "running": len(self.jobs), "fingerprint": self.fingerprint,
                "bundles": [k[0] for k in PRELOADED]}  # fmt: skip

    def accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        fds: list[int] = []
        try:
            conn.settimeout(READ_TIMEOUT_S)
            if not _same_user(conn):
                return
            data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
            lines = client._Lines(conn)
            lines.buffer = data
            request = lines.read() if data else None
            if request is None:
                return
            if request.get("ping"):
                _send(conn, self.status())
                return
            reason = "not three standard streams" if len(fds) != 3 else None
            reason = reason or self.decline_reason(request)
            reason = reason or ("stopping" if self.stopping else None)
            if reason is None:
                preload_bundle(request["argv"], request["cwd"])
            if reason is not None:
                _log(f"declined {request.get('argv', ['', '?'])[1:2]}: {reason}")
                _send(conn, {"accepted": False, "reason": reason})
                return
            _send(conn, {"accepted": True})
            go = lines.read()
            if not go or go.get("go") is not True:
                return  # the client gave up waiting: it runs the command cold
            self.fork(request, fds, conn)
            conn = None  # type: ignore[assignment]  # the job owns it now
        except (OSError, ValueError) as exc:
            _log(f"request dropped: {exc}")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if conn is not None:
                conn.close()

    def fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket) -> None:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child would print the worker's buffered lines
        pid = os.fork()
        if pid == 0:  # the child: never returns into this loop
            status = 70
            try:
                self.close_inherited(conn)
                become_client(request, fds, self.default_threads)
                status = run_command()
            except BaseException:
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                os._exit(status)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here: no race with a signal forwarded right away
        job = Job(pid, conn, str(request["argv"][1]), time.monotonic())
        with contextlib.suppress(OSError, AttributeError):
            job.pidfd = os.pidfd_open(pid)
            self.selector.register(job.pidfd, selectors.EVENT_READ, ("exit", pid))
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, ("client", pid))
        self.jobs[pid] = job

    def close_inherited(self, conn: socket.socket) -> None:
        """In a child: drop the listener and every client socket, the other commands' too
        (their clients must see end-of-stream when their own command ends)."""
        with contextlib.suppress(OSError):
            self.selector.close()
        self.listener.close()
        conn.close()
        for job in self.jobs.values():
            job.conn.close()
            if job.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(job.pidfd)

    # -- running commands

    def from_client(self, pid: int) -> None:
        job = self.jobs.get(pid)
        if job is None:
            return
        try:
            chunk = job.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client is gone: end its command as a terminal hang-up would
            self.selector.unregister(job.conn)
            self.signal_job(job, signal.SIGTERM)
            return
        job.buffer += chunk
        while b"\n" in job.buffer:
            line, job.buffer = job.buffer.split(b"\n", 1)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                signum = int(json.loads(line).get("signal"))
                if signum in client.FORWARDED_SIGNALS:
                    self.signal_job(job, signum)

    def signal_job(self, job: Job, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signum)

    def reap(self) -> None:
        for pid in list(self.jobs):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            job = self.jobs.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            # A death by signal N: exit 128 + N, and the client dies of N itself.
            reply = (
                {"exit": code, "signal": None}
                if code >= 0
                else {"exit": 128 - code, "signal": -code}
            )
            # Logged before the reply: once a client has its exit code, the line is there.
            self.served += 1
            _log(f"{job.command} pid {pid}: exit {reply['exit']} in "
                 f"{time.monotonic() - job.started:.2f} s")  # fmt: skip
            with contextlib.suppress(OSError):
                job.conn.setblocking(True)
                _send(job.conn, reply)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(job.conn)
            job.conn.close()
            if job.pidfd is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(job.pidfd)
                os.close(job.pidfd)

    # -- the loop

    def serve(self) -> None:
        stop_at: float | None = None
        while True:
            polling = any(job.pidfd is None for job in self.jobs.values())
            for key, _events in self.selector.select(timeout=0.05 if polling else 0.5):
                kind, pid = key.data
                if kind == "accept":
                    self.accept()
                elif kind == "client":
                    self.from_client(pid)
            self.reap()
            if self.stopping:
                if stop_at is None:
                    stop_at = time.monotonic() + STOP_GRACE_S
                    for job in self.jobs.values():
                        self.signal_job(job, signal.SIGTERM)
                if not self.jobs:
                    return
                if time.monotonic() > stop_at:
                    for job in self.jobs.values():
                        self.signal_job(job, signal.SIGKILL)
                    stop_at = time.monotonic() + 5.0


def _bind(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket of a dead worker (start checked none is alive)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    listener.listen(16)
    return listener


def main(folder: Path) -> None:
    fingerprint = client.code_fingerprint()  # of the code about to be imported
    pinned = _pinned_env(dict(os.environ))
    started = time.monotonic()
    default_threads = warm_up()
    path = folder / client.SOCKET_NAME
    listener = _bind(path)
    worker = Worker(listener, fingerprint, pinned, default_threads)

    def stop(signum: int, frame: Any) -> None:
        worker.stopping = True
        with contextlib.suppress(OSError):
            worker.selector.unregister(listener)
        listener.close()
        with contextlib.suppress(OSError):
            path.unlink()  # new commands run cold from now on

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    gc.collect()
    gc.freeze()
    _log(f"worker {os.getpid()} ready in {time.monotonic() - started:.1f} s on {path}")
    worker.serve()
    _log(f"worker {os.getpid()} stopped after {worker.served} commands")


# --------------------------------------------------------------- start, stop, status


def read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "pid" in state else None


def _is_our_worker(state: dict[str, Any]) -> bool:
    from zhflow.flows.server import _cmdline

    argv = _cmdline(int(state["pid"]))
    return bool(argv) and MODULE in argv and str(state.get("dir")) in argv  # type: ignore[operator]


def ping(folder: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The worker's own report (pid, commands served, preloaded bundles), or None."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(folder / client.SOCKET_NAME))
        sock.sendall(json.dumps({"ping": True}).encode() + b"\n")
        reply = client._Lines(sock).read()
        return reply if reply and reply.get("pong") else None
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def launch(folder: Path) -> subprocess.Popen[bytes] | dict[str, Any] | None:
    """Start the worker process without waiting for it (the server starts meanwhile): its
    Popen; or its status when one is already running with current code, or why none can
    run; None when one is still warming up. Then :func:`wait_ready`."""
    current = status(folder)
    if current["running"] and current["answers"] and not current["stale"]:
        return current
    if current["running"] and current["answers"]:
        stop(folder)  # it imported older code: replace it
    elif current["running"]:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if len(os.fsencode(folder / client.SOCKET_NAME)) > 107:
        return {"running": False, "error": f"socket path too long: {folder}"}
    log_path = folder / LOG_FILE
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, str(folder)], cwd=folder,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
    from zhflow.tasks.storage import write_json_atomic

    write_json_atomic(folder / STATE_FILE, {
        "pid": proc.pid, "dir": str(folder), "socket": str(folder / client.SOCKET_NAME),
        "log": str(log_path), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})  # fmt: skip
    return proc


def start(folder: Path, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
    """Start the worker (or keep the one running when its code is current) and wait until it
    answers. Returns its status; ``error`` says why it is not running (the server works
    without it: commands run cold)."""
    launched = launch(folder)
    return launched if isinstance(launched, dict) else wait_ready(folder, launched, timeout)


def wait_ready(
    folder: Path, proc: subprocess.Popen[bytes] | None, timeout: float = START_TIMEOUT_S
) -> dict[str, Any]:
    log_path = folder / LOG_FILE
    deadline = time.monotonic() + timeout
    while ping(folder) is None:
        exited = proc.poll() if proc is not None else None
        if exited is not None or (proc is None and not status(folder)["running"]):
            (folder / STATE_FILE).unlink(missing_ok=True)
            return {"running": False, "error": f"the worker exited with code {exited} "
                    f"while starting; log: {log_path}"}  # fmt: skip
        if time.monotonic() > deadline:
            stop(folder)
            return {"running": False, "error": f"the worker did not answer within "
                    f"{timeout:.0f} s; log: {log_path}"}  # fmt: skip
        time.sleep(0.2)
    return status(folder)


def stop(folder: Path) -> dict[str, Any] | None:
    """SIGTERM the worker (it SIGTERMs its running commands and waits for them), SIGKILL its
    group after a grace period. Returns its state, or None when none was running."""
    from zhflow.flows.server import _signal_group, _wait_gone

    state = read_state(folder)
    if state is None:
        return None
    if _is_our_worker(state):
        pid = int(state["pid"])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, STOP_GRACE_S + 5):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
    else:
        state = None
    (folder / STATE_FILE).unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if read_state(folder) is None:
            (folder / client.SOCKET_NAME).unlink()
    return state


def status(folder: Path) -> dict[str, Any]:
    """``running`` (ours, alive), ``answers`` (replied to a ping), ``stale`` (imported code
    older than what is installed now: it declines commands until restarted)."""
    state = read_state(folder)
    if state is None or not _is_our_worker(state):
        return {"running": False}
    report = ping(folder)
    out: dict[str, Any] = {"running": True, "answers": report is not None, "stale": False,
                           **state}  # fmt: skip
    if report is not None:
        out.update(stale=report["fingerprint"] != client.code_fingerprint(),
                   served=report["served"], bundles=report["bundles"])  # fmt: skip
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]))
