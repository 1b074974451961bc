"""Sharded stages: the shard functions alone, then the flows on a real Dask cluster.

The cluster tests start ``dask scheduler`` and two ``dask worker`` processes on loopback, run
segmentation and scoring through them (``prefect_dask.DaskTaskRunner``) and compare the
output files with a local run's, byte for byte.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import tiny_corpus_rows
from tests.helpers import train_tiny_bundle
from zhflow.tasks import cluster as cluster_fns
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.cluster import ClusterSpec
from zhflow.tasks.errors import InputError
from zhflow.tasks.score import score_file, score_file_sharded, score_parquet_shard
from zhflow.tasks.segment import (
    TokenizerSpec,
    assemble_token_shards,
    segment_frame,
    segment_parquet_rows,
)


def _corpus_frame(n_copies: int = 12) -> pl.DataFrame:
    rows = tiny_corpus_rows(n_copies)
    return pl.DataFrame(
        {
            "id": [str(i) for i in range(len(rows))],
            "text": [t if i % 17 else "" for i, (t, _) in enumerate(rows)],  # empties too
            "label": [lab for _, lab in rows],
            "split": ["train"] * len(rows),
        }
    )


def _score_input(path: Path, rows: int = 1000) -> Path:
    texts = [t for t, _ in tiny_corpus_rows(12)]
    column = [None if i % 50 == 0 else ("" if i % 71 == 0 else texts[i % len(texts)])
              for i in range(rows)]  # fmt: skip
    pl.DataFrame({"text": column}).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("cluster") / "bundle")


# ----------------------------------------------------------------------------- pure functions


def test_token_shards_join_to_the_local_file_byte_for_byte(tmp_path: Path) -> None:
    frame = _corpus_frame()
    corpus = tmp_path / "corpus.parquet"
    frame.write_parquet(corpus)
    spec = TokenizerSpec()  # jieba
    bounds = [(0, 50), (50, 51), (51, 51), (51, frame.height)]  # an empty shard too
    parts = []
    for k, (a, b) in enumerate(bounds):
        parts.append(tmp_path / f"part{k}.parquet")
        assert segment_parquet_rows(corpus, a, b, spec, parts[-1]) == b - a
    joined = assemble_token_shards(frame, parts)
    local = segment_frame(frame, spec)
    assert joined.equals(local)
    joined.write_parquet(tmp_path / "a.parquet")
    local.write_parquet(tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    with pytest.raises(ValueError, match="shards hold"):
        assemble_token_shards(frame, parts[:1])


def test_sharded_scoring_writes_the_local_file_byte_for_byte(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    source = _score_input(tmp_path / "in.parquet")
    bundle = load_bundle(tiny_bundle)
    local = score_file(bundle, source, tmp_path / "local.parquet", chunk_rows=128, workers=1)

    def run_here(pairs: Iterable[tuple[str, str]]) -> Iterator[int]:
        for in_path, out_path in pairs:  # what a Dask worker does with each shard
            yield score_parquet_shard(str(tiny_bundle), in_path, out_path, 512)

    sharded = score_file_sharded(bundle, source, tmp_path / "sharded.parquet", run_here,
                                 chunk_rows=128)  # fmt: skip
    assert sharded["rows"] == local["rows"] == 1000
    assert sharded["empty_texts"] == local["empty_texts"] > 0
    assert (tmp_path / "sharded.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "in.parquet", "local.parquet", "sharded.parquet"]  # shard files removed  # fmt: skip


def test_cluster_spec_is_checked() -> None:
    assert ClusterSpec.from_params(None, None) is None
    assert ClusterSpec.from_params("tcp://127.0.0.1:8786", None) == ClusterSpec(
        "tcp://127.0.0.1:8786"
    )
    assert ClusterSpec.from_params(None, 2) == ClusterSpec(workers=2)
    with pytest.raises(InputError, match="not both"):
        ClusterSpec("tcp://127.0.0.1:8786", 2)
    for address in ("127.0.0.1:8786", "tcp://127.0.0.1", "tcp://127.0.0.1:abc",
                    "tcp://127.0.0.1:8786/x", "tcp://[::1", "tls://127.0.0.1:1",
                    "tcp://127.0.0.1:99999", "tcp://127.0.0.1:0"):  # fmt: skip
        with pytest.raises(InputError, match="tcp://HOST:PORT"):
            ClusterSpec(address)
    for address in ("tcp://[::1]:8786", "tcp://scheduler.local:8786", "tcp://10.0.0.5:1"):
        assert ClusterSpec(address).address == address
    with pytest.raises(InputError, match="--dask-address is empty"):
        ClusterSpec.from_params("", None)
    with pytest.raises(InputError, match="positive"):
        ClusterSpec(workers=0)


# ----------------------------------------------------------------------------- a real cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask_cli() -> str:
    exe = Path(sys.executable).with_name("dask")
    return str(exe) if exe.exists() else shutil.which("dask") or "dask"


@contextmanager
def _dask_processes(logs: Path, workers: int) -> Iterator[str]:
    """`dask scheduler` and ``workers`` single-threaded `dask worker` processes on loopback;
    yields the scheduler's address once it answers and every worker has joined."""
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    cmds = [[_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"]]  # fmt: skip
    cmds += [[_dask_cli(), "worker", address, "--nthreads", "1", "--nworkers", "1",
              "--no-dashboard", "--name", f"w{i}"] for i in range(workers)]  # fmt: skip
    procs = []
    try:
        for k, cmd in enumerate(cmds):
            out = (logs / f"{k}.log").open("wb")
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=logs))
            if k == 0:
                time.sleep(1.0)
        with Client(address, timeout="60s") as client:
            if workers:
                client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def dask_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two workers, shared by the module's cluster runs."""
    with _dask_processes(tmp_path_factory.mktemp("dask"), workers=2) as address:
        yield address


def _worker_modules(address: str, name: str) -> list[bool]:
    from distributed import Client

    def loaded() -> bool:
        return name in sys.modules

    with Client(address, timeout="30s") as client:
        return list(client.run(loaded).values())


@pytest.mark.slow
@pytest.mark.prefect
def test_segmentation_on_a_dask_cluster_matches_a_local_run(
    prefect_server, dask_address: str, tiny_csv: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from prefect.client.orchestration import get_client

    from zhflow.flows.pipeline import train_pipeline

    monkeypatch.setattr(cluster_fns, "SHARD_ROWS", 10)  # 96 rows → 10 shards on 2 workers
    args = dict(corpus=str(tiny_csv), until="tokenize", tokenizer="jieba")
    local = train_pipeline(workdir=str(tmp_path / "local"), **args)
    remote = train_pipeline(workdir=str(tmp_path / "remote"), dask_address=dask_address, **args)
    assert [t["state"] for t in remote["tasks"]] == ["Completed", "Completed"]
    a = Path(local["artifacts"]["tokens"]) / "tokens.parquet"
    b = Path(remote["artifacts"]["tokens"]) / "tokens.parquet"
    assert a.read_bytes() == b.read_bytes()
    assert Path(local["artifacts"]["tokens"]).name == Path(remote["artifacts"]["tokens"]).name
    assert all(_worker_modules(dask_address, "jieba"))  # both workers segmented
    assert not any((tmp_path / "remote" / "shards").iterdir())  # scratch files removed
    with get_client(sync_client=True) as client:
        names = {r.name: r.state_name for r in client.read_task_runs()}
    shard_runs = {n: s for n, s in names.items() if n.startswith("segment-shard-")}
    assert len(shard_runs) == 10 and set(shard_runs.values()) == {"Completed"}
    # unchanged rerun on the cluster: cached, no shard runs
    again = train_pipeline(workdir=str(tmp_path / "remote"), dask_address=dask_address, **args)
    assert [t["state"] for t in again["tasks"]] == ["Cached", "Cached"]


@pytest.mark.slow
@pytest.mark.prefect
def test_scoring_on_a_dask_cluster_matches_a_local_run(
    prefect_server, dask_address: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    from zhflow.flows.scoring import score_pipeline

    source = str(_score_input(tmp_path / "in.parquet"))
    args = dict(bundle=str(tiny_bundle), input=source, chunk_rows=100)
    local = score_pipeline(output=str(tmp_path / "local.parquet"), **args)
    remote = score_pipeline(output=str(tmp_path / "remote.parquet"), dask_address=dask_address,
                            **args)  # fmt: skip
    assert remote["rows"] == local["rows"] == 1000 and remote["cluster"] == dask_address
    assert (tmp_path / "remote.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()
    assert all(_worker_modules(dask_address, "torch"))  # both workers ran the model
    # --workers 2: a local cluster started for the run, same bytes again
    started = score_pipeline(output=str(tmp_path / "lc.parquet"), dask_workers=2, **args)
    assert started["cluster"] == "local:2"
    assert (tmp_path / "lc.parquet").read_bytes() == (tmp_path / "local.parquet").read_bytes()


@pytest.mark.slow
def test_unreachable_scheduler_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_fns, "CONNECT_TIMEOUT", "2s")
    with (
        pytest.raises(InputError, match="cannot reach the Dask scheduler"),
        cluster_fns.open_task_runner(ClusterSpec(f"tcp://127.0.0.1:{_free_port()}")),
    ):
        pass


def test_an_address_where_no_scheduler_answers_is_one_line_not_a_hang() -> None:
    """A port that accepts and says nothing (a typo's Prefect server), one that answers
    with another protocol's bytes, and a closed one: each refused, none waits for ever."""
    import threading
    import time

    from zhflow.tasks.cluster import check_scheduler_answers

    silent, talker = socket.socket(), socket.socket()
    held: list[socket.socket] = []
    for server in (silent, talker):
        server.bind(("127.0.0.1", 0))
        server.listen(8)

    def accept(server: socket.socket, reply: bytes) -> None:
        while True:
            conn, _ = server.accept()
            conn.sendall(reply)
            held.append(conn)

    threading.Thread(target=accept, args=(silent, b""), daemon=True).start()
    threading.Thread(target=accept, args=(talker, b"HTTP/1.1 400 Bad Request\r\n\r\n" * 8),
                     daemon=True).start()  # fmt: skip
    try:
        for server, said in ((silent, "no Dask scheduler answered within 1 s"),
                             (talker, "no Dask scheduler answers there")):  # fmt: skip
            started = time.monotonic()
            with pytest.raises(InputError, match=said):
                check_scheduler_answers(f"tcp://127.0.0.1:{server.getsockname()[1]}", 1.0)
            assert time.monotonic() - started < 10
        # A closed port: refused by the plain connect, before Dask (whose retries on a loaded
        # CI machine once outlasted the probe's wait, which then said "answered within").
        started = time.monotonic()
        with pytest.raises(InputError, match=r"answers there \(nothing accepts a connection"):
            check_scheduler_answers(f"tcp://127.0.0.1:{_free_port()}", 1.0)
        assert time.monotonic() - started < 2
    finally:
        for sock in (silent, talker, *held):
            sock.close()


def test_a_scheduler_without_workers_is_said_not_waited_on(tmp_path: Path) -> None:
    from zhflow.tasks.cluster import check_scheduler_answers

    # A scheduler process of its own, as a user's would be: an in-process LocalCluster
    # shares this process's threads and once failed to start its IO loop within Dask's
    # 10 s on a loaded CI machine.
    with _dask_processes(tmp_path, workers=0) as address:
        started = time.monotonic()
        with pytest.raises(InputError, match="the scheduler answers but no worker joined it"):
            check_scheduler_answers(address, 2.0)
        assert time.monotonic() - started < 2 * 2.0 + 5  # said, not waited on
