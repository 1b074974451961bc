"""flows/lifecycle.py on its own: signals become SystemExit while a command runs, and only
servers started during the command are stopped."""

from __future__ import annotations

import os
import signal
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
