from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zhflow.tasks.catalog import HISTORY_JSON
from zhflow.tasks.storage import (
    DEAD_TEMP_SECONDS,
    artifact_ref,
    atomic_path,
    building_artifact,
    remove_dead_temps,
    sha256_file,
    verify_artifact,
)


def test_atomic_path_leaves_target_untouched_on_error(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_artifact_is_built_then_verified(tmp_path) -> None:
    with building_artifact(tmp_path, "stage", "k1") as out:
        (out / "a.txt").write_text("hello")
    ref = artifact_ref(tmp_path, "stage", "k1")
    assert ref is not None and ref.file("a.txt").read_text() == "hello"
    assert ref.digest == verify_artifact(tmp_path / "stage" / "k1")


def test_corrupt_or_truncated_artifact_is_rejected(tmp_path) -> None:
    with building_artifact(tmp_path, "stage", "k1") as out:
        (out / "a.txt").write_text("hello")
    path = tmp_path / "stage" / "k1" / "a.txt"
    path.write_text("jello")  # same size, other content
    assert verify_artifact(path.parent) is None
    assert verify_artifact(path.parent, deep=False) is not None
    path.write_text("hel")
    assert artifact_ref(tmp_path, "stage", "k1") is None


def test_a_training_records_timings_are_checked_but_not_part_of_the_digest(tmp_path) -> None:
    """Two trainings with the same weights differ in history.json's wall-clock seconds (and a
    resumed one in ``resumed_from_epoch``); their digests (what downstream keys hash) must
    agree. The epochs run, the loss curve the metrics stage plots, still count."""
    records = {
        "k1": ("w", {"epochs": [{"epoch": 1, "valid_loss": 0.5, "seconds": 1.5}], "seconds": 2.0}),
        "k2": ("w", {"epochs": [{"epoch": 1, "valid_loss": 0.5, "seconds": 9.25}],
                     "seconds": 11.0, "resumed_from_epoch": 1}),
        "k3": ("v", {"epochs": [{"epoch": 1, "valid_loss": 0.5, "seconds": 1.5}], "seconds": 2.0}),
        "k4": ("w", {"epochs": [{"epoch": 1, "valid_loss": 0.5, "seconds": 1.5},
                                {"epoch": 2, "valid_loss": 0.6, "seconds": 1.5}], "seconds": 2.0}),
    }  # fmt: skip
    refs = []
    for key, (weights, history) in records.items():
        with building_artifact(tmp_path, "model", key) as out:
            (out / "weights.bin").write_text(weights)
            (out / HISTORY_JSON).write_text(json.dumps(history))
        refs.append(artifact_ref(tmp_path, "model", key))
    same, timed_apart, other_weights, another_epoch = (r.digest for r in refs if r is not None)
    assert same == timed_apart
    assert len({same, other_weights, another_epoch}) == 3
    path = tmp_path / "model" / "k1" / HISTORY_JSON
    path.write_text(path.read_text().replace("1.5", "2.5"))  # the same size
    assert verify_artifact(path.parent) is None  # the record is still checked


def test_failed_build_leaves_nothing(tmp_path) -> None:
    with pytest.raises(ValueError), building_artifact(tmp_path, "stage", "k2") as out:
        (out / "a.txt").write_text("partial")
        raise ValueError("bad input")
    assert list((tmp_path / "stage").iterdir()) == []


def test_sha256_file_chunks(tmp_path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (3 << 20))
    import hashlib

    assert sha256_file(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()


def _aged(path: Path, seconds: float = DEAD_TEMP_SECONDS + 60) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past))
    return path


def test_a_killed_writers_temp_file_goes_at_the_next_write_and_nothing_else(tmp_path) -> None:
    target = tmp_path / "p.parquet"
    dead = tmp_path / ".p.parquet.zhflow-abcd_123.tmp"
    dead.write_bytes(b"half an output")
    _aged(dead)
    young = tmp_path / ".p.parquet.zhflow-young123.tmp"  # a writer that just started
    young.write_bytes(b"")
    users = [tmp_path / ".p.parquet.backup.tmp", tmp_path / ".p.parquet.zhflow-toolongname.tmp",
             tmp_path / ".q.parquet.zhflow-abcd1234.tmp"]  # fmt: skip
    for path in users:
        path.write_bytes(b"keep")
        _aged(path)
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(".p.parquet.zhflow-")
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert not dead.exists()
    assert young.exists()
    assert all(p.read_bytes() == b"keep" for p in users)


def test_a_temp_file_a_live_writer_holds_is_kept_however_old(tmp_path) -> None:
    target = tmp_path / "p.parquet"
    live = tmp_path / ".p.parquet.zhflow-live1234.tmp"
    live.write_bytes(b"")
    _aged(live)
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # what atomic_path holds while its writer writes
        assert remove_dead_temps(target) == []
        assert live.exists()
    assert remove_dead_temps(target) == [live]  # released, as when its process dies


@pytest.mark.slow
def test_sigkill_mid_write_leaves_a_temp_file_the_next_write_removes(tmp_path) -> None:
    target = tmp_path / "out.bin"
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from zhflow.tasks.storage import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000); print('writing', flush=True); time.sleep(60)\n"
    )], stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    (left,) = tmp_path.glob(".out.bin.zhflow-*.tmp")
    _aged(left)
    assert remove_dead_temps(target) == []  # alive: its lock holds
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert left.exists() and not target.exists()  # killed outright: no cleanup ran
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
