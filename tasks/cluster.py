"""Sharded stages on a Dask cluster, through ``prefect_dask.DaskTaskRunner``.

Segmentation and scoring cut their rows into shards; each shard is one Prefect task run on a
Dask worker, visible in the Prefect UI under the stage that started it. Shards travel as
Parquet files on storage every worker can read (the work dir for segmentation, the output's
folder for scoring): a shard task takes paths and returns a row count, never a data frame.
The coordinator joins the shards in order and writes the file a local run writes, byte for
byte (tests/test_cluster.py).

``--dask-address tcp://HOST:PORT`` uses an existing cluster; ``--workers N`` starts a local
one of N single-threaded worker processes for the run. Workers need zhflow installed and,
for their task runs to show in the UI, the Prefect API the flow uses (``PREFECT_API_URL``)
reachable.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from zhflow.tasks import catalog
from zhflow.tasks import score as score_fns
from zhflow.tasks import segment as segment_fns
from zhflow.tasks.errors import InputError, ZhflowError

#: Corpus rows per segmentation shard: ~1 s of jieba each, small enough to balance workers.
SHARD_ROWS = 5_000
#: How long to wait for a scheduler before giving up with one line.
CONNECT_TIMEOUT = "15s"


#: ``tcp://HOST:PORT`` (HOST a name, an IPv4 address or a bracketed IPv6 one): what a
#: ``dask scheduler`` listens on without TLS, the only kind zhflow connects to (it has no
#: flags for TLS certificates).
_SCHEDULER_ADDRESS = re.compile(r"tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


def _host_and_port(address: str) -> tuple[str, int] | None:
    """``tcp://HOST:PORT`` as (HOST without IPv6 brackets, PORT); ``None`` if not that shape."""
    match = _SCHEDULER_ADDRESS.fullmatch(address)
    return None if match is None else (match.group(1).strip("[]"), int(match.group(2)))


def check_scheduler_address(address: str) -> None:
    """Refuse a ``--dask-address`` Dask could not connect to (Dask's own errors on these are
    tracebacks: ``missing port number``, ``invalid literal for int()``...)."""
    host_port = _host_and_port(address)
    if host_port is None or not 1 <= host_port[1] <= 65535:
        raise InputError(f"--dask-address must look like tcp://HOST:PORT (a port 1-65535), "
                         f"got {address!r}")  # fmt: skip


#: How long :func:`check_scheduler_answers` waits for a scheduler to answer, and then for a
#: first worker to join it, in seconds.
PROBE_SECONDS = 20.0


def check_scheduler_answers(address: str, seconds: float = PROBE_SECONDS) -> None:
    """Refuse, in one line and within about ``2 * seconds``, an address where no Dask
    scheduler answers, or one no worker joins. Dask's own connect waits for ever on a port
    that accepts a connection but speaks something else (a Prefect server's, a typo), and
    takes other services' bytes for a frame length (``Unable to allocate 3.07 EiB``)."""
    import threading

    if (refused := _connect_error(address, seconds)) is not None:
        why = refused.strerror or refused
        raise InputError(f"--dask-address {address}: no Dask scheduler answers there "
                         f"(nothing accepts a connection: {why})")  # fmt: skip
    outcome: list[BaseException | int] = []

    def identify() -> None:
        from distributed import Client

        try:
            with Client(address, timeout=f"{seconds}s") as client:
                client.wait_for_workers(1, timeout=seconds)
                outcome.append(len(client.scheduler_info()["workers"]))
        except BaseException as exc:  # reported below, in this thread's caller
            outcome.append(exc)

    # A daemon thread, so a connect that never returns cannot hold the process at exit.
    probe = threading.Thread(target=identify, name="zhflow-dask-probe", daemon=True)
    probe.start()
    probe.join(2 * seconds + 5)
    if not outcome:
        raise InputError(f"--dask-address {address}: no Dask scheduler answered within "
                         f"{seconds:.0f} s (is it a dask scheduler's port?)")  # fmt: skip
    found = outcome[0]
    if isinstance(found, TimeoutError) and "worker" in str(found).lower():
        raise InputError(
            f"--dask-address {address}: the scheduler answers but no worker joined it within "
            f"{seconds:.0f} s (start `dask worker {address}`)"
        )
    if isinstance(found, BaseException):
        raise InputError(f"--dask-address {address}: no Dask scheduler answers there "
                         f"({type(found).__name__}: {str(found)[:200]})")  # fmt: skip


def _connect_error(address: str, seconds: float) -> OSError | None:
    """The operating system's answer to a plain TCP connect to ``address``; ``None`` when
    something accepts it. A closed port is then refused at once and always in the same
    words, instead of after Dask's retries, whose length depends on the machine's load."""
    import socket

    host_port = _host_and_port(address)
    if host_port is None:  # check_scheduler_address refuses it; nothing to probe here
        return None
    try:
        socket.create_connection(host_port, timeout=seconds).close()
    except OSError as exc:
        return exc
    return None


@dataclass(frozen=True)
class ClusterSpec:
    """Where sharded stages run: an existing scheduler, or a local cluster started per stage."""

    address: str | None = None  # tcp://HOST:PORT of a running `dask scheduler`
    workers: int | None = None  # start a LocalCluster of this many worker processes

    def __post_init__(self) -> None:
        if self.address and self.workers:
            raise InputError("give --dask-address or --dask-workers, not both")
        if self.address is not None:
            check_scheduler_address(self.address)
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise InputError(f"--dask-workers must be a positive integer, got {self.workers!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, address: str | None, workers: int | None) -> ClusterSpec | None:
        """None when neither is given: the stages run in this machine's process pool."""
        if address is not None and not address.strip():  # not silently this machine
            raise InputError("--dask-address is empty: give tcp://HOST:PORT, or leave it out")
        if not address and not workers:
            return None
        return cls(address=address or None, workers=workers or None)


def _temporary_server_url() -> str | None:
    """The URL of the temporary Prefect server this process started, if it runs on one.

    Shard task runs carry the flow's settings to the workers, but not a temporary server's
    address (it is not a setting), so each worker would start a server of its own (~15 s)
    and report its runs there, out of the UI's sight. With this URL set as
    ``PREFECT_API_URL`` while the runner lives, they report to the flow's server instead
    (reachable from workers on this machine; remote workers need a real server).
    """
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None  # a real server: the workers already get its URL with the settings
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    return url if url.startswith("http://127.0.0.1") else None


@contextlib.contextmanager
def workers_report_here() -> Iterator[None]:
    url = _temporary_server_url()
    if url is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        yield


@contextlib.contextmanager
def open_task_runner(spec: ClusterSpec) -> Iterator[Any]:
    """A started ``DaskTaskRunner`` connected to the cluster (one line if it cannot be)."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise InputError(
            "--dask-address/--workers need the dask extra: pip install 'zhflow[dask]'"
        ) from None
    if spec.address:
        runner = DaskTaskRunner(address=spec.address, client_kwargs={"timeout": CONNECT_TIMEOUT})
    else:
        runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": spec.workers,
                "threads_per_worker": 1,  # jieba and the scorer are CPU-bound Python: processes
                "processes": True,
                "host": "127.0.0.1",  # a per-run cluster serves this machine only
                "dashboard_address": ":0",  # any free port: 8787 may be taken
            }
        )
    with workers_report_here(), runner:
        try:
            runner.client  # noqa: B018  (connects now, so a bad address fails here)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {spec.address}: {exc}") from None
        yield runner


def run_in_order(
    runner: Any, shard_task: Any, calls: Iterable[dict[str, Any]], window: int
) -> Iterator[Any]:
    """Submit ``shard_task(**params)`` for each of ``calls``, at most ``window`` in flight;
    yield the results in submission order (a failed shard raises its error here)."""
    pending: deque[Any] = deque()
    for params in calls:
        pending.append(runner.submit(shard_task, parameters=params))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a shard once for a lost worker or flaky storage, never for bad input."""
    try:
        state.result()
    except ZhflowError:
        return False
    except Exception:
        return True
    return False


_SHARD_OPTIONS: dict[str, Any] = dict(
    cache_policy=NO_CACHE,  # intermediates: the stage's own artifact is what is cached
    persist_result=False,
    retries=1,
    retry_condition_fn=_retry_unless_user_error,
    tags=["zhflow", "shard"],
)


@task(name="segment-shard", task_run_name="segment-shard-{index}", **_SHARD_OPTIONS)
def segment_shard(
    index: int, corpus_path: str, start: int, stop: int, tokenizer: dict, out_path: str
) -> int:
    spec = segment_fns.TokenizerSpec.from_dict(tokenizer)
    return segment_fns.segment_parquet_rows(corpus_path, start, stop, spec, out_path)


@task(name="score-shard", task_run_name="score-shard-{index}", **_SHARD_OPTIONS)
def score_shard(index: int, bundle: str, in_path: str, out_path: str, batch_size: int) -> int:
    return score_fns.score_parquet_shard(bundle, in_path, out_path, batch_size)


def segment_on_cluster(
    corpus_path: Path,
    rows: int,
    tokenizer: dict,
    spec: ClusterSpec,
    scratch: Path,
    progress: Callable[[int, int], None] | None = None,
    shard_rows: int | None = None,
) -> list[Path]:
    """Segment the corpus Parquet's rows on the cluster; return the shard files, in order.

    ``scratch`` must be on storage the workers share; the caller removes it when done.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    shard_rows = shard_rows or SHARD_ROWS
    bounds = [(a, min(a + shard_rows, rows)) for a in range(0, rows, shard_rows)]
    parts = [scratch / f"tokens-{k:05d}.parquet" for k in range(len(bounds))]
    calls = [
        dict(
            index=k,
            corpus_path=str(corpus_path),
            start=a,
            stop=b,
            tokenizer=tokenizer,
            out_path=str(parts[k]),
        )
        for k, (a, b) in enumerate(bounds)
    ]
    done = 0
    with open_task_runner(spec) as runner:
        for n in run_in_order(runner, segment_shard, calls, window=len(calls) or 1):
            done += n
            if progress is not None:
                progress(done, rows)
    return parts


def score_on_cluster(
    bundle: Any,
    source: str | Path | list[str],
    output: str | Path,
    spec: ClusterSpec,
    batch_size: int = 512,
    chunk_rows: int = 50_000,
    window: int = 4,
    **read_options: Any,
) -> dict[str, Any]:
    """``zhflow.tasks.score.score_file``, each chunk scored on the cluster, ``window`` at a time.

    Chunks wait as files beside the output, so at most ``window`` are on disk at once.
    """
    with open_task_runner(spec) as runner:

        def run_shards(pairs: Iterable[tuple[str, str]]) -> Iterator[Any]:
            path = str(Path(bundle.path).resolve())
            calls = (
                dict(index=k, bundle=path, in_path=a, out_path=b, batch_size=batch_size)
                for k, (a, b) in enumerate(pairs)
            )
            return run_in_order(runner, score_shard, calls, window)

        summary = score_fns.score_file_sharded(
            bundle, source, output, run_shards, chunk_rows=chunk_rows, **read_options
        )
    summary["cluster"] = spec.address or f"local:{spec.workers}"
    return summary


def scratch_dir(root: Path, stage: str) -> Path:
    """A fresh folder for one stage run's shards under ``root`` (shared storage)."""
    return root / catalog.SHARDS_DIR / f"{stage}-{uuid.uuid4().hex[:12]}"
