"""Training throughput of the two RNN implementations on the same encoded data, same run.

    .venv/bin/python benchmarks/bench_rnn_impl.py ENCODED_DIR [--cell lstm] [--batches 60]

ENCODED_DIR is an ``encoded/<key>/`` artifact (``zhflow run CORPUS --until encode`` prints it
in ``runs/latest.json``). Both implementations train the same model from the same init on the
same batches (bucketed, as ``zhflow run`` trains), alternating rounds so that load from other
processes on shared cores hits both alike. Prints a table and a JSON last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _checkout  # noqa: F401  (zhflow from this checkout when not installed)
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.tasks.train import collate, make_batches


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("encoded", type=Path)
    ap.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--no-bidirectional", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=60, help="batches per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_file(str(args.encoded / "train.safetensors"))
    meta = json.loads((args.encoded / "meta.json").read_text())
    labels = json.loads((args.encoded / "labels.json").read_text())["labels"]
    ids, lengths, y = data["ids"], data["lengths"].long(), data["labels"].long()
    cfg = RNNConfig(vocab_size=meta["vocab_size"], num_classes=len(labels), cell=args.cell,
                    num_layers=args.layers, bidirectional=not args.no_bidirectional)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    batches = make_batches(lengths, args.batch_size, gen)[: args.batches]
    n_samples = sum(len(b) for b in batches)
    mean_len = float(torch.cat([lengths[b] for b in batches]).float().mean())

    torch.manual_seed(0)
    init = RNNClassifier(cfg).state_dict()
    seconds: dict[str, list[float]] = {"packed": [], "unpacked": []}
    for _ in range(args.rounds):
        for impl in seconds:
            model = RNNClassifier(cfg, impl=impl)
            model.load_state_dict(init)
            model.train()
            opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
            t0 = time.perf_counter()
            for index in batches:
                b_ids, b_len, b_y = collate(ids, lengths, y, index)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(b_ids, b_len), b_y).backward()
                opt.step()
            seconds[impl].append(time.perf_counter() - t0)

    rates = {impl: n_samples / min(s) for impl, s in seconds.items()}
    threads = torch.get_num_threads()
    print(f"{cfg.cell} bi={cfg.bidirectional} layers={cfg.num_layers} batch={args.batch_size} "
          f"mean_len={mean_len:.1f} samples={n_samples} threads={threads}")  # fmt: skip
    print(f"{'impl':<10}{'best s':>10}{'samples/s':>12}")
    for impl, s in seconds.items():
        print(f"{impl:<10}{min(s):>10.2f}{rates[impl]:>12.0f}")
    print(f"speed-up unpacked/packed: {rates['unpacked'] / rates['packed']:.2f}x")
    print(json.dumps({"cell": cfg.cell, "mean_len": mean_len, "samples": n_samples,
                      "samples_per_s": rates,
                      "speedup": rates["unpacked"] / rates["packed"]}))  # fmt: skip


if __name__ == "__main__":
    main()
