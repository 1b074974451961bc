"""Prefect tasks: thin wrappers that read artifacts, call the pure functions and write artifacts.

Each task returns a small ``ArtifactRef`` dict (stage, key, path, digest), never frames or
tensors: cache records stay tiny and hash stably (see docs/ARCHITECTURE.md). A task body first
looks for an intact artifact under its key, so even without a cache record nothing is
recomputed; Prefect's record is what marks the run ``Cached`` in the UI and the summary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import torch
from filelock import FileLock
from prefect import get_run_logger, task
from safetensors.torch import load_file as load_tensors
from safetensors.torch import save_file as save_tensors

from zhflow.models.ensemble import MeanEnsemble, classifiers, uncalibrated
from zhflow.models.registry import build_model
from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.tasks import bundle as bundle_fns
from zhflow.tasks import catalog
from zhflow.tasks import cluster as cluster_fns
from zhflow.tasks import corpus as corpus_fns
from zhflow.tasks import encode as encode_fns
from zhflow.tasks import evaluate as eval_fns
from zhflow.tasks import plots as plot_fns
from zhflow.tasks import pretrain as pretrain_fns
from zhflow.tasks import segment as segment_fns
from zhflow.tasks import tables as table_fns
from zhflow.tasks import train as train_fns
from zhflow.tasks.cache import (
    STAGE_CODE,
    ArtifactPolicy,
    RelocatableJSON,
    StageCode,
    find_artifact,
    key_of,
)
from zhflow.tasks.errors import InputError
from zhflow.tasks.features import NgramFeaturizer, NgramSpec
from zhflow.tasks.storage import (
    ArtifactRef,
    artifact_ref,
    building_artifact,
    sha256_file,
    write_guard,
    write_json_atomic,
)


def artifact_task(stage: str, key_ignores: tuple[str, ...] = (), **task_options: Any) -> Callable:
    """Make a Prefect task cached on content (see tasks/cache.py) that returns an artifact ref.

    The task function is the root of the stage's code version; ``key_ignores`` are
    parameters it takes that must not enter the key (their content is in another one)."""

    def decorate(fn: Callable) -> Any:
        STAGE_CODE[stage] = StageCode(fn, key_ignores)
        return task(  # type: ignore[call-overload]  # options pass through **task_options
            fn,
            name=stage,
            cache_policy=ArtifactPolicy(stage=stage),
            result_serializer=RelocatableJSON(),  # data, never pickles; refs relative
            persist_result=True,
            tags=["zhflow", stage],
            **task_options,
        )

    return decorate


def materialize(stage: str, inputs: dict[str, Any], build: Callable[[Path], None]) -> ArtifactRef:
    """Return the intact artifact for ``inputs``, building it (under a file lock) if needed.

    The lock makes a second process on the same work dir wait for the first instead of
    building the same artifact twice; the rename into place keeps readers safe regardless.
    """
    workdir = inputs["workdir"]
    key, ref = find_artifact(workdir, stage, inputs)
    if ref is None:
        lock_path = Path(workdir) / catalog.LOCKS_DIR / f"{stage}-{key[:16]}.lock"
        with write_guard(lock_path):  # a read-only work dir: one line, not a traceback
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            held = FileLock(lock_path).acquire()
        with held:  # released on leaving
            ref = artifact_ref(workdir, stage, key)
            if ref is None:
                # Builders of this key hold this lock, so a temp folder of it is a dead
                # process's leftover (a killed run): remove it.
                for stale in (Path(workdir) / stage).glob(f".{key[:12]}.*.tmp"):
                    shutil.rmtree(stale, ignore_errors=True)
                with building_artifact(workdir, stage, key) as tmp:
                    build(tmp)
                ref = artifact_ref(workdir, stage, key)
    assert ref is not None
    return ref


def hash_source(paths: list[str]) -> str:
    """Content hash of the corpus files (every file of a folder), read in chunks."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(f.name.encode())
            h.update(sha256_file(f).encode() if f.exists() else b"missing")
    return h.hexdigest()


def _log(message: str) -> None:
    try:
        get_run_logger().info(message)
    except Exception:  # called through .fn() outside a run: no Prefect logger
        print(message)


# ------------------------------------------------------------------------------------------
# 1. corpus: read, validate, profile, split


@artifact_task(catalog.CORPUS.name, task_run_name="read-corpus")
def ingest_corpus(
    workdir: str,
    source: list[str],
    source_digest: str,
    fmt: str | None,
    text_col: str | None,
    label_col: str | None,
    id_col: str | None,
    encoding: str,
    seed: int,
    valid_frac: float,
    test_frac: float,
    dedupe: bool,
) -> ArtifactRef:
    inputs = dict(workdir=workdir, source=source, source_digest=source_digest, fmt=fmt,
                  text_col=text_col, label_col=label_col, id_col=id_col, encoding=encoding,
                  seed=seed, valid_frac=valid_frac, test_frac=test_frac,
                  dedupe=dedupe)  # fmt: skip

    def build(out: Path) -> None:
        prepared = corpus_fns.prepare_corpus(source, fmt, text_col, label_col, id_col, encoding,
                                             seed, valid_frac, test_frac, dedupe)  # fmt: skip
        prepared.split.write_parquet(out / catalog.CORPUS_PARQUET)
        write_json_atomic(out / catalog.PROFILE_JSON, prepared.profile)
        for note in prepared.notes:
            _log(f"corpus: {note}")

    return materialize(catalog.CORPUS.name, inputs, build)


# ------------------------------------------------------------------------------------------
# 2. segmentation


@artifact_task(
    catalog.TOKENS.name,
    key_ignores=("tokenizer",),  # the identity holds what decides the tokens; no paths
    task_run_name="segment-{tokenizer[engine]}-{tokenizer[mode]}-w{workers}",
)
def segment_corpus(
    workdir: str,
    corpus: ArtifactRef,
    tokenizer: dict,
    identity: dict,
    workers: int,
    cluster: dict | None = None,
) -> ArtifactRef:
    """The key holds ``identity`` (engine version, dictionary hashes...), never ``tokenizer``:
    equivalent specs (``char`` with or without ``hmm``) and a dictionary moved elsewhere share
    one artifact.

    ``workers`` local processes, or with ``cluster`` (``ClusterSpec.to_dict()``) shards on a
    Dask cluster; neither enters the key: the tokens are the same, byte for byte.
    """
    inputs = dict(workdir=workdir, corpus=corpus, tokenizer=tokenizer, identity=identity,
                  workers=workers, cluster=cluster)  # fmt: skip
    spec = segment_fns.TokenizerSpec.from_dict(tokenizer)

    def build(out: Path) -> None:
        corpus_file = corpus.file(catalog.CORPUS_PARQUET)
        frame = pl.read_parquet(corpus_file)
        if cluster:
            tokens = _segment_on_cluster(workdir, corpus_file, frame, tokenizer, cluster)
        else:
            tokens = segment_fns.segment_frame(frame, spec, workers, progress=_segment_progress)
        tokens.write_parquet(out / catalog.TOKENS_PARQUET)
        write_json_atomic(out / catalog.TOKENIZER_JSON, {"identity": identity})

    return materialize(catalog.TOKENS.name, inputs, build)


def _segment_on_cluster(
    workdir: str, corpus_file: Path, frame: pl.DataFrame, tokenizer: dict, cluster: dict
) -> pl.DataFrame:
    spec = cluster_fns.ClusterSpec(**cluster)
    scratch = cluster_fns.scratch_dir(
        Path(workdir), catalog.TOKENS.name
    )  # the work dir: shared storage
    try:
        parts = cluster_fns.segment_on_cluster(
            corpus_file, frame.height, tokenizer, spec, scratch, progress=_segment_progress
        )
        return segment_fns.assemble_token_shards(frame, parts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def scan_train_tokens(tokens: ArtifactRef) -> pl.LazyFrame:
    """The train split's token lists as a lazy scan: the tables stream over it."""
    return (
        pl.scan_parquet(tokens.file(catalog.TOKENS_PARQUET))
        .filter(pl.col("split") == "train")
        .select("tokens")
    )


# ------------------------------------------------------------------------------------------
# 3. n-gram and vocabulary tables (train split only)


@artifact_task(
    catalog.NGRAMS.name,
    task_run_name="ngrams-n{n_max}",
)
def build_ngram_table(
    workdir: str, tokens: ArtifactRef, n_max: int, wide: dict | None = None
) -> ArtifactRef:
    """The n-gram table (published), and with ``wide`` (an ``NgramSpec`` dict) the wide
    branch's features chosen from the train split: ``features.parquet`` + ``features.json``."""
    inputs = dict(workdir=workdir, tokens=tokens, n_max=n_max, wide=wide)

    def build(out: Path) -> None:
        table = table_fns.count_ngrams(scan_train_tokens(tokens), n_max)
        table.write_parquet(out / catalog.NGRAMS_PARQUET)
        if wide is not None:
            spec = NgramSpec.from_dict(wide)
            features = table_fns.select_ngram_features(scan_train_tokens(tokens), spec)
            features.write_parquet(out / catalog.FEATURES_PARQUET)
            write_json_atomic(out / catalog.FEATURES_JSON, {"spec": spec.to_dict(),
                              "num_features": features.height})  # fmt: skip
            _log(f"wide branch: {features.height:,} n-gram features {spec.to_dict()}")

    return materialize(catalog.NGRAMS.name, inputs, build)


def load_featurizer(ngrams: ArtifactRef) -> NgramFeaturizer | None:
    """The wide branch's featurizer of an n-gram artifact, or None if it has no features."""
    if not ngrams.file(catalog.FEATURES_PARQUET).is_file():
        return None
    spec = NgramSpec.from_dict(read_json(ngrams, catalog.FEATURES_JSON)["spec"])
    return table_fns.featurizer_from_table(
        pl.read_parquet(ngrams.file(catalog.FEATURES_PARQUET)), spec
    )


@artifact_task(catalog.VOCAB.name, task_run_name="vocab-min{min_freq}-max{max_vocab}")
def build_vocab_table(
    workdir: str, tokens: ArtifactRef, min_freq: int, max_vocab: int
) -> ArtifactRef:
    inputs = dict(workdir=workdir, tokens=tokens, min_freq=min_freq, max_vocab=max_vocab)

    def build(out: Path) -> None:
        train = scan_train_tokens(tokens)
        vocab = table_fns.build_vocab(train, min_freq, max_vocab)
        vocab.write_parquet(out / catalog.VOCAB_PARQUET)
        write_json_atomic(out / catalog.SUMMARY_JSON, table_fns.summarize_vocab(vocab, train))

    return materialize(catalog.VOCAB.name, inputs, build)


# ------------------------------------------------------------------------------------------
# 4. encoding


@artifact_task(
    catalog.ENCODED.name,
    task_run_name="encode-len{max_len}",
)
def encode_corpus(
    workdir: str,
    tokens: ArtifactRef,
    vocab: ArtifactRef,
    max_len: int,
    ngrams: ArtifactRef | None = None,
) -> ArtifactRef:
    """Token ids per split; with ``ngrams`` holding wide features, each text's n-gram bag too."""
    inputs = dict(workdir=workdir, tokens=tokens, vocab=vocab, max_len=max_len, ngrams=ngrams)

    def build(out: Path) -> None:
        frame = pl.read_parquet(tokens.file(catalog.TOKENS_PARQUET))
        index = table_fns.vocab_to_index(pl.read_parquet(vocab.file(catalog.VOCAB_PARQUET)))
        featurizer = load_featurizer(ngrams) if ngrams is not None else None
        label_map = encode_fns.build_label_map(frame["label"].to_list())
        wide_features = featurizer.num_features if featurizer else 0
        meta: dict[str, Any] = {"max_len": max_len, "vocab_size": len(index), "splits": {},
                                "wide_features": wide_features}  # fmt: skip
        for split, part in frame.partition_by("split", as_dict=True, maintain_order=True).items():
            name = split[0] if isinstance(split, tuple) else split
            token_lists = part["tokens"].to_list()
            ids, lengths = encode_fns.encode_tokens(token_lists, index, max_len)
            labels = encode_fns.encode_labels(part["label"].to_list(), label_map)
            bags = encode_fns.wide_bags(featurizer, token_lists) if featurizer else None
            encode_fns.save_split(out / catalog.split_file(name), ids, lengths, labels, bags)
            meta["splits"][name] = {"rows": len(lengths), "truncated": int((
                part["tokens"].list.len() > max_len).sum())}  # fmt: skip
        encode_fns.save_label_map(out / catalog.LABELS_JSON, label_map)
        write_json_atomic(out / catalog.META_JSON, meta)

    return materialize(catalog.ENCODED.name, inputs, build)


def read_json(ref: ArtifactRef, name: str) -> Any:
    return json.loads(ref.file(name).read_text(encoding="utf-8"))


def load_encoded_split(encoded: ArtifactRef, split: str) -> dict[str, torch.Tensor]:
    path = encoded.file(catalog.split_file(split))
    if not path.exists():
        raise InputError(f"the corpus has no {split} rows; add rows or lower the split fractions")
    return load_tensors(str(path))


# ------------------------------------------------------------------------------------------
# 4b. optional in-domain pretraining (word2vec over the train split + unlabeled text)


@artifact_task(
    catalog.EMBEDDINGS.name,
    key_ignores=("tokenizer",),  # as for tokens: the identity, not the spec's paths
    task_run_name="pretrain-word2vec-d{dim}",
)
def pretrain_embeddings(
    workdir: str,
    corpus: ArtifactRef,
    tokens: ArtifactRef,
    vocab: ArtifactRef,
    unlabeled: list[str],
    unlabeled_digest: str,
    tokenizer: dict,
    identity: dict,
    dim: int,
    seed: int,
    workers: int,
) -> ArtifactRef:
    """Embeddings aligned to the vocabulary ids: ``embeddings.safetensors`` (vectors, found)."""
    inputs = dict(workdir=workdir, corpus=corpus, tokens=tokens, vocab=vocab,
                  unlabeled=unlabeled, unlabeled_digest=unlabeled_digest, tokenizer=tokenizer,
                  identity=identity, dim=dim, seed=seed, workers=workers)  # fmt: skip

    def build(out: Path) -> None:
        frame = pl.read_parquet(tokens.file(catalog.TOKENS_PARQUET))
        train_docs = frame.filter(pl.col("split") == "train")["tokens"].to_list()
        held_out = pl.read_parquet(corpus.file(catalog.CORPUS_PARQUET)).filter(
            pl.col("split") != "train")["text"].to_list()  # fmt: skip
        texts, dropped = unlabeled_texts(unlabeled, held_out)
        spec = segment_fns.TokenizerSpec.from_dict(tokenizer)
        extra = segment_fns.segment_texts(texts, spec, workers=workers)
        vectors = pretrain_fns.train_word_vectors(train_docs + extra, dim, seed)
        tokens_by_id = pl.read_parquet(vocab.file(catalog.VOCAB_PARQUET))["token"].to_list()
        matrix, found = pretrain_fns.align_to_vocab(vectors, tokens_by_id)
        save_tensors({"vectors": torch.from_numpy(matrix), "found": torch.from_numpy(found)},
                     str(out / catalog.EMBEDDINGS_SAFETENSORS))  # fmt: skip
        summary = {"train_texts": len(train_docs), "unlabeled_texts": len(texts),
                   "unlabeled_dropped_as_valid_or_test": dropped,
                   "vocab_found": int(found.sum()), "vocab_size": len(tokens_by_id),
                   "spec": pretrain_fns.PretrainSpec().to_dict()}  # fmt: skip
        write_json_atomic(out / catalog.SUMMARY_JSON, summary)
        _log(f"pretrain: word2vec over {len(train_docs):,} train + {len(texts):,} unlabeled "
             f"texts ({dropped:,} dropped: identical to a valid/test text); "
             f"{int(found.sum()):,} of {len(tokens_by_id):,} vocabulary rows")  # fmt: skip

    return materialize(catalog.EMBEDDINGS.name, inputs, build)


def unlabeled_texts(paths: list[str], held_out: list[str]) -> tuple[list[str], int]:
    """The non-empty texts of ``paths``, minus those identical (normalised) to a held-out one."""
    banned = {segment_fns.normalize_text(t) for t in held_out}
    texts, dropped = [], 0
    for path in paths:
        found = 0
        for chunk in corpus_fns.read_texts_in_chunks(path):
            for text in chunk["text"].to_list():
                if not text or not text.strip():
                    continue
                found += 1
                if segment_fns.normalize_text(text) in banned:
                    dropped += 1
                    continue
                texts.append(text)
        if not found:  # blank lines only: as empty as a file of no bytes
            raise InputError(f"{path}: --unlabeled file has no non-empty text")
    return texts, dropped


def load_embeddings(embeddings: ArtifactRef) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_tensors(str(embeddings.file(catalog.EMBEDDINGS_SAFETENSORS)))
    return tensors["vectors"], tensors["found"]


# ------------------------------------------------------------------------------------------
# 5. training and evaluation


@artifact_task(
    catalog.MODEL.name,
    task_run_name="train-{model_config[cell]}-h{model_config[hidden_size]}"
    "-e{train_config[epochs]}-s{train_config[seed]}",
)
def train_classifier(
    workdir: str,
    encoded: ArtifactRef,
    model_config: dict,
    train_config: dict,
    embeddings: ArtifactRef | None = None,
) -> ArtifactRef:
    """``embeddings``: a pretrain artifact whose vectors initialise the embedding table."""
    inputs = dict(workdir=workdir, encoded=encoded, model_config=model_config,
                  train_config=train_config, embeddings=embeddings)  # fmt: skip
    # Checkpoints live outside the artifact (which appears only when training is done), keyed
    # like it, so a killed run resumes from its last finished epoch.
    checkpoints = Path(workdir) / catalog.CHECKPOINTS_DIR / key_of(catalog.MODEL.name, inputs)

    def build(out: Path) -> None:
        meta = read_json(encoded, catalog.META_JSON)
        labels = encode_fns.load_label_map(encoded.file(catalog.LABELS_JSON))
        try:
            cfg = RNNConfig(vocab_size=meta["vocab_size"], num_classes=len(labels),
                            wide_features=meta.get("wide_features", 0), **model_config)  # fmt: skip
        except ValueError as exc:
            hint = " (--tokenizer char or --max-vocab)" if "one-hot" in str(exc) else ""
            raise InputError(f"{exc}{hint}") from None
        result = train_fns.train_model(
            cfg,
            train_fns.TrainConfig.from_dict(train_config),
            load_encoded_split(encoded, "train"),
            load_encoded_split(encoded, "valid"),
            on_epoch=EPOCH_HOOKS.notify,
            checkpoint_dir=checkpoints,
            log=_log,
            init_embeddings=load_embeddings(embeddings) if embeddings else None,
        )
        save_tensors(result.state_dict, str(out / catalog.WEIGHTS_SAFETENSORS))
        write_json_atomic(out / catalog.MODEL_CONFIG_JSON, cfg.to_dict())
        write_json_atomic(out / catalog.HISTORY_JSON, {
            "epochs": result.history, "best_epoch": result.best_epoch,
            "best_valid_macro_f1": result.best_valid_macro_f1, "seconds": result.seconds,
            "resumed_from_epoch": result.resumed_from_epoch, **result.meta})  # fmt: skip

    ref = materialize(catalog.MODEL.name, inputs, build)
    shutil.rmtree(checkpoints, ignore_errors=True)  # the finished artifact supersedes them
    return ref


def load_trained_model(model: ArtifactRef | list[ArtifactRef]) -> RNNClassifier | MeanEnsemble:
    """One trained model, or (a list of refs) the seed ensemble of them."""
    if isinstance(model, list):
        members = [load_trained_model(m) for m in model]
        if len(members) == 1:
            return members[0]
        return MeanEnsemble([m for m in members if isinstance(m, RNNClassifier)]).eval()
    cfg = RNNConfig.from_dict(read_json(model, catalog.MODEL_CONFIG_JSON))
    net = build_model(cfg)
    net.load_state_dict(load_tensors(str(model.file(catalog.WEIGHTS_SAFETENSORS))))
    return net.eval()


@artifact_task(
    catalog.METRICS.name,
    task_run_name="evaluate-test",
)
def evaluate_classifier(
    workdir: str,
    model: ArtifactRef | list[ArtifactRef],
    encoded: ArtifactRef,
    font: dict,
    split_report: dict | None = None,
) -> ArtifactRef:
    """``split_report`` (e.g. ``cross_split_duplicate_texts``) is copied into metrics.json, so
    the figure travels with the evidence that its test texts were never trained on.
    ``font`` is ``plots.plot_font()``: a new font redraws the plots of a cached run."""
    inputs = dict(workdir=workdir, model=model, encoded=encoded, font=font,
                  split_report=split_report)  # fmt: skip
    if font != plot_fns.plot_font():  # the key must name the font the plots are drawn with
        raise ValueError(f"font {font} is not the plot font {plot_fns.plot_font()}")

    def build(out: Path) -> None:
        labels = encode_fns.load_label_map(encoded.file(catalog.LABELS_JSON))
        test = load_encoded_split(encoded, "test")
        net = load_trained_model(model)
        probs = train_fns.predict_proba(
            net, test["ids"], test["lengths"],
            device=train_fns.pick_device("auto"), bags=train_fns.split_bags(test))  # fmt: skip
        y_true = test["labels"].numpy()
        metrics = eval_fns.compute_metrics(y_true, probs.argmax(axis=1), labels)
        metrics["split"] = "test"
        metrics.update(split_report or {})
        metrics["calibration"] = _calibration_report(net, probs, y_true, out, test)
        metrics["ensemble"] = len(classifiers(net))
        write_json_atomic(out / catalog.METRICS_JSON, metrics)
        (out / catalog.CONFUSION_MD).write_text(
            eval_fns.format_confusion_markdown(metrics), "utf-8"
        )
        history = read_json(model[0] if isinstance(model, list) else model, catalog.HISTORY_JSON)
        plot_fns.plot_training_curve(history["epochs"], out / plot_fns.TRAINING_CURVE,
                                     history.get("best_epoch"))  # fmt: skip
        plot_fns.plot_confusion(metrics["confusion_matrix"], labels, out / plot_fns.CONFUSION_PNG)
        _log(f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")

    return materialize(catalog.METRICS.name, inputs, build)


def _bundle_features(
    ngrams: ArtifactRef | None, net: RNNClassifier | MeanEnsemble
) -> tuple[pl.DataFrame, dict] | None:
    if net.wide is None:
        return None
    if ngrams is None or not ngrams.file(catalog.FEATURES_PARQUET).is_file():
        raise InputError("the model has a wide n-gram branch but no n-gram features were given")
    spec = read_json(ngrams, catalog.FEATURES_JSON)["spec"]
    return pl.read_parquet(ngrams.file(catalog.FEATURES_PARQUET)), spec


def _calibration_report(
    net: RNNClassifier | MeanEnsemble, probs: Any, y_true: Any, out: Path, test: dict
) -> dict[str, Any]:
    """ECE and log-loss on the test split with and without calibration (the fitted mix and
    temperature), and the reliability diagram."""
    members = classifiers(net)
    with uncalibrated(net):
        raw = train_fns.predict_proba(net, test["ids"], test["lengths"],
                                      bags=train_fns.split_bags(test))  # fmt: skip
    before = eval_fns.expected_calibration_error(raw, y_true)
    after = eval_fns.expected_calibration_error(probs, y_true)
    plot_fns.plot_reliability(eval_fns.reliability_bins(raw, y_true),
                              eval_fns.reliability_bins(probs, y_true),
                              out / plot_fns.RELIABILITY_PNG, before, after)  # fmt: skip
    temperatures = [float(m.temperature) for m in members]
    report: dict[str, Any] = {"temperature": temperatures[0], "ece_before": before,
                              "ece_after": after, "bins": eval_fns.ECE_BINS,
                              "log_loss_before": eval_fns.log_loss(raw, y_true),
                              "log_loss_after": eval_fns.log_loss(probs, y_true)}  # fmt: skip
    if net.wide is not None:
        report["mix"] = float(members[0].mix)
    if len(members) > 1:
        report["members"] = [{"temperature": t, **({"mix": float(m.mix)} if m.wide else {})}
                             for t, m in zip(temperatures, members, strict=True)]  # fmt: skip
    return report


@artifact_task(catalog.BUNDLE.name, task_run_name="bundle")
def package_bundle(
    workdir: str,
    model: ArtifactRef | list[ArtifactRef],
    vocab: ArtifactRef,
    encoded: ArtifactRef,
    metrics: ArtifactRef,
    tokenizer: dict,
    ngrams: ArtifactRef | None = None,
    training: dict | None = None,
) -> ArtifactRef:
    """``ngrams``: the n-gram artifact whose features the model's wide branch reads.
    ``training`` (e.g. the corpus digest) is recorded in the bundle's config with the
    packaging date and the zhflow version, for ``zhflow info``."""
    inputs = dict(workdir=workdir, model=model, vocab=vocab, encoded=encoded, metrics=metrics,
                  tokenizer=tokenizer, ngrams=ngrams, training=training)  # fmt: skip

    def build(out: Path) -> None:
        net = load_trained_model(model)
        bundle_fns.write_bundle(
            out,
            net.state_dict(),
            net.config,
            segment_fns.TokenizerSpec.from_dict(tokenizer),
            pl.read_parquet(vocab.file(catalog.VOCAB_PARQUET)),
            encode_fns.load_label_map(encoded.file(catalog.LABELS_JSON)),
            max_len=read_json(encoded, catalog.META_JSON)["max_len"],
            metrics=read_json(metrics, catalog.METRICS_JSON),
            features=_bundle_features(ngrams, net),
            extra={"zhflow_version": _zhflow_version(), "ensemble": len(classifiers(net)),
                   "training": {
                **(training or {}),
                "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }},
        )  # fmt: skip
        for name in (plot_fns.TRAINING_CURVE, plot_fns.CONFUSION_PNG, plot_fns.RELIABILITY_PNG):
            if metrics.file(name).is_file():
                shutil.copyfile(metrics.file(name), out / name)

    return materialize(catalog.BUNDLE.name, inputs, build)


def _zhflow_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("zhflow")
    except importlib.metadata.PackageNotFoundError:
        return None


class _EpochHooks:
    """Lets a flow watch training progress (terminal, Prefect artifacts) without the task
    knowing who listens. Hooks are process-local callables, never part of the cache key."""

    def __init__(self) -> None:
        self.hooks: list[Callable[[dict], None]] = []

    def notify(self, record: dict) -> None:
        for hook in list(self.hooks):
            hook(record)


EPOCH_HOOKS = _EpochHooks()
#: Segmentation progress: records ``{"done": texts, "total": texts}`` after each shard.
SEGMENT_HOOKS = _EpochHooks()


def _segment_progress(done: int, total: int) -> None:
    SEGMENT_HOOKS.notify({"done": done, "total": total})
