"""Benchmark: what ``zhflow tune`` buys. On one leak-free split (seed), the test accuracy of

- ``tuned``: ``zhflow tune`` (``--trials N``, the default space or ``--space``), its winner
  tested once;
- ``default``: ``zhflow run`` with its defaults (the tune's first trial has the same settings,
  so the tuned model is never worse on the validation split);
- ``best peer``: the best of compare_peers.py's peers (TF-IDF + LinearSVC on words, characters,
  both; fastText) on the same split, each with its settings chosen on the valid split;

with each one's wall time (the tune's and the default's in fresh work dirs of their own, so
neither reuses the other's segmentation).

    python benchmarks/bench_tune.py CORPUS [--text-col C] [--label-col C] [--format F]
        [--trials 6] [--space FILE] [--parallel N] [--seed 42] [--timeout S] [--no-peers]

The last line of stdout is one JSON object: ``tuned``, ``default``, ``best_peer`` (each with
``accuracy``, ``macro_f1``, ``seconds``), ``tune`` (trials, best settings, the run line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _checkout  # noqa: F401  (zhflow from this checkout when not installed)


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t0, 1)


def best_peer(args: argparse.Namespace) -> dict[str, Any] | None:
    import compare_peers

    peer_args = argparse.Namespace(corpus=args.corpus, text_col=args.text_col,
                                   label_col=args.label_col, format=args.format)  # fmt: skip
    from zhflow.tasks.segment import default_workers

    seed_run = compare_peers.run_seed(peer_args, args.seed, list(compare_peers.PEERS),
                                      default_workers())  # fmt: skip
    runs = seed_run["runs"]
    if not runs:
        return None
    name = max(runs, key=lambda m: runs[m]["accuracy"])
    return {"method": name, **runs[name], "all": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--text-col")
    ap.add_argument("--label-col")
    ap.add_argument("--format", default=None)
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--space", default=None, help="YAML/JSON space (default: the built-in one)")
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)
    # A loaded machine can take minutes to start the temporary server; then the CLI's defaults.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    from zhflow.flows.settings import apply_defaults

    apply_defaults()  # offline

    from zhflow.flows.pipeline import train_pipeline
    from zhflow.flows.tune import tune_pipeline

    data = dict(corpus=args.corpus, fmt=args.format, text_col=args.text_col,
                label_col=args.label_col, seed=args.seed)  # fmt: skip
    load_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="zhflow-bench-tune-") as tmp:
        tuned, tune_s = _timed(lambda: tune_pipeline(
            **data, workdir=f"{tmp}/tune", trials=args.trials, space=args.space,
            parallel=args.parallel, timeout=args.timeout))  # fmt: skip
        print(f"tuned: test accuracy {tuned['test_accuracy']:.4f} in {tune_s} s; "
              f"{tuned['command']}", file=sys.stderr, flush=True)  # fmt: skip
        default, default_s = _timed(lambda: train_pipeline(**data, workdir=f"{tmp}/default"))
    peer = None if args.no_peers else best_peer(args)
    result = {
        "corpus": args.corpus, "seed": args.seed, "trials": args.trials,
        "tuned": {"accuracy": round(tuned["test_accuracy"], 4),
                  "macro_f1": round(tuned["test_macro_f1"], 4), "seconds": tune_s,
                  "valid_score": round(tuned["valid_score"], 4), "metric": tuned["metric"]},
        "default": {"accuracy": round(default["accuracy"], 4),
                    "macro_f1": round(default["macro_f1"], 4), "seconds": default_s},
        "best_peer": peer,
        "tune": {"trials": tuned["trials"], "best": tuned["best"], "command": tuned["command"],
                 "best_trial": tuned["best_trial"]},
        "loadavg_start": load_start, "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    print(f"{'':<10} {'accuracy':>9} {'macro-F1':>9} {'seconds':>9}")
    for name in ("tuned", "default"):
        r = result[name]
        print(f"{name:<10} {r['accuracy']:>9.4f} {r['macro_f1']:>9.4f} {r['seconds']:>9.1f}")
    if peer:
        print(f"{'peer':<10} {peer['accuracy']:>9.4f} {peer['macro_f1']:>9.4f} "
              f"{peer['seconds']:>9.1f}  ({peer['method']})")  # fmt: skip
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
