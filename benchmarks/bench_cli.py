"""Benchmark: wall seconds of everyday commands: warm worker, persistent server, temporary one.

    python benchmarks/bench_cli.py [--bundle PATH] [--repeats 3] [--rows 100]

Measures, side by side in one run, the wall time of whole ``zhflow`` processes as a user
runs them (Python start-up, imports, the Prefect flow run, exit):

- ``zhflow score --model B rows.csv --output p.parquet`` on ``--rows`` review rows;
- ``zhflow predict --model B TEXT`` on one text;

in three set-ups, in one temporary ``ZHFLOW_HOME``:

- **warm**: ``zhflow server start`` on a free loopback port (the Prefect server and the warm
  worker, flows/worker.py): the command is a thin client and runs in a fork of the worker;
- **persistent, cold**: the same server with ``ZHFLOW_NO_WORKER=1``: the command imports
  torch, Prefect and polars itself but uses the persistent server;
- **temporary**: the server stopped, so each command falls back to Prefect's temporary server
  (``predict`` never uses a server: its last two columns differ only by noise).

Each figure is the median of ``--repeats`` runs after one warm-up run (which creates
jieba's dictionary cache and registers the flow), as wall seconds and, in brackets, CPU
seconds of the command's process tree (user + system). For the warm column that is the
client's CPU only: the work is done by the worker's child, which the wall time includes. On
a loaded machine the wall time grows with the load. Also printed: the start-up time of the
server + worker and the import time of torch, prefect and polars (``python -c "import X"``
minus a bare ``python -c pass``), which bound how fast a cold command can be.

Without ``--bundle`` a small bundle is trained first with the pure functions: 2,000 rows
of ../shared/corpora/waimai_10k.csv, jieba tokens, the default LSTM, 1 epoch (what a
command costs depends on the tokenizer and the network's size, not on its accuracy).

Targets (issue 14): score <= 3 s and predict <= 2 s with the persistent server (the warm
column). The machine's load average is recorded before and after: other work on the cores
skews every figure. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)

CORPUS = ROOT / ".." / "shared" / "corpora" / "waimai_10k.csv"
BIN = Path(sys.executable).parent
TARGETS = {"score_s": 3.0, "predict_s": 2.0}
TEXT = "送餐很快，味道不错，下次还点"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_bundle(out: Path, rows: int = 2000) -> Path:
    import polars as pl
    import torch

    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks.bundle import seal_bundle, write_bundle
    from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens
    from zhflow.tasks.segment import TokenizerSpec, segment_texts
    from zhflow.tasks.tables import build_vocab, vocab_to_index
    from zhflow.tasks.train import TrainConfig, train_model

    df = pl.read_csv(CORPUS, infer_schema_length=0).drop_nulls(["review", "label"])
    df = df.sample(n=min(rows, df.height), seed=0)
    texts, labels = df["review"].to_list(), df["label"].to_list()
    spec = TokenizerSpec(engine="jieba")
    tokens = segment_texts(texts, spec)
    vocab = build_vocab(pl.DataFrame({"tokens": tokens}), min_freq=1, max_vocab=50_000)
    ids, lengths = encode_tokens(tokens, vocab_to_index(vocab), 200)
    label_map = build_label_map(labels)
    data = {"ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(encode_labels(labels, label_map))}  # fmt: skip
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(label_map))
    result = train_model(cfg, TrainConfig(epochs=1), data, data, log=None)
    write_bundle(out, result.state_dict, cfg, spec, vocab, label_map, 200,
                 metrics={"note": "bench_cli quick bundle, 1 epoch"})  # fmt: skip
    seal_bundle(out)
    return out


def write_rows(path: Path, rows: int) -> Path:
    import polars as pl

    texts = pl.read_csv(CORPUS, columns=["review"], infer_schema_length=0)["review"]
    pl.DataFrame({"text": texts.drop_nulls().head(rows)}).write_csv(path)
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command. CPU time is what the wall time would be
    on idle cores for a single-threaded command, so it is less skewed by other load."""
    cpu0, t0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stderr[-3000:]}")
    return seconds, cpu


def import_seconds(env: dict[str, str], repeats: int) -> dict[str, float]:
    def best(code: str) -> float:
        return min(timed([sys.executable, "-c", code], env)[0] for _ in range(repeats))

    bare = best("pass")
    return {m: round(best(f"import {m}") - bare, 3) for m in ("torch", "prefect", "polars")}


def worker_commands(tmp: Path) -> int:
    """Commands the warm worker has run so far (one log line each)."""
    log = tmp / "zhome" / "server" / "worker.log"
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    return sum(": exit " in line for line in text.splitlines())


def measure(commands: dict[str, list[str]], env: dict[str, str], repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, args in commands.items():
        timed(args, env)  # warm-up
        runs = [timed(args, env) for _ in range(repeats)]
        out[name] = {
            "median_s": round(statistics.median(w for w, _ in runs), 3),
            "median_cpu_s": round(statistics.median(c for _, c in runs), 3),
            "runs_s": [round(w, 3) for w, _ in runs],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="A model bundle (default: train a small one).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100)
    args = parser.parse_args()

    load_before = loadavg()
    tmp = Path(tempfile.mkdtemp(prefix="zhflow-bench-cli-"))
    env = {**os.environ, "ZHFLOW_HOME": str(tmp / "zhome"), "PREFECT_HOME": str(tmp / "client"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_PROFILE", None)
    bundle = args.bundle or train_bundle(tmp / "bundle")
    rows = write_rows(tmp / "rows.csv", args.rows)
    zhflow = str(BIN / "zhflow")
    commands = {
        "score": [zhflow, "score", "--model", str(bundle), str(rows),
                  "--output", str(tmp / "p.parquet")],
        "predict": [zhflow, "predict", "--model", str(bundle), TEXT],
    }  # fmt: skip
    imports = import_seconds(env, args.repeats)

    port = free_port()
    start_s, _ = timed([zhflow, "server", "start", "--port", str(port)], env)
    cold_env = {**env, "ZHFLOW_NO_WORKER": "1"}
    try:
        served_before = worker_commands(tmp)
        warm = measure(commands, env, args.repeats)
        if worker_commands(tmp) - served_before != len(commands) * (args.repeats + 1):
            raise SystemExit(f"the warm runs did not all run in the worker: {tmp}/zhome/server")
        persistent = measure(commands, cold_env, args.repeats)
    finally:
        timed([zhflow, "server", "stop"], env)
    temporary = measure(commands, env, args.repeats)

    columns = {"warm worker": warm, "persistent, cold": persistent, "temporary": temporary}
    print(f"{'wall (CPU) seconds':<26}" + "".join(f"{c:>19}" for c in columns) + f"{'target':>8}")
    for name in commands:
        label = f"zhflow {name}" + (f" ({args.rows} rows)" if name == "score" else " (1 text)")
        cells = [f"{r[name]['median_s']:.2f} ({r[name]['median_cpu_s']:.2f})"
                 for r in columns.values()]  # fmt: skip
        print(f"{label:<26}" + "".join(f"{c:>19}" for c in cells)
              + f"{TARGETS[name + '_s']:>7.1f}")  # fmt: skip
    print(
        f"server + worker start {start_s:.1f} s; imports: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in imports.items())
        + f"; load average {load_before} -> {loadavg()}"
    )
    result = {
        "benchmark": "bench_cli",
        "rows": args.rows,
        "repeats": args.repeats,
        "bundle": str(bundle),
        "warm": warm,
        "persistent": persistent,
        "temporary": temporary,
        "server_start_s": round(start_s, 3),
        "import_s": imports,
        "targets": TARGETS,
        "meets_targets": warm["score"]["median_s"] <= TARGETS["score_s"]  # wall time
        and warm["predict"]["median_s"] <= TARGETS["predict_s"],
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
