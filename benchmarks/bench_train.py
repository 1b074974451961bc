"""Benchmark: zhflow's training samples/s against a naive fixed-length loop, same run, same data.

    python benchmarks/bench_train.py [CSV] [--text-col review] [--label-col label]
        [--tokenizer jieba] [--max-len 200] [--epochs 1] [--limit N] [--threads N]

Data: the corpus (default ../shared/corpora/waimai_10k.csv) cleaned, deduplicated and split
as the pipeline does (``zhflow.tasks.corpus``), segmented (jieba words by default), vocabulary from
the train split (min_freq 2), encoded to ``max_len``. Untimed.

- zhflow: ``zhflow.tasks.train.train_model`` with the default ``RNNConfig`` (bidirectional LSTM
  128/128, last+max pooling) and ``TrainConfig`` (batch 64, AdamW, clipping) for ``--epochs``:
  length-bucketed batches trimmed to their longest text, the model's own CPU recurrence.
  samples/s is the training part of each epoch (``history[i]["samples_per_s"]``, the
  validation pass excluded).
- naive: the same embedding/LSTM sizes and optimiser, every batch the full ``(64, max_len)``
  padded tensor (random batches, no bucketing, no packing, no trimming) through a plain
  ``nn.LSTM``, classifying ``out[:, -1]``, the loop most tutorials show. Every naive batch
  costs the same whatever its texts (always ``(64, max_len)``), so it is timed on the first
  ``--naive-samples`` samples of a shuffled epoch (default 2048; 0 = the whole epoch).

Both use the same torch threads (default: torch's, all cores; on a busy machine ``--threads 1``
avoids OpenMP threads spinning against other work) and the same data. The last
line of stdout is one JSON object; the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

DEFAULT_CSV = ROOT / ".." / "shared" / "corpora" / "waimai_10k.csv"


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prepare(args: argparse.Namespace) -> tuple[dict, dict, int, int]:
    import polars as pl

    from zhflow.tasks.corpus import clean_corpus, drop_duplicate_texts, read_corpus, split_corpus
    from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts
    from zhflow.tasks.tables import build_vocab, vocab_to_index

    df = read_corpus(args.csv, text_col=args.text_col, label_col=args.label_col)
    df, _ = clean_corpus(df)
    df, _ = drop_duplicate_texts(df)
    df = split_corpus(df, seed=args.seed)
    train_df = df.filter(pl.col("split") == "train")
    valid_df = df.filter(pl.col("split") == "valid")
    if args.limit:
        train_df = train_df.head(args.limit)
        valid_df = valid_df.head(max(64, args.limit // 8))
    spec = TokenizerSpec(engine=args.tokenizer)
    tr_tokens = segment_texts(train_df["text"].to_list(), spec, workers=default_workers())
    va_tokens = segment_texts(valid_df["text"].to_list(), spec, workers=default_workers())
    vocab = build_vocab(pl.DataFrame({"tokens": tr_tokens}), min_freq=2, max_vocab=50_000)
    index = vocab_to_index(vocab)
    label_map = build_label_map(df["label"].to_list())

    def tensors(tokens: list[list[str]], labels: list[str]) -> dict[str, torch.Tensor]:
        ids, lengths = encode_tokens(tokens, index, args.max_len)
        y = encode_labels(labels, label_map)
        return {
            "ids": torch.from_numpy(ids),
            "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(y),
        }

    train = tensors(tr_tokens, train_df["label"].to_list())
    valid = tensors(va_tokens, valid_df["label"].to_list())
    return train, valid, vocab.height, len(label_map)


class NaiveLSTM(nn.Module):
    """Embedding → nn.LSTM over the whole padded tensor → out[:, -1] → linear."""

    def __init__(self, vocab: int, classes: int, emb: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.rnn = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(ids.long()))
        return self.head(out[:, -1])


def naive_epoch(
    train: dict, vocab: int, classes: int, args: argparse.Namespace
) -> tuple[float, int]:
    """The naive loop over ``args.naive_samples`` samples (0: one epoch); (seconds, samples)."""
    from zhflow.models.rnn import RNNConfig

    cfg = RNNConfig(vocab_size=vocab, num_classes=classes)
    torch.manual_seed(args.seed)
    model = NaiveLSTM(vocab, classes, cfg.embedding_dim, cfg.hidden_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    ids, labels = train["ids"], train["labels"]
    n = ids.shape[0]
    if args.naive_samples:
        n = min(n, args.naive_samples)
    model.train()
    t0 = time.perf_counter()
    perm = torch.randperm(ids.shape[0], generator=torch.Generator().manual_seed(args.seed))[:n]
    for start in range(0, n, args.batch_size):
        index = perm[start : start + args.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(ids[index]), labels[index])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="?", default=str(DEFAULT_CSV))
    ap.add_argument("--text-col", default=None)
    ap.add_argument("--label-col", default=None)
    ap.add_argument("--tokenizer", default="jieba")
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1, help="zhflow epochs (naive: always 1)")
    ap.add_argument("--limit", type=int, default=None, help="first N train rows only")
    ap.add_argument("--naive-samples", type=int, default=2048, help="0 = one whole epoch")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks.train import TrainConfig, train_model

    train, valid, vocab, classes = prepare(args)
    n = int(train["ids"].shape[0])
    lengths = train["lengths"].float()
    load_start = loadavg()

    cfg = RNNConfig(vocab_size=vocab, num_classes=classes)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, patience=99)
    t0 = time.perf_counter()
    result = train_model(cfg, tc, train, valid, log=None)
    zh_wall = time.perf_counter() - t0
    zh_train_s = sum(n / r["samples_per_s"] for r in result.history)
    zh_rate = n * len(result.history) / zh_train_s
    load_mid = loadavg()

    naive_s, naive_n = naive_epoch(train, vocab, classes, args)
    naive_rate = naive_n / naive_s
    load_end = loadavg()

    ratio = zh_rate / naive_rate
    print(
        f"corpus: {args.csv}  train rows={n}  tokenizer={args.tokenizer}  max_len={args.max_len}"
        f"  mean length={lengths.mean():.1f} tokens (p95 {lengths.quantile(0.95):.0f})"
        f"  threads={torch.get_num_threads()}  loadavg {load_start} / {load_mid} / {load_end}"
    )
    print(f"{'loop':<58} {'samples':>8} {'train s':>8} {'samples/s':>10}")
    print(
        f"{'zhflow train_model (bucketed, trimmed, last+max pooling)':<58} "
        f"{n * len(result.history):>8} {zh_train_s:>8.1f} {zh_rate:>10.0f}"
    )
    print(
        f"{'naive (fixed max_len padding, nn.LSTM, out[:, -1])':<58} "
        f"{naive_n:>8} {naive_s:>8.1f} {naive_rate:>10.0f}"
    )
    print(f"ratio zhflow / naive: {ratio:.2f}x (target >= 2x)")
    print(
        json.dumps(
            {
                "corpus": str(args.csv),
                "train_rows": n,
                "tokenizer": args.tokenizer,
                "max_len": args.max_len,
                "mean_length": round(float(lengths.mean()), 1),
                "threads": torch.get_num_threads(),
                "zhflow_samples_per_s": round(zh_rate, 1),
                "zhflow_epochs": len(result.history),
                "zhflow_wall_s_with_validation": round(zh_wall, 2),
                "naive_samples_per_s": round(naive_rate, 1),
                "naive_samples_timed": naive_n,
                "ratio": round(ratio, 2),
                "loadavg_start": load_start,
                "loadavg_mid": load_mid,
                "loadavg_end": load_end,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
