"""Benchmark: the wide branch alone, fitted each way ``TrainConfig.wide_solver`` allows, on the
leak-free split ``compare_peers.py`` uses, over several seeds (mean ± sd).

    python benchmarks/wide_fits.py CORPUS [--text-col C] [--label-col C] [--format F]
        [--seeds 42,43,44]

For each seed the corpus is split and segmented exactly as in ``compare_peers.py``; the wide
branch's features are chosen from the train split with ``zhflow run``'s defaults; then the
functions ``zhflow.tasks.train._train_wide`` calls fit it:

- ``lbfgs``: the exact L2 logistic regression, C chosen on valid log-loss;
- ``adamw``: minibatch AdamW stopped early on valid log-loss;
- ``pick``: whichever of the two has the lower valid log-loss (the default until 2026-12-02);
- ``blend``: ``w * lbfgs + (1 - w) * adamw``, ``w`` fitted on valid (the default now, for
  each of the two views of the n-grams the branch is fitted on; this script fits the
  words+chars view only: ``zhflow.tasks.train._train_wide`` then blends it with the
  characters-alone view).

Each is scored once on the test rows. No RNN is trained: this isolates the choice the wide
branch makes (about a minute a seed on ChnSentiCorp_htl_all). The last line of stdout is one
JSON object with ``results``: per method ``method``, ``accuracy_mean``, ``accuracy_sd``,
``seeds`` and ``runs``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)
import compare_peers  # noqa: E402  (its split and segmentation, so both see the same rows)

METHODS = ("lbfgs", "adamw", "pick", "blend")


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import polars as pl
    import torch

    from zhflow.flows.pipeline import build_wide_spec
    from zhflow.models.wide import NgramLinear, RaggedBags, bag_matrix
    from zhflow.tasks import train
    from zhflow.tasks.encode import build_label_map, encode_labels
    from zhflow.tasks.features import NgramSpec
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts
    from zhflow.tasks.tables import featurizer_from_table, select_ngram_features

    data, _ = compare_peers.load_split(args, seed)
    tokens = {s: segment_texts(data[s]["text"], TokenizerSpec(), workers=default_workers())
              for s in data}  # fmt: skip
    d = compare_peers.pipeline_defaults()
    train_tokens = pl.DataFrame({"tokens": tokens["train"]}, schema={"tokens": pl.List(pl.Utf8)})
    spec = NgramSpec.from_dict(build_wide_spec(d["tokenizer"], d["wide_word_ngrams"],
                                          d["wide_char_ngrams"], d["wide_min_df"]))  # fmt: skip
    featurizer = featurizer_from_table(select_ngram_features(train_tokens, spec), spec)
    label_map = build_label_map(data["train"]["label"])
    bags, labels = {}, {}
    for s in data:
        ids, counts, weights = featurizer(tokens[s])
        bags[s] = RaggedBags(torch.from_numpy(ids).long(), torch.from_numpy(counts).long(),
                             torch.from_numpy(weights).float())  # fmt: skip
        labels[s] = torch.from_numpy(encode_labels(data[s]["label"], label_map)).long()
    problem = train.WideProblem(bags["train"], labels["train"], bags["valid"], labels["valid"],
                                torch.device("cpu"))  # fmt: skip
    config = train.TrainConfig(seed=seed)
    num_features, num_classes = featurizer.num_features, len(label_map)
    fits: dict[str, dict[str, Any]] = {}
    for solver, fit in (("lbfgs", train._fit_wide_lbfgs), ("adamw", train._fit_wide_adamw)):
        wide = NgramLinear(num_features, num_classes)
        t0 = time.perf_counter()
        meta = fit(wide, config, problem, lambda _msg: None)
        with torch.no_grad():
            logits = {s: bag_matrix(bags[s], num_features) @ wide.bag.weight + wide.bias
                      for s in ("valid", "test")}  # fmt: skip
        fits[solver] = {"valid_loss": meta["valid_loss"], "logits": logits,
                        "seconds": time.perf_counter() - t0}  # fmt: skip
    weight, _ = train.choose_blend(fits["lbfgs"]["logits"]["valid"],
                                   fits["adamw"]["logits"]["valid"], labels["valid"])  # fmt: skip

    def accuracy(logits: torch.Tensor) -> float:
        return round(float((logits.argmax(-1) == labels["test"]).float().mean()), 4)

    picked = min(("lbfgs", "adamw"), key=lambda k: fits[k]["valid_loss"])
    test = {k: fits[k]["logits"]["test"] for k in fits}
    runs = {
        "lbfgs": {"accuracy": accuracy(test["lbfgs"]), "valid_loss": fits["lbfgs"]["valid_loss"]},
        "adamw": {"accuracy": accuracy(test["adamw"]), "valid_loss": fits["adamw"]["valid_loss"]},
        "pick": {"accuracy": accuracy(test[picked]), "picked": picked},
        "blend": {"accuracy": accuracy(weight * test["lbfgs"] + (1 - weight) * test["adamw"]),
                  "lbfgs_weight": weight},
    }  # fmt: skip
    for method, run in runs.items():
        print(f"seed {seed} {method}: {run}", file=sys.stderr, flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", help="a corpus file, or 'demo'")
    ap.add_argument("--format", default=None)
    ap.add_argument("--text-col", default=None)
    ap.add_argument("--label-col", default=None)
    ap.add_argument("--seeds", default="42,43,44")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    import torch

    torch.set_num_threads(1)  # as training does on these 2 cores (default_train_threads)
    t0, load_start = time.perf_counter(), compare_peers.loadavg()
    per_seed = [run_seed(args, seed) for seed in seeds]
    results = []
    for method in METHODS:
        accs = [runs[method]["accuracy"] for runs in per_seed]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        results.append({"method": method, "accuracy_mean": round(statistics.mean(accs), 4),
                        "accuracy_sd": round(sd, 4), "seeds": seeds,
                        "runs": [runs[method] for runs in per_seed]})  # fmt: skip
        print(f"{method:8s} {results[-1]['accuracy_mean']:.4f} ± {results[-1]['accuracy_sd']:.4f}")
    summary = {"corpus": args.corpus, "seeds": seeds, "results": results,
               "seconds": round(time.perf_counter() - t0, 1), "loadavg_start": load_start,
               "loadavg_end": compare_peers.loadavg()}  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
