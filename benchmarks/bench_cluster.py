"""Benchmark: segmentation and scoring wall time on a local Dask cluster of 1 and 2 workers.

    python benchmarks/bench_cluster.py [--workers 1,2] [--rows N] [--bundle PATH]

Input: the review column of ``../shared/corpora/online_shopping_10_cats.csv`` (62,774 rows;
``--rows`` takes the first N). Without ``--bundle`` a quick bundle is trained first as in
``bench_score.py`` (waimai_10k, jieba, 1 epoch). Untimed.

Inside one Prefect flow (a temporary server), for each worker count N:

- segmentation: ``zhflow.tasks.cluster.segment_on_cluster`` (shards of ``SHARD_ROWS`` rows as
  ``segment-shard`` task runs through ``DaskTaskRunner`` on a ``LocalCluster`` of N
  single-threaded processes) + joining the shards, as ``zhflow run --workers N`` does;
- scoring: ``zhflow.tasks.cluster.score_on_cluster`` (50k-row chunks by default; ``--chunk-rows``),
  as ``zhflow score --workers N`` does.

Each figure is wall time including starting that cluster (reported apart as well). For scale,
the same work on this machine's process pool (``--processes`` = cores, no Dask) is timed
too. Every output is compared byte for byte with the local run's. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)

CORPUS = ROOT / ".." / "shared" / "corpora" / "online_shopping_10_cats.csv"


def quick_bundle(folder: Path) -> Path:
    spec = importlib.util.spec_from_file_location("bench_score", Path(__file__).with_name(
        "bench_score.py"))  # fmt: skip
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.train_quick_bundle(folder, "jieba", "waimai_10k.csv"))


def cluster_start_seconds(workers: int) -> float:
    from zhflow.tasks.cluster import ClusterSpec, open_task_runner

    started = time.perf_counter()
    with open_task_runner(ClusterSpec(workers=workers)):
        pass
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--rows", type=int, default=None, help="first N rows only")
    ap.add_argument("--bundle", help="model bundle folder (default: train a quick one)")
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    args = ap.parse_args()

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    import polars as pl
    from prefect import flow

    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.cluster import ClusterSpec, score_on_cluster, segment_on_cluster
    from zhflow.tasks.corpus import read_corpus
    from zhflow.tasks.score import score_file
    from zhflow.tasks.segment import (
        TokenizerSpec,
        assemble_token_shards,
        default_workers,
        segment_frame,
    )

    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    counts = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="zhflow-bench-cluster-"))
    try:
        bundle_path = Path(args.bundle) if args.bundle else quick_bundle(tmp / "quick")
        frame = read_corpus(str(CORPUS), text_col="review", label_col="cat")
        if args.rows:
            frame = frame.head(args.rows)
        corpus = frame.select(
            pl.col("id").cast(pl.Utf8), "text", pl.col("label").cast(pl.Utf8),
            pl.lit("train").alias("split"),
        )  # fmt: skip
        corpus_path = tmp / "corpus.parquet"
        corpus.write_parquet(corpus_path)
        score_input = tmp / "score_in.parquet"
        corpus.select("text").write_parquet(score_input)
        spec = TokenizerSpec()

        @flow(name="bench-cluster")
        def bench() -> dict:
            rows: list[dict] = []
            t0 = time.perf_counter()
            local_tokens = segment_frame(corpus, spec, default_workers())
            seg_local = time.perf_counter() - t0
            local_tokens.write_parquet(tmp / "tokens_local.parquet")
            bundle = load_bundle(bundle_path)
            t0 = time.perf_counter()
            score_file(bundle, score_input, tmp / "scores_local.parquet",
                       chunk_rows=args.chunk_rows, workers=default_workers())  # fmt: skip
            score_local = time.perf_counter() - t0
            rows.append({"where": f"local pool ({default_workers()} processes)",
                         "segmentation_s": round(seg_local, 1),
                         "scoring_s": round(score_local, 1)})  # fmt: skip
            for n in counts:
                start_s = cluster_start_seconds(n)
                t0 = time.perf_counter()
                parts = segment_on_cluster(corpus_path, corpus.height, spec.to_dict(),
                                           ClusterSpec(workers=n), tmp / f"shards{n}")  # fmt: skip
                assemble_token_shards(corpus, parts).write_parquet(tmp / f"tokens_{n}.parquet")
                seg_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                score_on_cluster(bundle, score_input, tmp / f"scores_{n}.parquet",
                                 ClusterSpec(workers=n), chunk_rows=args.chunk_rows)  # fmt: skip
                score_s = time.perf_counter() - t0
                same = all(
                    (tmp / f"{kind}_{n}.parquet").read_bytes()
                    == (tmp / f"{kind}_local.parquet").read_bytes()
                    for kind in ("tokens", "scores")
                )
                rows.append({"where": f"dask LocalCluster, {n} worker(s)", "workers": n,
                             "cluster_start_s": round(start_s, 1),
                             "segmentation_s": round(seg_s, 1), "scoring_s": round(score_s, 1),
                             "identical_to_local": same})  # fmt: skip
            return {"results": rows}

        out = bench()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"rows: {corpus.height:,} (online_shopping_10_cats reviews); cpus {default_workers()}")
    print(f"{'where':<36} {'start s':>7} {'segment s':>9} {'score s':>8} {'identical':>9}")
    for r in out["results"]:
        print(f"{r['where']:<36} {r.get('cluster_start_s', ''):>7} {r['segmentation_s']:>9} "
              f"{r['scoring_s']:>8} {r.get('identical_to_local', ''):>9}")  # fmt: skip
    print(json.dumps({"rows": corpus.height, "cpus": default_workers(), **out,
                      "loadavg_start": loadavg_start,
                      "loadavg_end": [round(x, 2) for x in os.getloadavg()]}))  # fmt: skip


if __name__ == "__main__":
    main()
