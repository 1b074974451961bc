"""Build a short-text topic corpus from the shared online_shopping_10_cats reviews: a stand-in
for headlines and other snippets, where word segmentation has little context to work with.

    python benchmarks/make_snippets.py [--source ../shared/corpora/online_shopping_10_cats.csv]
        [--out data/snippets.csv] [--chars 16] [--per-class 900]

At most ``--per-class`` rows per product category (a seeded sample), each review cut to its
first ``--chars`` characters (whitespace stripped first; shorter than 4 characters dropped).
The output has ``label`` (the category) and ``review``. It is derived from a corpus this
repository may not ship, so it is written wherever ``--out`` says and never committed; the
figures in docs/BENCHMARKS.md ("Short snippets") come from the defaults:

    python benchmarks/make_snippets.py --out /tmp/snippets.csv
    python benchmarks/compare_peers.py /tmp/snippets.csv --text-col review --label-col label

The last line of stdout is one JSON object: ``rows``, ``labels`` (rows per label), ``out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

ROOT = Path(__file__).resolve().parent.parent


def make_snippets(source: Path, chars: int, per_class: int) -> pl.DataFrame:
    import polars as pl

    df = pl.read_csv(source).filter(pl.col("review").is_not_null())
    df = df.with_columns(pl.col("review").str.strip_chars().str.slice(0, chars))
    df = df.filter(pl.col("review").str.len_chars() >= 4)
    parts = [
        group.sample(n=min(per_class, group.height), seed=0)
        for _, group in df.group_by("cat", maintain_order=True)
    ]
    return pl.concat(parts).select(pl.col("cat").alias("label"), "review")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = ROOT.parent / "shared" / "corpora"
    ap.add_argument("--source", type=Path, default=shared / "online_shopping_10_cats.csv")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "snippets.csv")
    ap.add_argument("--chars", type=int, default=16)
    ap.add_argument("--per-class", type=int, default=900)
    args = ap.parse_args(argv)
    if not args.source.is_file():
        print(f"make_snippets: error: {args.source} not found (--source)", file=sys.stderr)
        return 2
    if args.out.resolve() == args.source.resolve():
        print("make_snippets: error: --out is the source corpus", file=sys.stderr)
        return 2
    out = make_snippets(args.source, args.chars, args.per_class)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    out.write_csv(tmp)
    os.replace(tmp, args.out)
    counts = dict(sorted(out.group_by("label").len().iter_rows()))
    print(json.dumps({"rows": out.height, "labels": counts, "out": str(args.out)},
                     ensure_ascii=False))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
