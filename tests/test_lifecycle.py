"""flows/lifecycle.py on its own: signals become SystemExit while a command runs, only
servers started during the command are stopped, and after a SIGKILL the watchdog stops only
the child Prefect marked as its temporary server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from zhflow.flows import lifecycle


def test_sigterm_raises_system_exit_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info, lifecycle.stop_signals_exit():
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


class _FakeServer:
    def __init__(self) -> None:
        self.running, self.stopped = True, False

    def stop(self) -> None:
        self.stopped, self.running = True, False


def test_own_servers_stops_only_servers_started_since(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = _FakeServer(), _FakeServer()
    servers: dict[int, Any] = {id(old): old}
    monkeypatch.setattr(lifecycle, "_servers", lambda: dict(servers))
    monkeypatch.setattr(lifecycle, "_drain_prefect_workers", lambda: None)
    own = lifecycle.OwnServers()
    servers[id(new)] = new
    assert own.started() == [new]
    own.stop()
    assert new.stopped and not old.stopped
    assert own.started() == []  # stopped servers are no longer running


_COMMAND = """
import os, subprocess, sys, time
from zhflow.flows.lifecycle import watch_for_sigkill
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
marked = subprocess.Popen(sleep, env={**os.environ, "PREFECT__SERVER_EPHEMERAL": "1"})
other = subprocess.Popen(sleep)  # a persistent server, or any other child: never touched
watch_for_sigkill()
print(marked.pid, other.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="the watchdog needs Linux pidfds")
def test_the_watchdog_stops_only_the_marked_server_of_a_sigkilled_command() -> None:
    command = subprocess.Popen([sys.executable, "-c", _COMMAND], stdout=subprocess.PIPE, text=True)
    assert command.stdout is not None
    marked, other = (int(pid) for pid in command.stdout.readline().split())
    try:
        time.sleep(1.5)  # the watchdog looks for the command's children every 0.5 s
        command.kill()
        command.wait()
        deadline = time.monotonic() + 10
        while _alive(marked) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(marked), "the marked child outlived its SIGKILLed parent"
        assert _alive(other)
    finally:
        for pid in (marked, other):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
