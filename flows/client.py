"""The ``zhflow`` console script: hand ``score``, ``predict`` and ``evaluate`` to the warm
worker when one answers, else run the command here (the cold path, :func:`zhflow.flows.cli.entry`).

This module imports only the standard library: the warm path must not pay for click, torch,
Prefect or polars. The worker (flows/worker.py, started by ``zhflow server start``) listens
on ``$ZHFLOW_HOME/server/worker.sock``. The client sends, as one JSON line, its argv, working
directory, environment, umask, niceness and the encodings of its standard streams, and
passes the standard streams themselves (SCM_RIGHTS). The worker forks a child of its warm
process that takes on all of that and runs the same ``zhflow.flows.cli.entry`` a cold process runs,
writing straight to this process's stdout and stderr; the client then waits for its exit
status and exits with it. So the output, ``--json`` last lines, ``zhflow: error:`` lines and
exit codes are the cold path's.

Handshake: request → ``{"accepted": ...}`` → ``{"go": true}`` → ``{"exit": N}``. Until the
client has sent ``go`` nothing has run, so any failure before it (no socket, a dead worker, a
stale one, a declined request, no reply within :data:`ACCEPT_TIMEOUT_S`) falls back to the
cold path silently; after it the command runs in the worker and the client only waits.

Ctrl-C (SIGINT), SIGTERM and SIGHUP received while waiting are forwarded to the command's
process group, which unwinds exactly as a cold process does (temporary files removed, exit
130/143); the worker itself never waits on a client. ``ZHFLOW_NO_WORKER=1`` forces the cold
path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import site
import socket
import sys
from pathlib import Path
from typing import Any

PROTOCOL = 1
SOCKET_NAME = "worker.sock"
#: Commands the worker runs; everything else (run, info, serve, server, --help) stays here.
WARM_COMMANDS = frozenset({"score", "predict", "evaluate"})
ACCEPT_TIMEOUT_S = 15.0  # the worker loads the bundle before it answers
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: The code the worker imported, next to this file (the same tree on both sides).
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "tasks", "models")


def server_dir() -> Path:
    """``$ZHFLOW_HOME/server`` (the same folder as :func:`zhflow.flows.server.server_dir`)."""
    return Path(os.environ.get("ZHFLOW_HOME") or "~/.zhflow").expanduser() / "server"


def socket_path() -> Path:
    return server_dir() / SOCKET_NAME


def code_fingerprint() -> str:
    """Changes when zhflow's code or the installed packages change (file mtimes and sizes;
    site-packages' own mtime moves on every install), so a worker that imported older code
    declines and the command runs cold. A few hundred ``stat`` calls: about 1 ms."""
    h = hashlib.sha256()
    for package in PACKAGES:
        folder = PACKAGE_ROOT / package
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    h.update(f"{package}/{entry.name}:{st.st_mtime_ns}:{st.st_size};".encode())
    for packages in site.getsitepackages() if hasattr(site, "getsitepackages") else []:
        with contextlib.suppress(OSError):
            h.update(f"{packages}:{os.stat(packages).st_mtime_ns};".encode())
    return h.hexdigest()[:32]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _stream_info() -> list[dict[str, Any]] | None:
    """Encoding and buffering of stdin, stdout, stderr (the child re-creates them), or None
    when one is missing (a closed descriptor): then the cold path handles it."""
    info = []
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        if stream is None:
            return None
        try:
            stream.fileno()
        except (OSError, ValueError, AttributeError):
            return None
        info.append({"encoding": stream.encoding, "errors": stream.errors,
                     "line_buffering": stream.line_buffering,
                     "write_through": getattr(stream, "write_through", False)})  # fmt: skip
    return info


def build_request(argv: list[str]) -> dict[str, Any] | None:
    streams = _stream_info()
    if streams is None:
        return None
    try:
        cwd = os.getcwd()
    except OSError:  # a deleted working directory: let the cold path report it
        return None
    return {
        "protocol": PROTOCOL,
        "argv": argv,
        "cwd": cwd,
        "env": dict(os.environ),
        "umask": _umask(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "streams": streams,
        "executable": sys.executable,
        # click names the program from argv[0] and __main__'s package ("zhflow" for the
        # console script, "python -m ..." otherwise); the child's __main__ is the worker.
        "main_package": getattr(sys.modules.get("__main__"), "__package__", None),
        "fingerprint": code_fingerprint(),
    }


class _Lines:
    """Newline-delimited JSON messages on a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self) -> dict[str, Any] | None:
        """The next message; None at end of stream."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        message = json.loads(line)
        return message if isinstance(message, dict) else None


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _offer(argv: list[str]) -> tuple[socket.socket, _Lines] | None:
    """Connect, send the request with our standard streams, and get the worker's yes; None
    (nothing has run) for any reason to stay cold."""
    path = socket_path()
    request = build_request(argv)
    if request is None or not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(ACCEPT_TIMEOUT_S)
        sock.connect(str(path))
        data = json.dumps(request).encode() + b"\n"
        socket.send_fds(sock, [data], [0, 1, 2])
        lines = _Lines(sock)
        reply = lines.read()
        if not reply or reply.get("accepted") is not True:
            sock.close()
            return None
        _send(sock, {"go": True})  # from here on the command runs in the worker
        sock.settimeout(None)
        return sock, lines
    except (OSError, ValueError):
        sock.close()
        return None


def _forwarding(sock: socket.socket) -> Any:
    def forward(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError):
            _send(sock, {"signal": signum})

    return forward


def run_in_worker(argv: list[str]) -> int | None:
    """Run ``zhflow argv[1:]`` in the warm worker and return its exit code; None when it
    did not run there (the caller runs it cold)."""
    if os.environ.get("ZHFLOW_NO_WORKER") or len(argv) < 2 or argv[1] not in WARM_COMMANDS:
        return None
    offered = _offer(argv)
    if offered is None:
        return None
    sock, lines = offered
    previous = {sig: signal.signal(sig, _forwarding(sock)) for sig in FORWARDED_SIGNALS}
    try:
        while True:
            try:
                message = lines.read()
            except (OSError, ValueError):
                message = None
            if message is None:
                print("zhflow: error: the zhflow worker stopped while running this command "
                      f"(log: {server_dir() / 'worker.log'})", file=sys.stderr)  # fmt: skip
                return 1
            if "exit" in message:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    killed_by = message.get("signal")
    if isinstance(killed_by, int) and killed_by > 0:
        # The command died of a signal: die of the same one, so a shell sees what it
        # would have seen (e.g. 130 after Ctrl-C reached an unprotected point).
        sys.stdout.flush()
        signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    return int(message["exit"])


def entry() -> None:
    """The ``zhflow`` console script."""
    code = run_in_worker(list(sys.argv))
    if code is not None:
        sys.exit(code)
    from zhflow.flows.cli import entry as cold_entry

    cold_entry()


if __name__ == "__main__":
    entry()
