"""A command's lifetime around its Prefect flow: the temporary Prefect server it starts goes
down with it (on an error, SIGTERM or SIGINT), and an error is the last line on stderr.

Without a ``PREFECT_API_URL`` Prefect starts a temporary server in a child process and stops
it from an ``atexit`` hook. A SIGTERM kills Python before that hook runs, which left the server
listening with parent 1; and on an error the hook's "Stopping temporary server" log line came
after the ``zhflow: error:`` line. Only servers started during the command are stopped: a
server that was running before (a test harness, ``zhflow server start``) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

#: Signals that stop a command the way Ctrl-C does: unwinding (temp files removed), then exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _servers() -> dict[int, Any]:
    # A temporary server exists only once Prefect imported its server module; importing it
    # here just to look would cost ~3-6 s (the whole API stack) on every command that uses
    # a persistent server.
    module = sys.modules.get("prefect.server.api.server")
    if module is None:
        return {}
    return {id(s): s for s in list(module.SubprocessASGIServer._instances.values())}


def _drain_prefect_workers() -> None:
    """Send buffered logs and events before the server goes (else they log connect errors)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
    except Exception:  # best effort: the command is ending anyway
        pass


class OwnServers:
    """Remembers the temporary servers that existed when it was made; ``stop()`` stops the
    ones started since (children of this command)."""

    def __init__(self) -> None:
        self.before = set(_servers())

    def started(self) -> list[Any]:
        return [s for key, s in _servers().items() if key not in self.before and s.running]

    def stop(self) -> None:
        servers = self.started()
        if not servers:
            return
        _drain_prefect_workers()
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds like an exception: finally blocks remove temp files, context
    # managers stop worker pools, and the caller's ``finally`` stops the server.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def stop_signals_exit() -> Iterator[None]:
    """While the body runs, SIGTERM and SIGINT raise ``SystemExit(128 + signal)``.

    Only in the main thread (signal handlers can be set nowhere else); the previous handlers
    come back afterwards, so an embedding program (or a test) keeps its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------ after a SIGKILL

#: Runs in a process of its own (``python -c``, standard library only): once the command is
#: gone, SIGKILL included, it stops the temporary Prefect servers the command started. Its
#: stdin is a pipe only the command holds, so end-of-file means the command has ended. A
#: server is a direct child of the command whose environment Prefect marked ephemeral
#: (``PREFECT__SERVER_EPHEMERAL=1``), held by a pidfd so a reused pid is never signalled;
#: the persistent server (``zhflow server start``) is never marked so, and never touched.
_WATCHDOG = r"""
import os, select, signal, sys
command = int(sys.argv[1])

def children():
    try:
        tasks = os.listdir(f"/proc/{command}/task")
        found = set()
        for tid in tasks:
            with open(f"/proc/{command}/task/{tid}/children") as f:
                found.update(int(pid) for pid in f.read().split())
        return found
    except OSError:
        return set()

def temporary_server(pidfd, pid):
    try:  # read after pidfd_open: the pidfd's process, not one that reused the pid
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        if int(stat[stat.rindex(b")") + 2:].split()[1]) != command:
            return False
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"PREFECT__SERVER_EPHEMERAL=1" in f.read().split(b"\0")
    except (OSError, ValueError):
        return False

watched, seen = [], set()
while True:
    for pid in children() - seen:
        seen.add(pid)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        if temporary_server(pidfd, pid):
            watched.append(pidfd)
        else:
            os.close(pidfd)
    if select.select([sys.stdin], [], [], 0.5 if not watched else None)[0]:
        if not os.read(sys.stdin.fileno(), 4096):
            break
for pidfd in watched:
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        if not select.select([pidfd], [], [], 5)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
"""

_watchdog: subprocess.Popen[bytes] | None = None


def watch_for_sigkill() -> None:
    """Start (once per process) the watchdog that stops this command's temporary Prefect
    server if the command is killed outright (SIGKILL, the OOM killer), when no code of
    ours runs: Prefect's server was left listening with parent 1. SIGTERM and Ctrl-C are
    handled in-process (:func:`stop_signals_exit`); a normal exit stops the server first,
    so the watchdog then finds it gone. Linux only (``/proc``, pidfds); elsewhere a no-op."""
    global _watchdog
    if _watchdog is not None or not sys.platform.startswith("linux"):
        return
    if not hasattr(os, "pidfd_open") or not hasattr(signal, "pidfd_send_signal"):
        return
    with contextlib.suppress(OSError):
        _watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C at the terminal must not end it first
        )  # fmt: skip
