"""Issue 13, faults: a work dir is relocatable (copied, moved, mounted elsewhere it stays valid
and self-contained), and SIGTERM/SIGINT stop the temporary Prefect server a command started.
docs/RELIABILITY.md lists the cases."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from tests.conftest import tiny_corpus_rows

TRAIN = ("--tokenizer", "char", "--processes", "1", "--epochs", "1", "--hidden", "8",
         "--embedding-dim", "8", "--json")  # fmt: skip


def _cli(*args: object) -> dict:
    from zhflow.flows.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rows = tiny_corpus_rows()
    path = tmp_path / "tiny.csv"
    pl.DataFrame({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}).write_csv(path)
    return path


def _inside(summary: dict, workdir: Path) -> None:
    root = str(workdir.resolve())
    assert summary["workdir"] == root
    for name, path in summary["artifacts"].items():
        assert path.startswith(f"{root}/"), (name, path)
    assert summary["model"].startswith(f"{root}/bundle/")


@pytest.mark.prefect
def test_copied_then_moved_work_dir_stays_valid(prefect_server, corpus: Path, tmp_path) -> None:
    wd, wd2 = tmp_path / "wd", tmp_path / "wd2"
    first = _cli("run", corpus, "--workdir", wd, *TRAIN)
    _inside(first, wd)
    shutil.copytree(wd, wd2, symlinks=True)  # cp -a
    # While wd still exists, a run on the copy reports the copy's artifacts and bundle.
    copy = _cli("run", corpus, "--workdir", wd2, *TRAIN)
    assert {t["state"] for t in copy["tasks"]} == {"Cached"}
    _inside(copy, wd2)
    # Then wd moves away: the copy still runs (all cached) and stays self-contained.
    shutil.move(wd, tmp_path / "elsewhere" / "wd")
    moved = _cli("run", corpus, "--workdir", wd2, *TRAIN)
    assert {t["state"] for t in moved["tasks"]} == {"Cached"}
    _inside(moved, wd2)
    assert moved["accuracy"] == first["accuracy"]
    # Records and the run record name artifacts relative to the work dir.
    for record in (wd2 / "cache").iterdir():
        ref = json.loads(json.loads(record.read_text())["result"])
        assert ref["path"] == f"{ref['stage']}/{ref['key']}", ref
    latest = json.loads((wd2 / "runs" / "latest.json").read_text())
    assert latest["model"].startswith("bundle/") and latest["workdir"] == "."
    # Scoring with --model WORKDIR uses this work dir's bundle.
    from zhflow.flows.scoring import resolve_bundle

    assert Path(resolve_bundle(str(wd2))).resolve() == Path(moved["model"])
    # A run stopped by --until (as tune's data runs are) keeps the work dir's bundle.
    _cli("run", corpus, "--workdir", wd2, "--until", "vocab", *TRAIN)
    assert json.loads((wd2 / "runs" / "latest.json").read_text()) == latest
    # Scoring with --bundle WORKDIR writes beside it: its top level, or serve's scores/.
    for out in (wd2 / "top.parquet", wd2 / "scores" / "predictions.parquet"):
        scored = _cli("score", "--bundle", wd2, corpus, "--output", out, "--processes", "1",
                      "--json")  # fmt: skip
        assert scored["rows"] == pl.read_parquet(out).height > 0


@pytest.mark.prefect
def test_moved_work_dir_rebuilds_only_what_is_missing(
    prefect_server, corpus: Path, tmp_path: Path
) -> None:
    wd = tmp_path / "wd"
    _cli("run", corpus, "--workdir", wd, "--until", "vocab", *TRAIN)
    wd2 = tmp_path / "mounted" / "wd"
    shutil.move(wd, wd2)
    summary = _cli("run", corpus, "--workdir", wd2, "--until", "encode", *TRAIN)
    states = {t["name"]: t["state"] for t in summary["tasks"]}
    assert states == {"corpus": "Cached", "tokens": "Cached", "ngrams": "Cached",
                      "vocab": "Cached", "encoded": "Completed"}  # fmt: skip
    assert summary["artifacts"]["encoded"].startswith(str(wd2.resolve()))


def test_refs_are_stored_relative_and_anchored_on_reading(tmp_path: Path) -> None:
    from zhflow.tasks.cache import RelocatableJSON, anchor_ref
    from zhflow.tasks.storage import ArtifactRef

    ref = {"stage": "vocab", "key": "k1", "path": "/old/place/vocab/k1", "digest": "d"}
    stored = json.loads(RelocatableJSON().dumps(ref))
    assert stored == {**ref, "path": "vocab/k1"}
    anchored = ArtifactRef(**{**ref, "path": str(tmp_path / "vocab" / "k1")})
    assert anchor_ref(stored, tmp_path) == anchored
    assert anchor_ref(ref, tmp_path) == anchored  # old records
    assert RelocatableJSON().loads(RelocatableJSON().dumps(anchored)) == ArtifactRef(
        **stored)  # fmt: skip
    assert anchor_ref({"other": 1}, tmp_path) == {"other": 1}


# ------------------------------------------------------------------------------------------
# signals: the temporary server goes down with the command


def _zhflow() -> list[str]:
    script = Path(sys.executable).with_name("zhflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zhflow.flows.cli"]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _server_processes(port: int) -> list[int]:
    """Pids of uvicorn processes serving ``port`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in b" ".join(cmd) and str(port).encode() in cmd:
            found.append(int(entry.name))
    return found


def _big_corpus(path: Path, rows: int = 3000) -> Path:
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            text = "".join(rng.choice("好差快慢贵便宜服务态度味道") for _ in range(30))
            f.write(
                json.dumps({"text": text, "label": "pos" if i % 2 else "neg"}, ensure_ascii=False)
            )
            f.write("\n")
    return path


def _start_long_run(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, Path]:
    """``zhflow run`` on a 3,000-row corpus for 50 epochs, in its own session, with no
    Prefect API configured (so it starts a temporary server); its stderr goes to a file."""
    corpus = _big_corpus(tmp_path / "big.jsonl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # no API URL
    env.update(PREFECT_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")  # fmt: skip
    err = tmp_path / "stderr.txt"
    with open(err, "wb") as sink:
        proc = subprocess.Popen(
            [*_zhflow(), "run", str(corpus), "--workdir", str(tmp_path / "wd"), "--tokenizer",
             "char", "--epochs", "50", "--processes", "1", *flags],
            env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True,
        )  # fmt: skip
    return proc, err


def _temporary_server_port(proc: subprocess.Popen, err: Path) -> int:
    """The port of the temporary server ``proc`` started, once its flow run has begun."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        text = err.read_text(errors="replace")
        started = re.search(r"Starting temporary server on http://127\.0\.0\.1:(\d+)", text)
        if started and "Beginning flow run" in text:
            return int(started.group(1))
        time.sleep(0.2)
    raise AssertionError(err.read_text(errors="replace")[-3000:])


def _wait_for_server_gone(port: int, seconds: float = 15) -> list[int]:
    """Wait until no process listens on ``port``; returns the server processes still there."""
    deadline = time.monotonic() + seconds
    while _server_processes(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _server_processes(port)


def _kill_what_is_left(proc: subprocess.Popen, port: int | None) -> None:
    """A failed test must not leave the command or its server running."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in _server_processes(port) if port else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find server processes")
def test_sigkill_of_the_command_does_not_orphan_its_temporary_server(tmp_path: Path) -> None:
    """No code of ours runs on SIGKILL; the watchdog process the command started when it
    chose the temporary server (``lifecycle.watch_for_sigkill``) sees the command's end and
    stops the server. Before, the server went on listening with parent 1."""
    proc, err = _start_long_run(tmp_path)
    port = None
    try:
        port = _temporary_server_port(proc, err)
        assert _server_processes(port)
        proc.kill()  # the command only: its server, in the same session, is not signalled
        proc.wait()
        assert _wait_for_server_gone(port) == [], "the server outlived a SIGKILLed command"
    finally:
        _kill_what_is_left(proc, port)


def _session_processes(sid: int) -> dict[int, str]:
    """Live (not zombie) processes of session ``sid``: pid -> command line (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(entry.name)] = cmd
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find processes")
def test_a_seed_ensemble_shares_the_temporary_server_and_stops_with_the_command(
    tmp_path: Path,
) -> None:
    """``--seeds 2`` trains its members in spawned processes. They used to start a temporary
    Prefect server each (their API was the parent's settings, not its environment), and on
    SIGTERM the command waited while they went on training (24 s measured here)."""
    proc, err = _start_long_run(tmp_path, "--seeds", "2")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if len(re.findall(r"epoch 2/50", err.read_text(errors="replace"))) >= 2:
                break  # both members are training
            time.sleep(0.2)
        assert proc.poll() is None, err.read_text(errors="replace")[-3000:]
        running = _session_processes(proc.pid)
        servers = [cmd for cmd in running.values() if "uvicorn" in cmd]
        members = [cmd for cmd in running.values() if "spawn_main" in cmd]
        assert len(members) == 2
        assert len(servers) == 1, servers  # the command's own temporary server, no other
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            "spawn_main" in cmd or "uvicorn" in cmd for cmd in _session_processes(proc.pid).values()
        ):
            time.sleep(0.2)
        assert not any("spawn_main" in cmd or "uvicorn" in cmd
                       for cmd in _session_processes(proc.pid).values())  # fmt: skip
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in _session_processes(proc.pid):  # never leave one behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find server processes")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_temporary_server(tmp_path: Path, signum: int) -> None:
    proc, err = _start_long_run(tmp_path)
    port = None
    try:
        port = _temporary_server_port(proc, err)
        time.sleep(2)  # inside a stage
        assert _listening(port)
        proc.send_signal(signum)  # the command only, as `kill PID` or Ctrl-C would
        assert proc.wait(timeout=90) == 128 + signum, err.read_text(errors="replace")[-3000:]
        assert _wait_for_server_gone(port) == [], "the temporary server outlived the command"
        assert not _listening(port)
    finally:
        _kill_what_is_left(proc, port)
