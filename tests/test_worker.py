"""The warm worker (flows/worker.py) and its client (flows/client.py): the same output and
exit codes as the cold path, a silent fall-back when no worker answers, a changed bundle
reloaded, two clients at once, Ctrl-C forwarded."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zhflow.flows import client, worker

BIN = Path(sys.executable).parent
TEXTS = ["送餐很快，味道不错", "太难吃了，再也不会点这家"]
#: Summary fields that differ between any two runs (timings, the flow run's id).
VOLATILE = ("seconds", "docs_per_s", "flow_run_url")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ZHFLOW_HOME": str(home), "PREFECT_HOME": str(home / "client"), **extra}
    env.pop("PREFECT_API_URL", None)
    env.pop("ZHFLOW_NO_WORKER", None)
    return env


def _zhflow(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "zhflow"), *args], env=env, capture_output=True, text=True,
                          timeout=300, **kw)  # fmt: skip


def _cold(env: dict[str, str]) -> dict[str, str]:
    return {**env, "ZHFLOW_NO_WORKER": "1"}


def _served(home: Path) -> list[str]:
    log = home / "server" / worker.LOG_FILE
    lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return [line for line in lines if ": exit " in line]


# ----------------------------------------------------------------- the client on its own


@contextlib.contextmanager
def _fake_worker(home: Path, reply: dict[str, Any] | None) -> Iterator[list[dict[str, Any]]]:
    """A socket at the worker's address that records requests and answers ``reply``
    (None: hang up without a word)."""
    path = home / "server" / client.SOCKET_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    seen: list[dict[str, Any]] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with conn:
                    data, fds, _f, _a = socket.recv_fds(conn, 1 << 20, 3)
                    for fd in fds:
                        os.close(fd)
                    seen.append(json.loads(data.split(b"\n", 1)[0]))
                    if reply is not None:
                        conn.sendall(json.dumps(reply).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        listener.close()
        path.unlink()


def test_no_socket_means_the_cold_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path))
    assert client.run_in_worker(["zhflow", "predict", "--model", "b", "x"]) is None


@pytest.mark.parametrize("reply", [None, {"accepted": False, "reason": "stale"}])
def test_a_declining_or_silent_worker_means_the_cold_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any] | None
) -> None:
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name, mode in (("stdin", "r"), ("stdout", "w"), ("stderr", "w")):  # pytest's have none
        monkeypatch.setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # noqa: SIM115
    with _fake_worker(tmp_path, reply) as seen:
        assert client.run_in_worker(["zhflow", "predict", "--model", "b", "x"]) is None
    (request,) = seen
    assert request["argv"] == ["zhflow", "predict", "--model", "b", "x"]
    assert request["cwd"] == str(tmp_path) and request["env"]["ZHFLOW_HOME"] == str(tmp_path)
    assert request["fingerprint"] == client.code_fingerprint()


def test_the_switch_and_other_commands_never_reach_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHFLOW_HOME", str(tmp_path))
    with _fake_worker(tmp_path, {"accepted": False}) as seen:
        for argv in (["zhflow", "info", "b"], ["zhflow", "run"], ["zhflow"]):
            assert client.run_in_worker(argv) is None
        monkeypatch.setenv("ZHFLOW_NO_WORKER", "1")
        assert client.run_in_worker(["zhflow", "predict", "--model", "b", "x"]) is None
    assert seen == []


def test_the_client_path_imports_only_the_standard_library() -> None:
    code = (
        "import sys\n"
        "from zhflow.flows import client\n"
        "client.run_in_worker(['zhflow', 'predict', '--model', 'b', 'x'])\n"
        "print(sorted(m for m in ('click', 'torch', 'prefect', 'polars', 'numpy') "
        "if m in sys.modules))\n"
    )
    env = {**os.environ, "ZHFLOW_HOME": "/nonexistent"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_requests_it_cannot_serve_as_a_fresh_process_are_declined() -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    env = {"PYTHONHASHSEED": "0", "HOME": "/x"}
    w = worker.Worker(listener, "abc", worker._pinned_env(env), default_threads=2)
    good = {"protocol": client.PROTOCOL, "executable": sys.executable, "fingerprint": "abc",
            "env": {**env, "PREFECT_API_URL": "http://x/api"},
            "argv": ["zhflow", "score"]}  # fmt: skip
    assert w.decline_reason(good) is None  # Prefect settings are re-read in the child
    assert "changed" in str(w.decline_reason({**good, "fingerprint": "old"}))
    assert "differs: PYTHONHASHSEED" in str(
        w.decline_reason({**good, "env": {"PYTHONHASHSEED": "1"}})
    )
    assert "Python" in str(w.decline_reason({**good, "executable": "/other/python"}))
    assert "not run" in str(w.decline_reason({**good, "argv": ["zhflow", "run"]}))
    listener.close()


def test_a_finished_command_is_logged_before_its_client_gets_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The client returns as soon as it reads the reply; a log line written after the reply
    # was sometimes missing for whoever read the log next (seen under CI load).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    w = worker.Worker(listener, "abc", {}, default_threads=1)
    ours, theirs = socket.socketpair()
    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    pid = os.posix_spawn(sys.executable, argv, dict(os.environ))
    w.jobs[pid] = worker.Job(pid, ours, "predict", time.monotonic())
    sent: list[tuple[dict[str, Any], str, int]] = []
    monkeypatch.setattr(
        worker, "_send", lambda conn, msg: sent.append((msg, capsys.readouterr().err, w.served))
    )
    deadline = time.monotonic() + 60
    while pid in w.jobs and time.monotonic() < deadline:
        w.reap()
        time.sleep(0.01)
    assert [(msg, served) for msg, _, served in sent] == [({"exit": 3, "signal": None}, 1)]
    assert f"predict pid {pid}: exit 3 in " in sent[0][1]
    theirs.close()
    listener.close()


def test_bundle_argument_and_exit_status() -> None:
    assert worker._bundle_arg(["zhflow", "predict", "--model", "b", "x"]) == "b"
    assert worker._bundle_arg(["zhflow", "score", "--model=w/b", "in.csv"]) == "w/b"
    assert worker._bundle_arg(["zhflow", "predict", "x"]) is None
    assert [worker._exit_status(c) for c in (None, 0, 2, 256 + 3)] == [0, 0, 2, 3]


# ---------------------------------------------------------------------- a real worker


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.helpers import train_tiny_bundle

    root = tmp_path_factory.mktemp("bundles")
    return (train_tiny_bundle(root / "a", epochs=1, seed=0),
            train_tiny_bundle(root / "b", epochs=2, seed=1))  # fmt: skip


@pytest.fixture(scope="module")
def warm_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A worker alone (``predict`` needs no Prefect server) on a temporary ZHFLOW_HOME."""
    home = tmp_path_factory.mktemp("warm_home")
    os.environ.setdefault("PYTHONHASHSEED", "0")  # as the autouse fixture sets it for the tests
    state = worker.start(home / "server")
    assert state["running"] and state["answers"], state
    try:
        yield home
    finally:
        assert worker.stop(home / "server") is not None
        assert not (home / "server" / client.SOCKET_NAME).exists()


@pytest.mark.slow
def test_worker_files_are_private_and_status_reports_it(warm_home: Path) -> None:
    folder = warm_home / "server"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / client.SOCKET_NAME).stat().st_mode & 0o777 == 0o600
    report = worker.status(folder)
    assert report["running"] and report["answers"] and report["stale"] is False


@pytest.mark.slow
def test_predict_warm_equals_cold(warm_home: Path, two_bundles: tuple[Path, Path]) -> None:
    bundle = str(two_bundles[0])
    env = _env(warm_home)
    cases: list[tuple[list[str], str | None]] = [
        (["predict", "--model", bundle, *TEXTS], None),
        (["predict", "--model", bundle, "--json"], "\n".join(TEXTS) + "\n\n"),  # stdin
        (["predict", "--model", str(warm_home), "x"], None),  # not a bundle: exit 3
        (["predict", "--model", bundle, "--batch-size", "0", "x"], None),  # usage: exit 2
    ]
    before = len(_served(warm_home))
    for args, stdin in cases:
        warm = _zhflow(args, env, input=stdin)
        cold = _zhflow(args, _cold(env), input=stdin)
        assert (warm.returncode, warm.stdout, warm.stderr) == (
            cold.returncode, cold.stdout, cold.stderr), args  # fmt: skip
    assert [_zhflow(a, env, input=s).returncode for a, s in cases] == [0, 0, 3, 2]
    assert len(_served(warm_home)) == before + 2 * len(cases)  # the warm runs, not the cold


@pytest.mark.slow
def test_a_changed_bundle_is_reloaded(
    warm_home: Path, two_bundles: tuple[Path, Path], tmp_path: Path
) -> None:
    path = tmp_path / "bundle"
    shutil.copytree(two_bundles[0], path)
    env = _env(warm_home)
    args = ["predict", "--model", str(path), "--json", *TEXTS]
    first = _zhflow(args, env)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(path)
    shutil.copytree(two_bundles[1], path)  # same folder, other weights and digest
    second = _zhflow(args, env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == _zhflow(args, _cold(env)).stdout != first.stdout
    log = (warm_home / "server" / worker.LOG_FILE).read_text(encoding="utf-8")
    assert log.count(f"preloaded {os.path.realpath(path)} ") == 2
    status = worker.ping(warm_home / "server")
    assert status is not None
    assert status["bundles"].count(os.path.realpath(path)) == 1


@pytest.mark.slow
def test_two_clients_at_once(warm_home: Path, two_bundles: tuple[Path, Path]) -> None:
    env = _env(warm_home)
    results: list[subprocess.CompletedProcess[str]] = []
    args = [["predict", "--model", str(b), *TEXTS] for b in two_bundles]
    threads = [threading.Thread(target=lambda a=a: results.append(_zhflow(a, env))) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0]
    assert sorted(r.stdout for r in results) == sorted(_zhflow(a, _cold(env)).stdout for a in args)


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _stdin_of(pid: str) -> str:
    return os.readlink(f"/proc/{pid}/fd/0")


#: The read(2) syscall's number, as /proc/PID/syscall shows it.
READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}.get(os.uname().machine, "0")


def _blocked_reading_stdin(pid: str) -> bool:
    """In read(0, ...) right now: not merely holding the pipe as its stdin (a segmentation
    pool's result pipe, a subprocess of an import's, a blocked write all show "pipe")."""
    fields = Path(f"/proc/{pid}/syscall").read_text().split()
    return len(fields) > 1 and fields[0] == READ_SYSCALL and int(fields[1], 16) == 0


def _wait_until_reading(pipe: str, timeout: float = 120) -> None:
    """Until the command (the cold process, or the worker's child) is blocked reading
    ``pipe`` (a ``pipe:[inode]`` name) on fd 0: past its imports, inside predict's loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                if _stdin_of(proc.name) == pipe and _blocked_reading_stdin(proc.name):
                    return
        time.sleep(0.1)
    raise AssertionError(f"nothing read {pipe} within {timeout} s")


@pytest.mark.slow
def test_ctrl_c_reaches_the_command_and_the_worker_goes_on(
    warm_home: Path, two_bundles: tuple[Path, Path]
) -> None:
    env = _env(warm_home)
    args = [str(BIN / "zhflow"), "predict", "--model", str(two_bundles[0])]

    def interrupted(env: dict[str, str]) -> tuple[int, str]:
        # stdin stays open, so predict waits for lines until Ctrl-C
        # As from a terminal: a background job (CI under nohup, `cmd &`) inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler at all.
        proc = subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=_sigint_default)  # fmt: skip
        assert proc.stdin is not None
        proc.stdin.write(TEXTS[0] + "\n")
        proc.stdin.flush()
        _wait_until_reading(os.readlink(f"/proc/self/fd/{proc.stdin.fileno()}"))
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
        return proc.returncode, err.strip().splitlines()[-1]

    assert interrupted(env) == interrupted(_cold(env)) == (1, "zhflow: error: aborted")
    status = worker.ping(warm_home / "server")
    assert status is not None
    assert status["running"] == 0
    assert _zhflow(["predict", "--model", str(two_bundles[0]), "x"], env).returncode == 0


@pytest.mark.slow
def test_a_dead_worker_means_the_cold_path(tmp_path: Path, two_bundles: tuple[Path, Path]) -> None:
    folder = tmp_path / "server"
    state = worker.start(folder)
    assert state["answers"], state
    os.kill(state["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while worker.status(folder)["running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (folder / client.SOCKET_NAME).exists()  # left behind: nobody listens on it
    env = _env(tmp_path)
    args = ["predict", "--model", str(two_bundles[0]), *TEXTS]
    done = _zhflow(args, env)
    assert done.returncode == 0 and done.stdout == _zhflow(args, _cold(env)).stdout
    assert done.stderr == ""
    worker.stop(folder)


# --------------------------------------------------- with the server: score as a flow run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _summary(stdout: str) -> dict[str, Any]:
    summary = json.loads(stdout.strip().splitlines()[-1])
    return {k: v for k, v in summary.items() if k not in VOLATILE}


@pytest.mark.slow
def test_server_start_runs_the_worker_and_score_is_the_same_flow_run(
    tmp_path: Path, tiny_csv: Path, two_bundles: tuple[Path, Path]
) -> None:
    import httpx

    env = _env(tmp_path / "zhome")
    port = _free_port()
    started = _zhflow(["server", "start", "--port", str(port), "--json"], env)
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads(started.stdout.strip().splitlines()[-1])
    folder = tmp_path / "zhome" / "server"
    try:
        assert state["worker"]["answers"] is True
        status = _zhflow(["server", "status"], env)
        assert f"worker:   PID {state['worker']['pid']}, warm" in status.stdout

        out = [str(tmp_path / f"p{k}.parquet") for k in range(2)]
        base = ["score", "--model", str(two_bundles[0]), str(tiny_csv), "--json", "--output"]
        warm = _zhflow([*base, out[0]], env)
        cold = _zhflow([*base, out[1]], _cold(env))
        assert warm.returncode == cold.returncode == 0, warm.stderr[-2000:] + cold.stderr[-2000:]
        assert _summary(warm.stdout) == {**_summary(cold.stdout), "output": out[0]}
        assert Path(out[0]).read_bytes() != b"" and len(_served(tmp_path / "zhome")) == 1
        run_id = json.loads(warm.stdout.strip().splitlines()[-1])["flow_run_url"].split("/")[-1]
        run = httpx.get(f"{state['api_url']}/flow_runs/{run_id}", timeout=10).json()
        assert run["name"] == "score-tiny" and run["state_type"] == "COMPLETED"

        same = [*base, str(tiny_csv)]  # the output is the input: refused, one line, exit 2
        refused = [_zhflow(same, e) for e in (env, _cold(env))]
        assert [r.returncode for r in refused] == [2, 2]
        assert refused[0].stdout == refused[1].stdout
        assert refused[0].stderr.splitlines()[-1] == refused[1].stderr.splitlines()[-1]
        assert refused[0].stderr.splitlines()[-1].startswith("zhflow: error: ")
        assert len(_served(tmp_path / "zhome")) == 2

        # evaluate too: the same metrics, and below --min-accuracy the same line and exit 4
        ev = ["evaluate", "--model", str(two_bundles[0]), str(tiny_csv), "--json",
              "--min-accuracy", "1.0", "--output-dir"]  # fmt: skip
        dirs = [str(tmp_path / "e0"), str(tmp_path / "e1")]
        evals = [_zhflow([*ev, d], e) for d, e in zip(dirs, (env, _cold(env)), strict=True)]
        assert [r.returncode for r in evals] == [4, 4], evals[0].stderr[-2000:]
        assert evals[0].stderr.splitlines()[-1] == evals[1].stderr.splitlines()[-1]
        metrics = [_summary(r.stdout) for r in evals]
        assert [m.pop("output_dir") for m in metrics] == dirs
        files = [m.pop("files") for m in metrics]  # the same names, in each run's folder
        assert [sorted(f) for f in files] == [sorted(files[1])] * 2
        assert metrics[0] == metrics[1]
        assert len(_served(tmp_path / "zhome")) == 3
    finally:
        stopped = _zhflow(["server", "stop"], env)
    assert stopped.returncode == 0
    assert worker.status(folder)["running"] is False
    assert not (folder / client.SOCKET_NAME).exists()
