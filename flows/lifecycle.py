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
import signal
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
