"""Crash safety, restart-proof caching, concurrent runs and server exposure (issue 4).

* Quick: a cut, bit-flipped or deleted artifact is rebuilt (its task ``Completed``) with the
  same content while unaffected stages stay ``Cached``; a corrupt Prefect cache record only
  makes Prefect run the task body, which reuses the intact artifact; a dead builder's temp
  folder is cleared; finished files get normal permissions; every documented Prefect server
  binds 127.0.0.1.
* Slow (CI): ``zhflow run`` as a real process is SIGKILLed (with its segmentation workers) in
  the middle of segmentation and in the middle of training, then rerun; two runs share one
  work dir at once. Each ends with the artifacts of an uninterrupted run in another work dir:
  identical tokens, tensors, model weights (sha256) and metrics. The training rerun resumes
  from the last finished epoch.

Subprocesses talk to the session's Prefect test server (``prefect_server`` in conftest.py)
instead of starting a temporary server each (~20 s apiece).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import train_tiny_bundle
from zhflow.tasks.storage import atomic_path, building_artifact

ROOT = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _states(summary: dict) -> dict[str, str]:
    return {t["name"]: t["state"] for t in summary["tasks"]}


def _temp_entries(workdir: Path) -> list[str]:
    """Temporary files/folders (``.<name>.<random>.tmp``) anywhere under the work dir."""
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob(".*.tmp"))


# ------------------------------------------------------------------------------------------
# exposure: every documented or scripted Prefect server binds 127.0.0.1

# A command that starts a server: at the start of a (shell, YAML, Dockerfile) line after an
# optional prompt, key, env assignments or wrapper; or with flags after it (`prefect server
# start --port 4200` in prose); or as an argv list. A bare mention in prose ("needs `prefect
# server start`") is a reference, not a command (Prefect's own default host is 127.0.0.1).
_SERVER_START = re.compile(
    r"^\s*(?:[-$>#]\s*)?(?:[\w.-]+:\s*)?(?:RUN\s+|CMD\s+)?(?:\w+=\S*\s+)*"
    r"(?:nohup\s+|exec\s+|uv\s+run\s+|\S*/)?prefect\s+server\s+start\b"
    r"|prefect\s+server\s+start\s+-"
    r"|[\"']server[\"']\s*,\s*[\"']start[\"']"
)
# `zhflow server start` has no --host: it always binds 127.0.0.1 (flows/server.py).
_ZHFLOW_SERVER = re.compile(
    r"zhflow[\w(\[, =]{0,30}[\"']server[\"']\s*,\s*[\"']start[\"']"
    r"|\bzhflow\s+server\s+start\b",
    re.I,
)
_LOCAL_HOST = re.compile(
    r"--host[ =]\s*[\"']?(127\.0\.0\.1|localhost)\b|[\"']--host[\"']\s*,\s*[\"']127\.0\.0\.1[\"']"
)
_EXPOSED = re.compile(
    r"0\.0\.0\.0|PREFECT_SERVER_API_HOST\s*=\s*[\"']?(?!127\.0\.0\.1|localhost)\S"
)
_SCANNED = (
    "*.md",
    "*.rst",
    "*.txt",
    "*.sh",
    "*.bash",
    "*.yaml",
    "*.yml",
    "*.toml",
    "*.py",
    "*.cfg",
    "*.ini",
    "Makefile",
    "Dockerfile",
    "Procfile",
    "justfile",
    "*.service",
)
# Every file in these folders is scanned, whatever its name (e.g. `.ci/run`).
_SCRIPT_DIRS = {".ci", "ci", "scripts", "bin", "deploy", ".github", "docker"}
_SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    "data",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "zhflow.egg-info",
    "build",
    "dist",
    ".hypothesis",
    ".ci-prefect-home",
}


def _scanned_files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]  # prune: never walk .venv
        for name in files:
            path = Path(folder) / name
            in_script_dir = bool(set(path.relative_to(root).parts[:-1]) & _SCRIPT_DIRS)
            if (in_script_dir or any(fnmatch.fnmatch(name, pat) for pat in _SCANNED)) and (
                path.resolve() != Path(__file__).resolve()
            ):
                yield path


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with shell continuations (``\\`` at the end) joined; 1-based first line numbers."""
    buffer, start = "", 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        yield start, buffer + line
        buffer = ""
    if buffer:
        yield start, buffer


def exposure_problems(files: dict[str, str]) -> list[str]:
    """Lines that start a Prefect server without binding 127.0.0.1 (unless the file also shows
    PREFECT_SERVER_API_AUTH_STRING), and files that expose a server without the auth string."""
    problems = []
    for name, text in files.items():
        has_auth = "PREFECT_SERVER_API_AUTH_STRING" in text
        for number, line in _logical_lines(text):
            exposed = bool(_EXPOSED.search(line))
            if (
                _SERVER_START.search(line)
                and not _LOCAL_HOST.search(line)
                and not _ZHFLOW_SERVER.search(line)
            ):
                if not (exposed and has_auth):
                    problems.append(
                        f"{name}:{number}: server not bound to 127.0.0.1: {line.strip()}"
                    )
            elif exposed and ("prefect" in line.lower() or "PREFECT" in line) and not has_auth:
                problems.append(f"{name}:{number}: exposed without PREFECT_SERVER_API_AUTH_STRING")
    return problems


def test_exposure_checker_catches_violations() -> None:
    assert exposure_problems({"ok.md": "prefect server start --host 127.0.0.1 --port 4200"}) == []
    assert exposure_problems({"ok.sh": "prefect server start \\\n  --host 127.0.0.1"}) == []
    assert (
        exposure_problems({"ok.py": 'run(["prefect", "server", "start", "--host", "127.0.0.1"])'})
        == []
    )
    assert exposure_problems({"bad.md": "prefect server start"})
    assert exposure_problems({"bad.md": "$ PREFECT_HOME=/x nohup prefect server start &"})
    assert exposure_problems({"bad.yaml": "  command: prefect server start --port 4200"})
    assert exposure_problems({"bad.md": "then run `prefect server start --port 4200`."})
    assert exposure_problems({"bare.md": "scheduling needs `prefect server start`."}) == []
    assert exposure_problems({"bad.md": "prefect server start --port 4200"})
    assert exposure_problems({"bad.py": 'run(["prefect", "server", "start"])'})
    assert exposure_problems({"bad.md": "prefect server start --host 0.0.0.0"})
    assert exposure_problems({"bad.env": "PREFECT_SERVER_API_HOST=0.0.0.0 prefect server start"})
    shown = "PREFECT_SERVER_API_AUTH_STRING=admin:pass prefect server start --host 0.0.0.0"
    assert exposure_problems({"exposed_with_auth.md": shown}) == []
    assert exposure_problems({"zhflow.py": 'run([zhflow, "server", "start", "--port", "1"])'}) == []


def test_every_prefect_server_in_docs_and_scripts_binds_localhost() -> None:
    files = {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8", errors="replace")
        for p in _scanned_files(ROOT)
    }
    assert any(name.endswith(".md") for name in files)  # the scan does see the docs
    assert exposure_problems(files) == []


# ------------------------------------------------------------------------------------------
# storage details


def test_finished_files_and_folders_get_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "f.json") as tmp:
        tmp.write_text("{}")
    with building_artifact(tmp_path, "stage", "k" * 64) as folder:
        (folder / "x.txt").write_text("x")
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "stage" / ("k" * 64)).stat().st_mode) == 0o777 & ~umask


def test_weights_written_by_safetensors_get_normal_permissions(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    os.umask(umask)
    with atomic_path(tmp_path / "weights.safetensors") as tmp:
        save_file({"w": torch.zeros(2)}, str(tmp))  # creates its own file, mode 0600
    assert stat.S_IMODE((tmp_path / "weights.safetensors").stat().st_mode) == 0o666 & ~umask
    with building_artifact(tmp_path, "bundle", "b" * 64) as folder:  # written in place
        save_file({"w": torch.zeros(2)}, str(folder / "weights.safetensors"))
        (folder / "sub").mkdir(mode=0o700)
        (folder / "sub" / "x.txt").write_text("x")
        os.chmod(folder / "sub" / "x.txt", 0o600)
    built = tmp_path / "bundle" / ("b" * 64)
    for path in (built / "weights.safetensors", built / "sub" / "x.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    assert stat.S_IMODE((built / "sub").stat().st_mode) == 0o777 & ~umask


def test_failed_atomic_write_leaves_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half way")
    assert target.read_text() == "old" and _temp_entries(tmp_path) == []
    with pytest.raises(RuntimeError), building_artifact(tmp_path, "stage", "a" * 64) as folder:
        (folder / "part").write_text("half")
        raise RuntimeError("killed half way")
    assert not (tmp_path / "stage" / ("a" * 64)).exists() and _temp_entries(tmp_path) == []


# ------------------------------------------------------------------------------------------
# cache integrity (in process, one Prefect test server)

SMALL = dict(
    tokenizer="char", epochs=1, hidden=16, embedding_dim=16, batch_size=16, seed=3, processes=1
)


@pytest.mark.prefect
def test_damaged_outputs_are_detected_and_rebuilt(prefect_server, tiny_csv, tmp_path) -> None:
    from zhflow.flows.pipeline import train_pipeline

    args = dict(corpus=str(tiny_csv), workdir=str(tmp_path / "w"), until="encode", **SMALL)
    first = train_pipeline(**args)
    assert set(_states(first).values()) == {"Completed"}
    art = {k: Path(v) for k, v in first["artifacts"].items()}
    tokens_file = art["tokens"] / "tokens.parquet"
    tokens_sha = _sha(tokens_file)
    encoded_sha = _sha(art["encoded"] / "train.safetensors")

    encoded_mtime = (art["encoded"] / "train.safetensors").stat().st_mtime_ns
    # A cut Parquet file; a deleted output folder with a dead builder's temp folder beside it;
    # a corrupt Prefect cache record (its artifact intact).
    with open(tokens_file, "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) // 2)
    shutil.rmtree(art["ngrams"])
    stale = art["ngrams"].parent / f".{art['ngrams'].name[:12]}.deadbeef.tmp"
    stale.mkdir()
    (stale / "ngrams.parquet").write_bytes(b"half written")
    record = tmp_path / "w" / "cache" / art["encoded"].name
    assert record.is_file()
    record.write_text('{"metadata": {"storage_key": ')

    again = train_pipeline(**args)
    assert _states(again) == {
        "corpus": "Cached",
        "tokens": "Completed",  # rebuilt, byte-identical: downstream keys stay valid
        "ngrams": "Completed",
        "vocab": "Cached",
        "encoded": "Completed",  # Prefect ran the task body: it reused the intact artifact
    }
    assert again["artifacts"] == first["artifacts"] and _sha(tokens_file) == tokens_sha
    assert (art["ngrams"] / "ngrams.parquet").exists() and not stale.exists()
    assert (art["encoded"] / "train.safetensors").stat().st_mtime_ns == encoded_mtime
    assert _sha(art["encoded"] / "train.safetensors") == encoded_sha
    assert json.loads(record.read_text())  # the record is rewritten whole

    # Same size, one byte flipped: caught by the content hash, not by the size.
    vocab_file = art["vocab"] / "vocab.parquet"
    data = bytearray(vocab_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    vocab_file.write_bytes(bytes(data))
    again = train_pipeline(**args)
    assert _states(again) == {
        "corpus": "Cached",
        "tokens": "Cached",
        "ngrams": "Cached",
        "vocab": "Completed",
        "encoded": "Cached",
    }
    assert again["artifacts"] == first["artifacts"]
    assert _temp_entries(tmp_path / "w") == []


# ------------------------------------------------------------------------------------------
# real processes: kill -9 mid-segmentation and mid-training, concurrent runs (slow)

POS = ["好", "喜欢", "满意", "推荐", "漂亮", "舒服", "快", "便宜", "值得", "开心"]
NEG = ["差", "失望", "垃圾", "慢", "贵", "难用", "破", "退货", "后悔", "生气"]
FILL = [
    "这个",
    "东西",
    "真的",
    "非常",
    "质量",
    "服务",
    "我们",
    "觉得",
    "还是",
    "有点",
    "物流",
    "包装",
    "商家",
    "价格",
]
# --processes 2 and >= 2000 rows: segmentation starts worker processes (a window of ~1 s to
# kill in); 3 epochs of a 16-unit LSTM: each epoch ~1-2 s, checkpointed.
RUN_ARGS = [
    "--tokenizer",
    "char",
    "--epochs",
    "3",
    "--hidden",
    "16",
    "--embedding-dim",
    "16",
    "--max-len",
    "64",
    "--processes",
    "2",
    "--seed",
    "7",
    "--json",
]


def write_corpus(path: Path, rows: int = 2400) -> Path:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            words = [rng.choice(FILL) for _ in range(rng.randint(5, 30))]
            for _ in range(rng.randint(1, 4)):
                words.insert(rng.randrange(len(words) + 1), rng.choice(POS if i % 2 else NEG))
            row = {"text": "".join(words), "label": "pos" if i % 2 else "neg"}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _zhflow() -> list[str]:
    script = Path(sys.executable).with_name("zhflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zhflow.flows.cli"]


@pytest.fixture(scope="module")
def cli_env(prefect_server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for zhflow subprocesses: the session's test server, a private PREFECT_HOME."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the prefect_server fixture sets PREFECT_API_URL"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_API_URL=url,
        PREFECT_HOME=str(tmp_path_factory.mktemp("prefect_home_cli")),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        OMP_NUM_THREADS="1",  # both the reference and the killed runs: same float math
        PYTHONUNBUFFERED="1",
    )
    return env


class Proc:
    """A ``zhflow`` process in its own session, so SIGKILL reaches its worker processes."""

    def __init__(self, args: list[str], env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / "stdout.txt", logs / "stderr.txt"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                _zhflow() + args, env=env, stdout=out, stderr=err, cwd=logs, start_new_session=True
            )

    def wait(self, timeout: float = 240) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # the whole group: workers too
        self.popen.wait(timeout=30)

    def kill_when(self, condition: Callable[[], bool], timeout: float = 180) -> bool:
        """SIGKILL as soon as ``condition()`` holds; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                self.kill()
                return True
            if self.popen.poll() is not None:
                return False
            time.sleep(0.01)
        self.kill()
        raise AssertionError("timed out waiting for the kill point")

    def summary(self) -> dict[str, Any]:
        assert self.popen.returncode == 0, self.err.read_text(errors="replace")[-3000:]
        return json.loads(self.out.read_text().strip().splitlines()[-1])

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")


def fingerprint(summary: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on crashes: the content of data artifacts, weights, metrics.

    (Not the artifact keys: they hash the stage code too, so they differ between checkouts.)
    """
    art = {k: Path(v) for k, v in summary["artifacts"].items()}
    return {
        "tokens": _sha(art["tokens"] / "tokens.parquet"),
        "ngrams": _sha(art["ngrams"] / "ngrams.parquet"),
        "vocab": _sha(art["vocab"] / "vocab.parquet"),
        "train": _sha(art["encoded"] / "train.safetensors"),
        "model_weights": _sha(art["model"] / "weights.safetensors"),
        "bundle_weights": _sha(Path(summary["model"]) / "weights.safetensors"),
        "metrics": json.loads((art["metrics"] / "metrics.json").read_text()),
    }


def _history(summary: dict[str, Any]) -> dict[str, Any]:
    return json.loads((Path(summary["artifacts"]["model"]) / "history.json").read_text())


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("kill") / "reviews.jsonl")


@pytest.fixture(scope="module")
def reference(cli_env, corpus_file, tmp_path_factory) -> dict[str, Any]:
    """One uninterrupted run in its own work dir."""
    base = tmp_path_factory.mktemp("reference")
    proc = Proc(
        ["run", str(corpus_file), "--workdir", str(base / "w"), *RUN_ARGS], cli_env, base / "logs"
    )
    proc.wait()
    summary = proc.summary()
    assert set(_states(summary).values()) == {"Completed"}
    assert _history(summary)["resumed_from_epoch"] == 0
    return summary


def _run(corpus: Path, workdir: Path, env: dict[str, str], logs: Path) -> Proc:
    return Proc(["run", str(corpus), "--workdir", str(workdir), *RUN_ARGS], env, logs)


@pytest.mark.slow
def test_kill_during_segmentation_then_rerun(cli_env, corpus_file, reference, tmp_path) -> None:
    workdir = tmp_path / "w"

    def segmenting() -> bool:
        return any((workdir / "tokens").glob(".*.tmp"))

    proc = _run(corpus_file, workdir, cli_env, tmp_path / "killed")
    assert proc.kill_when(segmenting), "the run ended before segmentation was seen"
    # Killed mid-build: the corpus artifact is whole, the tokens exist only as a temp folder.
    assert len(list((workdir / "corpus").glob("[0-9a-f]*/_manifest.json"))) == 1
    assert not list((workdir / "tokens").glob("[0-9a-f]*"))
    assert list((workdir / "tokens").glob(".*.tmp"))

    rerun = _run(corpus_file, workdir, cli_env, tmp_path / "rerun")
    assert rerun.wait() == 0, rerun.stderr()[-3000:]
    summary = rerun.summary()
    assert _states(summary)["corpus"] == "Cached" and _states(summary)["tokens"] == "Completed"
    assert fingerprint(summary) == fingerprint(reference)
    assert _temp_entries(workdir) == []  # the dead run's temp folder was cleared


@pytest.mark.slow
def test_kill_during_training_then_resume(cli_env, corpus_file, reference, tmp_path) -> None:
    workdir = tmp_path / "w"

    def checkpointed() -> bool:
        return any((workdir / "checkpoints").glob("*/checkpoint.pt"))

    proc = _run(corpus_file, workdir, cli_env, tmp_path / "killed")
    assert proc.kill_when(checkpointed), "the run ended before a checkpoint was seen"
    assert not list((workdir / "model").glob("[0-9a-f]*")), "killed after training finished"
    (ckpt_path,) = (workdir / "checkpoints").glob("*/checkpoint.pt")
    epoch = torch.load(ckpt_path, weights_only=True, map_location="cpu")["epoch"]
    assert 1 <= epoch <= 3

    rerun = _run(corpus_file, workdir, cli_env, tmp_path / "rerun")
    assert rerun.wait() == 0, rerun.stderr()[-3000:]
    summary = rerun.summary()
    states = _states(summary)
    assert states["encoded"] == "Cached" and states["model"] == "Completed"
    assert _history(summary)["resumed_from_epoch"] == epoch
    assert f"resuming from {ckpt_path}" in rerun.stderr()
    assert fingerprint(summary) == fingerprint(reference)  # identical weights and metrics
    # ... and one bundle name: history.json's seconds and resume epoch are not in the digest
    assert Path(summary["model"]).name == Path(reference["model"]).name
    assert not (workdir / "checkpoints" / ckpt_path.parent.name).exists()
    assert _temp_entries(workdir) == []


@pytest.mark.slow
def test_two_runs_on_one_workdir_at_once(cli_env, corpus_file, reference, tmp_path) -> None:
    workdir = tmp_path / "w"
    procs = [_run(corpus_file, workdir, cli_env, tmp_path / f"p{i}") for i in (1, 2)]
    for proc in procs:
        assert proc.wait() == 0, proc.stderr()[-3000:]
    first, second = (proc.summary() for proc in procs)
    assert first["artifacts"] == second["artifacts"] and first["model"] == second["model"]
    assert fingerprint(first) == fingerprint(reference)
    assert len(list((workdir / "model").glob("[0-9a-f]*"))) == 1  # trained once
    assert _temp_entries(workdir) == []


@pytest.mark.slow
def test_real_process_errors_are_one_line_without_traceback(cli_env, tmp_path) -> None:
    """The CLI as users run it: stderr ends with one ``zhflow: error:`` line, no traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text,label\n好,pos\n".encode() + b"\xe5\x9d\x8f\xff,neg\n")
    bundle = train_tiny_bundle(tmp_path / "bundle", epochs=1)
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"w": Payload()}, bundle / "weights.safetensors")
    cases = [
        (
            ["run", str(bad), "--workdir", str(tmp_path / "w"), "--tokenizer", "char"],
            2,
            "bad.csv: not valid utf-8 at line 3, byte offset 22",
        ),
        (
            ["score", "--model", str(bundle), str(bad), "--output", str(tmp_path / "o.parquet")],
            3,
            "weights.safetensors altered or truncated",
        ),
    ]
    for args, code, fragment in cases:
        proc = Proc(args, cli_env, tmp_path / f"logs{code}")
        assert proc.wait() == code, proc.stderr()[-3000:]
        err = proc.stderr()
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert lines[-1].startswith("zhflow: error:") and fragment in lines[-1], lines[-1]
        assert sum(ln.startswith("zhflow: error:") for ln in lines) == 1
        assert "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "o.parquet").exists()
