"""Benchmark: plain one-process jieba vs. zhflow's sharded multi-process segmentation.

    python benchmarks/bench_tokenize.py [CSV] [--engine rjieba] [--workers N] [--limit N]

Reads the ``review`` column (nulls → ""), times ``[jieba.lcut(t) for t in texts]`` (global
jieba, HMM on, after an untimed ``jieba.initialize()``) and
``segment_texts(texts, TokenizerSpec(normalize=False, drop_whitespace=False), workers)``
in the same run, and checks the tokens are identical (normalisation and whitespace dropping
are off so the tokens are comparable with plain jieba). The last line of stdout is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)

from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts  # noqa: E402

DEFAULT_CSV = ROOT / ".." / "shared" / "corpora" / "online_shopping_10_cats.csv"


def load_texts(path: Path, column: str, limit: int | None) -> list[str]:
    import polars as pl

    df = pl.read_csv(path, columns=[column], infer_schema_length=0)
    texts = [t if t is not None else "" for t in df.get_column(column).to_list()]
    return texts[:limit] if limit else texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    ap.add_argument("--column", default="review")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--limit", type=int, default=None, help="first N texts only")
    ap.add_argument("--engine", choices=["rjieba"], default=None, help="also time this engine")
    args = ap.parse_args(argv)

    texts = load_texts(Path(args.csv), args.column, args.limit)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6

    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()  # warm-up, not timed

    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    baseline = [jieba.lcut(t) for t in texts]
    t_base, cpu_base = time.perf_counter() - t0, time.process_time() - c0

    spec = TokenizerSpec(normalize=False, drop_whitespace=False)
    t0 = time.perf_counter()
    ours = segment_texts(texts, spec, workers=args.workers)
    t_ours = time.perf_counter() - t0

    # segment_texts maps "" to []; plain jieba also gives [] for "".
    mismatched = sum(1 for a, b in zip(baseline, ours, strict=True) if a != b)

    rows = [
        ("jieba.lcut loop, 1 process", t_base, mb / t_base, "-"),
        (f"zhflow segment_texts, {args.workers} workers", t_ours, mb / t_ours, mismatched),
    ]
    extra: dict[str, object] = {}
    if args.engine == "rjieba":
        r_spec = TokenizerSpec(engine="rjieba", normalize=False, drop_whitespace=False)
        t0 = time.perf_counter()
        r_tokens = segment_texts(texts, r_spec, workers=1)
        t_r = time.perf_counter() - t0
        agree = sum(1 for a, b in zip(baseline, r_tokens, strict=True) if a == b) / len(texts)
        rows.append(("rjieba, 1 process", t_r, mb / t_r, len(texts) - round(agree * len(texts))))
        extra = {"rjieba_mb_s": round(mb / t_r, 3), "rjieba_agreement": round(agree, 4)}

    print(f"corpus: {args.csv}  docs={len(texts)}  {mb:.2f} MB  cpus={os.cpu_count()}")
    print(f"{'method':<40} {'seconds':>8} {'MB/s':>7} {'docs differing':>15}")
    for name, secs, speed, diff in rows:
        print(f"{name:<40} {secs:>8.2f} {speed:>7.3f} {diff!s:>15}")
    result = {
        "docs": len(texts),
        "mb": round(mb, 3),
        "baseline_mb_s": round(mb / t_base, 3),
        "zhflow_mb_s": round(mb / t_ours, 3),
        "ratio": round(t_base / t_ours, 3),
        "identical": mismatched == 0,
        "workers": args.workers,
        # Other processes on the machine skew wall-clock ratios: a baseline whose CPU time is
        # well under its wall time, or a load average above 0.5 before it, means contention.
        "baseline_cpu_s": round(cpu_base, 2),
        "baseline_wall_s": round(t_base, 2),
        "zhflow_wall_s": round(t_ours, 2),
        "loadavg_before": round(load_before, 2),
        **extra,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
