"""Benchmark: peak memory of the n-gram and vocabulary tables on a corpus 10x online_shopping.

    python benchmarks/bench_tables.py [--copies 10] [--ngram 2] [--tmp DIR]

Builds a tokens Parquet laid out as the pipeline's ``tokens`` artifact (``id``, ``tokens``,
``label``, ``split``; every row ``train`` so the tables see all of it): the review column of
``../shared/corpora/online_shopping_10_cats.csv`` segmented once with jieba (the default
tokenizer, all cores), its rows replicated ``--copies`` times (627,740 rows at 10). Untimed.

Then, each in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own:

- ``streaming``: what the ``ngrams`` and ``vocab`` stages do: ``count_ngrams``,
  ``build_vocab`` and ``summarize_vocab`` over ``pl.scan_parquet(...)`` (polars' streaming
  engine; the token lists are never all in memory);
- ``eager``: the same functions after ``pl.read_parquet`` loads the whole file, for scale.

Prints seconds and peak RSS of each; target: streaming under 4 GB. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)

CORPUS = ROOT / ".." / "shared" / "corpora" / "online_shopping_10_cats.csv"


def build_tokens(path: Path, copies: int) -> dict:
    import polars as pl

    from zhflow.tasks.corpus import read_corpus
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts

    started = time.perf_counter()
    frame = read_corpus(str(CORPUS), text_col="review", label_col="cat")
    texts = frame["text"].to_list()
    tokens = segment_texts(texts, TokenizerSpec(), workers=default_workers())
    base = pl.DataFrame(
        {
            "tokens": pl.Series("tokens", tokens, dtype=pl.List(pl.Utf8)),
            "label": frame["label"].cast(pl.Utf8),
        }
    )
    big = (
        pl.concat([base] * copies)
        .with_row_index("id")
        .with_columns(pl.col("id").cast(pl.Utf8), pl.lit("train").alias("split"))
    )
    big.select("id", "tokens", "label", "split").write_parquet(path)
    return {"rows": big.height, "file_mb": round(path.stat().st_size / 2**20, 1),
            "prepare_s": round(time.perf_counter() - started, 1)}  # fmt: skip


def child(mode: str, path: str, ngram: int) -> None:
    import polars as pl

    from zhflow.tasks.tables import build_vocab, count_ngrams, summarize_vocab

    started = time.perf_counter()
    if mode == "streaming":
        tokens: pl.LazyFrame | pl.DataFrame = (
            pl.scan_parquet(path).filter(pl.col("split") == "train").select("tokens")
        )
    else:
        tokens = pl.read_parquet(path).filter(pl.col("split") == "train").select("tokens")
    ngrams = count_ngrams(tokens, ngram)
    vocab = build_vocab(tokens, min_freq=2, max_vocab=50_000)
    summary = summarize_vocab(vocab, tokens)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(peak_mb), "ngram_rows": ngrams.height,
                      "vocab_size": vocab.height,
                      "token_occurrences": summary["token_occurrences"]}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--ngram", type=int, default=2)
    ap.add_argument("--tmp", help="work folder (default: a temporary one, removed)")
    ap.add_argument("--child", choices=["streaming", "eager"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.ngram)
        return
    with tempfile.TemporaryDirectory(prefix="zhflow-bench-tables-", dir=args.tmp) as tmp:
        path = Path(tmp) / "tokens.parquet"
        data = build_tokens(path, args.copies)
        print(f"tokens: {data['rows']:,} rows ({args.copies} x online_shopping_10_cats), "
              f"{data['file_mb']} MB Parquet, prepared in {data['prepare_s']} s")  # fmt: skip
        results = []
        for mode in ("streaming", "eager"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--path", str(path),
                 "--ngram", str(args.ngram)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'mode':<10} {'seconds':>8} {'peak RSS MB':>12} {'n-grams':>10} {'vocab':>7}")
    for r in results:
        print(f"{r['mode']:<10} {r['seconds']:>8} {r['peak_rss_mb']:>12,} {r['ngram_rows']:>10,} "
              f"{r['vocab_size']:>7,}")  # fmt: skip
    streaming = results[0]
    print(json.dumps({**data, "copies": args.copies, "ngram": args.ngram, "results": results,
                      "streaming_under_4gb": streaming["peak_rss_mb"] < 4096,
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))  # fmt: skip


if __name__ == "__main__":
    main()
