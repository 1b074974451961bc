"""Benchmark: batch scoring docs/s and peak memory at 100k and 1M rows, against its two stages.

    python benchmarks/bench_score.py [--bundle PATH] [--sizes 100000,1000000] [--sample 50000]

Builds inputs of each size (Parquet, ``text`` column) in a temporary folder by cycling the
review column of the shared corpora (../shared/corpora: online_shopping_10_cats, waimai_10k,
ChnSentiCorp_htl_all; nothing is copied into the repository). Without ``--bundle`` it first
trains a small bundle with the pure functions (waimai_10k, jieba tokens, 1 epoch, default
LSTM): scoring speed depends on the tokenizer and the network, not on how well it learned.

Each size is scored by ``zhflow.tasks.score.score_file`` in a fresh subprocess, one at a time:
docs/s from the scorer's own clock (bundle loading excluded, worker start-up included), the
scoring process's peak RSS (``ru_maxrss``) and the peak of the whole process tree's summed
RSS (scorer + forkserver + segmentation workers; ``/proc`` polled every 0.25 s; the workers
are children of the forkserver, so ``RUSAGE_CHILDREN`` cannot see them). Then, in one more
subprocess, on the first ``--sample`` rows of the same input:

- segmentation alone: a warm ``Segmenter`` pool of the same ``--workers`` segmenting and
  encoding (exactly the workers' share of scoring), docs/s;
- forward alone, the faster of: ``zhflow.tasks.train.predict_proba`` with torch's default threads
  (OpenMP over all cores) and ``zhflow.tasks.score.forward_probs`` on one thread per core (what the
  scorer uses), over the already encoded rows, docs/s.

``ratio_vs_slower`` = scoring docs/s / min(those two), for the largest size (target >= 0.8).
Both stages are CPU-bound and share the same cores, so scoring cannot beat
``ceiling_docs_per_s`` = 1 / (1/seg + 1/forward) (every core busy all the time, no overhead);
``ratio_vs_ceiling`` says how close the pipeline gets to that.
``rss_growth`` = peak RSS at the largest size / at the smallest - 1 (target: within 20%).
The machine's load average is recorded before and after: other work on the cores skews every
figure. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)

CORPORA = ROOT / ".." / "shared" / "corpora"
DEFAULT_SOURCES = ["online_shopping_10_cats.csv", "waimai_10k.csv", "ChnSentiCorp_htl_all.csv"]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- inputs


def base_texts(sources: list[str]) -> list[str]:
    import polars as pl

    texts: list[str] = []
    for name in sources:
        path = Path(name) if Path(name).is_file() else CORPORA / name
        col = pl.read_csv(path, columns=["review"], infer_schema_length=0)["review"]
        texts += [t if t is not None else "" for t in col.to_list()]
    return texts


def write_input(texts: list[str], rows: int, path: Path, group: int = 50_000) -> Path:
    """``rows`` rows cycling ``texts``, written in row groups (never all rows in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("text", pa.string())])
    n = len(texts)
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, rows, group):
            stop = min(rows, start + group)
            batch = [texts[i % n] for i in range(start, stop)]
            writer.write_table(pa.table({"text": batch}, schema=schema))
    return path


def train_quick_bundle(out: Path, tokenizer: str, source: str) -> Path:
    """A small bundle through the pure functions: waimai_10k, 1 epoch, default LSTM."""
    import polars as pl
    import torch

    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks.bundle import seal_bundle, write_bundle
    from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts
    from zhflow.tasks.tables import build_vocab, vocab_to_index
    from zhflow.tasks.train import TrainConfig, train_model

    path = Path(source) if Path(source).is_file() else CORPORA / source
    df = pl.read_csv(path, infer_schema_length=0).drop_nulls(["review", "label"])
    texts, labels = df["review"].to_list(), df["label"].to_list()
    spec = TokenizerSpec(engine=tokenizer)
    tokens = segment_texts(texts, spec, workers=default_workers())
    vocab = build_vocab(pl.DataFrame({"tokens": tokens}), min_freq=2, max_vocab=50_000)
    max_len = 200
    ids, lengths = encode_tokens(tokens, vocab_to_index(vocab), max_len)
    label_map = build_label_map(labels)
    y = encode_labels(labels, label_map)
    data = {
        "ids": torch.from_numpy(ids),
        "lengths": torch.from_numpy(lengths),
        "labels": torch.from_numpy(y),
    }
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(label_map))
    result = train_model(cfg, TrainConfig(epochs=1), data, data, log=None)
    write_bundle(
        out,
        result.state_dict,
        cfg,
        spec,
        vocab,
        label_map,
        max_len,
        metrics={"note": "bench_score quick bundle, 1 epoch"},
    )
    seal_bundle(out)
    return out


# ----------------------------------------------------------------------------- children


def child_score(args: argparse.Namespace) -> dict:
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.score import score_file

    bundle = load_bundle(args.bundle)
    summary = score_file(
        bundle,
        args.input,
        args.output,
        text_col="text",
        batch_size=args.batch_size,
        chunk_rows=args.chunk_rows,
        workers=args.workers,
    )
    return {
        "rows": summary["rows"],
        "seconds": summary["seconds"],
        "docs_per_s": summary["docs_per_s"],
        "torch_threads": summary["torch_threads"],
        "forward_threads": summary["forward_threads"],
        "self_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child_stages(args: argparse.Namespace) -> dict:
    import numpy as np
    import polars as pl
    import torch

    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.encode import UNK_ID
    from zhflow.tasks.score import forward_probs, pad_ragged
    from zhflow.tasks.segment import FlatIdEncoder, Segmenter
    from zhflow.tasks.tables import vocab_to_index
    from zhflow.tasks.train import predict_proba

    bundle = load_bundle(args.bundle)
    texts = pl.read_parquet(args.input, n_rows=args.sample)["text"].to_list()
    kept = [t for t in texts if t and t.strip()]
    encoder = FlatIdEncoder(vocab_to_index(bundle.vocab), bundle.max_len, UNK_ID)
    with Segmenter(bundle.tokenizer, args.workers, post=encoder) as seg:
        seg.segment(kept[: 2 * 2000 * max(1, args.workers)])  # start and warm every worker
        t0 = time.perf_counter()
        parts = seg.segment(kept)
        seg_s = time.perf_counter() - t0
    lengths = np.concatenate([p[1] for p in parts])
    ids = pad_ragged(np.concatenate([p[0] for p in parts]), lengths, bundle.max_len)
    from concurrent.futures import ThreadPoolExecutor

    from zhflow.tasks.segment import default_workers

    default_threads = torch.get_num_threads()
    predict_proba(bundle.model, ids[:512], lengths[:512], args.batch_size)  # warm-up
    t0 = time.perf_counter()
    predict_proba(bundle.model, ids, lengths, args.batch_size)
    omp_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    with ThreadPoolExecutor(default_workers()) as pool:
        forward_probs(bundle.model, ids[:512], lengths[:512], args.batch_size, pool)
        t0 = time.perf_counter()
        forward_probs(bundle.model, ids, lengths, args.batch_size, pool)
        thr_s = time.perf_counter() - t0
    torch.set_num_threads(default_threads)
    fwd_s = min(omp_s, thr_s)
    return {
        "sample_rows": len(texts),
        "scored_rows": len(kept),
        "mean_tokens": round(float(lengths.mean()), 1),
        "seg_seconds": round(seg_s, 3),
        "seg_docs_per_s": round(len(kept) / seg_s, 1),
        "forward_seconds": round(fwd_s, 3),
        "forward_docs_per_s": round(len(kept) / fwd_s, 1),
        "forward_how": (
            f"predict_proba, {default_threads} OpenMP threads"
            if omp_s <= thr_s
            else f"forward_probs, {default_workers()} threads x 1"
        ),
        "forward_omp_docs_per_s": round(len(kept) / omp_s, 1),
        "forward_threaded_docs_per_s": round(len(kept) / thr_s, 1),
    }


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of ``pid`` and all its descendants (0 once it is gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run_child(mode: str, extra: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            done.wait(0.25)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["tree_peak_rss_mb"] = round(peak / 1024, 1)
    return result


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    from zhflow.tasks.segment import default_workers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="model bundle folder (default: train a quick one)")
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    ap.add_argument("--sample", type=int, default=50_000, help="rows for the stage timings")
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help="review-column CSVs")
    ap.add_argument("--tokenizer", default="jieba", help="for the quick bundle")
    ap.add_argument("--tmp", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--child", choices=["score", "stages"], help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        fn = child_score if args.child == "score" else child_stages
        print(json.dumps(fn(args)), flush=True)
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="zhflow-bench-score-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        load_start = loadavg()
        bundle = args.bundle
        if bundle is None:
            t0 = time.perf_counter()
            bundle = str(train_quick_bundle(tmp / "bundle", args.tokenizer, "waimai_10k.csv"))
            print(f"trained a quick bundle in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        texts = base_texts(args.sources.split(","))
        common = [
            "--bundle",
            bundle,
            "--workers",
            str(args.workers),
            "--chunk-rows",
            str(args.chunk_rows),
            "--batch-size",
            str(args.batch_size),
        ]
        results = []
        for rows in sizes:
            path = write_input(texts, rows, tmp / f"in_{rows}.parquet")
            out = tmp / f"out_{rows}.parquet"
            res = run_child("score", [*common, "--input", str(path), "--output", str(out)])
            res["loadavg_after"] = loadavg()
            results.append(res)
            print(f"scored {rows} rows: {res}", file=sys.stderr)
            path.unlink()
            out.unlink()
        sample = min(args.sample, max(sizes))
        path = write_input(texts, sample, tmp / "sample.parquet")
        stages = run_child("stages", [*common, "--input", str(path), "--sample", str(sample)])
        load_end = loadavg()

    slower = min(stages["seg_docs_per_s"], stages["forward_docs_per_s"])
    last = results[-1]
    growth = last["self_maxrss_mb"] / results[0]["self_maxrss_mb"] - 1
    tree_growth = last["tree_peak_rss_mb"] / results[0]["tree_peak_rss_mb"] - 1

    print(
        f"bundle: {bundle}  workers={args.workers}  chunk_rows={args.chunk_rows}  "
        f"cpus={os.cpu_count()}  loadavg start {load_start} end {load_end}"
    )
    ceiling = 1 / (1 / stages["seg_docs_per_s"] + 1 / stages["forward_docs_per_s"])
    hdr = (
        f"{'rows':>9} {'seconds':>8} {'docs/s':>8} {'x slower stage':>14} "
        f"{'x ceiling':>9} {'RSS MB scorer':>13} {'RSS MB tree':>11}"
    )
    print(hdr)
    for r in results:
        print(
            f"{r['rows']:>9} {r['seconds']:>8.1f} {r['docs_per_s']:>8.0f} "
            f"{r['docs_per_s'] / slower:>14.2f} {r['docs_per_s'] / ceiling:>9.2f} "
            f"{r['self_maxrss_mb']:>13.0f} {r['tree_peak_rss_mb']:>11.0f}"
        )
    print(
        f"segmentation alone ({args.workers} workers, warm, {stages['scored_rows']} rows, "
        f"mean {stages['mean_tokens']} tokens): {stages['seg_docs_per_s']:.0f} docs/s; "
        f"forward alone: {stages['forward_docs_per_s']:.0f} docs/s ({stages['forward_how']}; "
        f"OpenMP {stages['forward_omp_docs_per_s']:.0f}, threaded "
        f"{stages['forward_threaded_docs_per_s']:.0f}); ceiling {ceiling:.0f} docs/s"
    )
    summary = {
        "sizes": [
            {k: r[k] for k in ("rows", "seconds", "docs_per_s", "forward_threads")}
            | {
                "peak_rss_mb": r["self_maxrss_mb"],
                "tree_peak_rss_mb": r["tree_peak_rss_mb"],
                "loadavg_after": r["loadavg_after"],
            }
            for r in results
        ],
        "rss_growth": round(growth, 3),
        "tree_rss_growth": round(tree_growth, 3),
        "seg_docs_per_s": stages["seg_docs_per_s"],
        "forward_docs_per_s": stages["forward_docs_per_s"],
        "forward_how": stages["forward_how"],
        "forward_omp_docs_per_s": stages["forward_omp_docs_per_s"],
        "forward_threaded_docs_per_s": stages["forward_threaded_docs_per_s"],
        "stage_sample_rows": stages["sample_rows"],
        "mean_tokens": stages["mean_tokens"],
        "ratio_vs_slower": round(last["docs_per_s"] / slower, 3),
        "ceiling_docs_per_s": round(ceiling, 1),
        "ratio_vs_ceiling": round(last["docs_per_s"] / ceiling, 3),
        "workers": args.workers,
        "chunk_rows": args.chunk_rows,
        "cpus": os.cpu_count(),
        "bundle": bundle if args.bundle else f"quick (waimai_10k, 1 epoch, {args.tokenizer})",
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
