"""``zhflow tune``: model selection as a flow. Optuna (TPE sampler, median or successive-halving
pruning) searches ``zhflow run``'s settings on the validation split; each trial is a Prefect
task run named after its settings, run in parallel on a task runner (local processes, or a
Dask cluster); the winner alone is evaluated on the test split and packaged as an ordinary
bundle, by ``train_pipeline`` itself, so the printed ``zhflow run`` line reproduces it.

- The study lives in ``<workdir>/tune/studies.db`` (SQLite): a killed tune resumes where it
  stopped, and a rerun with more ``--trials`` continues the same study (its name hashes the
  corpus, fixed flags, space, metric, pruner and seed). A trial a killed tune left running is
  marked ``interrupted`` and tried again with the same settings (its training resumes from its
  last checkpointed epoch); it does not count towards ``--trials``.
- Data stages are shared: trials that agree on tokenizer, vocabulary, n-gram and length
  settings use one prepared data set (``train_pipeline(until="encode")``, once per setting),
  and the corpus is read once. A trial trains with ``zhflow.tasks.stages.train_classifier``'s own
  body, so its weights are the very artifact ``zhflow run`` with its settings would make.
- The test split: segmented and encoded with the rest (the shared data stages), but no model
  is scored on it until the winner is chosen; then once (tests/test_tune.py asserts it).
- The first trial of a new study is ``zhflow run``'s defaults (where the space allows them):
  the search starts from the baseline, and the leaderboard shows what tuning gained.
"""

from __future__ import annotations

import inspect
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from zhflow.flows import artifacts
from zhflow.flows.pipeline import (
    _Runner,
    build_wide_spec,
    resolve_corpus,
    train_pipeline,
    training_configs,
)
from zhflow.models.rnn import RNNConfig
from zhflow.tasks import catalog, stages
from zhflow.tasks import tune as tune_fns
from zhflow.tasks.cache import as_ref
from zhflow.tasks.cluster import ClusterSpec
from zhflow.tasks.defaults import RUN, TUNE
from zhflow.tasks.errors import InputError, ZhflowError
from zhflow.tasks.segment import TokenizerSpec, default_workers
from zhflow.tasks.storage import ArtifactRef, artifact_ref
from zhflow.tasks.train import TrainConfig, default_train_threads

TUNE_DIR = "tune"
STUDY_DB = "studies.db"
KEY_TUNE_LEADERBOARD = "zhflow-tune-leaderboard"
KEY_TUNE_PROGRESS = "zhflow-tune-progress"
KEY_TUNE_REPORT = "zhflow-tune-report"


def pipeline_defaults() -> dict[str, Any]:
    """``train_pipeline``'s defaults (= ``zhflow run``'s): the types a space is checked
    against, and every setting a trial does not vary."""
    params = inspect.signature(train_pipeline.fn).parameters.values()
    return {p.name: p.default for p in params}


#: The settings of a trial's model config and of its train config (``training_configs``).
MODEL_SETTINGS = ("model", "embedding_dim", "hidden", "layers", "bidirectional", "dropout",
                  "input", "ngram_features")  # fmt: skip
TRAIN_SETTINGS = ("epochs", "batch_size", "lr", "seed", "amp")
#: The vocabulary a space's model configs are checked with: the smallest a trial can have
#: (``<pad>``, ``<unk>``, one token; ``--max-vocab``'s minimum). The real one comes from the data.
CHECK_VOCAB_SIZE = 3


def trial_configs(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and train configs (as the training stage takes them) of a trial's settings."""
    return training_configs(**{k: settings[k] for k in MODEL_SETTINGS + TRAIN_SETTINGS})


def _check_tokenizer(s: Mapping[str, Any]) -> None:
    TokenizerSpec(engine=s["tokenizer"], mode=s["mode"], hmm=s["hmm"], user_dict=s["user_dict"],
                  stopwords=s["stopwords"], normalize=s["normalize"])  # fmt: skip


def _check_wide(s: Mapping[str, Any]) -> None:
    if s["wide"]:
        build_wide_spec(s["tokenizer"], s["wide_word_ngrams"], s["wide_char_ngrams"],
                        s["wide_min_df"])  # fmt: skip


def _check_model(s: Mapping[str, Any]) -> None:
    RNNConfig(vocab_size=CHECK_VOCAB_SIZE, num_classes=2, **trial_configs(s)[0])


def _check_train(s: Mapping[str, Any]) -> None:
    TrainConfig.from_dict(trial_configs(s)[1])


def _flag_bound(param: click.Parameter) -> tune_fns.Bound:
    """A value's check by a ``zhflow run`` option's own type (so the two cannot disagree),
    worded as a range's bounds where it is outside them (``0 is below 1``)."""
    kind = param.type

    def bound(value: Any) -> str | None:
        try:
            kind.convert(value, param, None)
        except click.BadParameter as exc:
            if isinstance(kind, click.IntRange | click.FloatRange):
                why = tune_fns.out_of_range(value, kind.min, kind.max, kind.min_open,
                                            kind.max_open)  # fmt: skip
                if why is not None:
                    return why
            return exc.message.rstrip(".")  # "1 is neither 0 (off) nor >= 2", a choice...
        return None

    return bound


def space_rules() -> tune_fns.Rules:
    """What a space's values must pass, from what ``zhflow run`` takes: each value its flag's
    range or choices (the same option objects: the bounds cannot drift apart), then the
    configs a trial builds (tokenizer, wide n-grams, model, training) for every combination."""
    from zhflow.flows.cli import run

    bounds = {p.name: _flag_bound(p) for p in run.params if p.name in tune_fns.TUNABLE}
    checks: list[tune_fns.Check] = [
        (("tokenizer", "mode", "hmm"), _check_tokenizer),
        (("wide", "tokenizer", "wide_word_ngrams", "wide_char_ngrams", "wide_min_df"),
         _check_wide),
        (MODEL_SETTINGS, _check_model),
        (TRAIN_SETTINGS, _check_train),
    ]  # fmt: skip
    return tune_fns.Rules(bounds=bounds, checks=checks)


def default_parallel() -> int:
    """Trials at once on this machine: the cores over each trial's torch threads."""
    cores = default_workers()
    return max(1, cores // default_train_threads())


def storage_url(root: Path) -> str:
    return f"sqlite:///{root / TUNE_DIR / STUDY_DB}"


def open_storage(url: str) -> Any:
    import optuna

    # Trials report epochs from other processes while the flow asks and tells: wait for
    # SQLite's write lock rather than fail on it.
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the flow logs each trial itself


# ------------------------------------------------------------------------------------------
# one trial (a task run; in a worker process, a thread, or on a Dask worker)


def validation_scores(model: ArtifactRef, encoded: ArtifactRef) -> dict[str, float]:
    """The trained model's (calibrated, mixed) accuracy and macro-F1 on the valid split."""
    from zhflow.tasks import train as train_fns
    from zhflow.tasks.encode import load_label_map
    from zhflow.tasks.evaluate import macro_f1

    valid = stages.load_encoded_split(encoded, "valid")
    labels = load_label_map(encoded.file(catalog.LABELS_JSON))
    net = stages.load_trained_model(model)
    probs = train_fns.predict_proba(net, valid["ids"], valid["lengths"],
                                    bags=train_fns.split_bags(valid))  # fmt: skip
    y_true, preds = valid["labels"].numpy(), probs.argmax(axis=1)
    return {"accuracy": float((preds == y_true).mean()),
            "macro_f1": macro_f1(y_true, preds, len(labels))}  # fmt: skip


def _drop_checkpoints(workdir: str, inputs: dict[str, Any]) -> None:
    """A pruned or failed trial's epoch checkpoints (a killed one keeps them, to resume)."""
    import shutil

    from zhflow.tasks.cache import key_of

    key = key_of(catalog.MODEL.name, inputs)
    shutil.rmtree(Path(workdir) / catalog.CHECKPOINTS_DIR / key, ignore_errors=True)


def pruning_hook(live: Any, metric: str, last: dict[str, Any]) -> Any:
    """An epoch listener for ``zhflow.tasks.stages.EPOCH_HOOKS``: reports each epoch's validation
    score to the trial ``live`` (an ``optuna.Trial``) and raises ``optuna.TrialPruned`` when
    the pruner says stop. Only for epochs trained by this thread (trials may share a process).
    ``last`` receives the last epoch and score."""
    import optuna

    me = threading.get_ident()

    def report(record: dict) -> None:
        if threading.get_ident() != me:
            return  # another trial's epoch
        score = tune_fns.epoch_score(record, metric)
        last.update(epoch=record["epoch"], value=score)
        live.report(score, record["epoch"])
        if live.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {record['epoch']} "
                                     f"(validation {metric} {score:.4f})")  # fmt: skip

    return report


@task(
    name="tune-trial",
    task_run_name="trial-{number}: {label}",
    cache_policy=NO_CACHE,  # the model stage inside is cached on content already
    persist_result=False,
    tags=["zhflow", "tune"],
)
def run_trial(
    number: int,
    label: str,
    workdir: str,
    encoded: dict,
    model_config: dict,
    train_config: dict,
    storage: str,
    study: str,
    trial_id: int,
    metric: str,
    pruner: str,
) -> dict[str, Any]:
    """Train one trial's model, reporting each epoch's validation score to the study so the
    pruner can stop it; return its validation scores (or where it was pruned)."""
    import optuna

    _quiet_optuna()
    loaded = optuna.load_study(study_name=study, storage=open_storage(storage),
                               pruner=tune_fns.make_pruner(pruner))  # fmt: skip
    last: dict[str, Any] = {}
    report = pruning_hook(optuna.trial.Trial(loaded, trial_id), metric, last)
    # ``encoded`` travels as a JSON object (a task parameter); the stages take an ArtifactRef.
    inputs = dict(workdir=workdir, encoded=as_ref(encoded), model_config=model_config,
                  train_config=train_config, embeddings=None)  # fmt: skip
    stages.EPOCH_HOOKS.hooks.append(report)
    started = time.perf_counter()
    try:
        model = stages.train_classifier.fn(**inputs)
    except optuna.TrialPruned as exc:
        _drop_checkpoints(workdir, inputs)
        return {"pruned": True, "message": str(exc), "epochs": last.get("epoch"),
                "value": last.get("value"), "seconds": time.perf_counter() - started}  # fmt: skip
    except BaseException:
        _drop_checkpoints(workdir, inputs)
        raise
    finally:
        stages.EPOCH_HOOKS.hooks.remove(report)
    scores = validation_scores(model, as_ref(encoded))
    history = stages.read_json(model, catalog.HISTORY_JSON)
    return {
        "pruned": False,
        "value": scores[metric],
        **{f"valid_{k}": v for k, v in scores.items()},
        "epochs": len(history["epochs"]),
        "best_epoch": history["best_epoch"],
        "seconds": time.perf_counter() - started,
        "model": model.path,
    }


# ------------------------------------------------------------------------------------------
# the flow


def tune_run_name() -> str:
    params = flow_run.parameters
    corpus = params.get("corpus")
    name = Path(corpus if isinstance(corpus, str) else (corpus or ["demo"])[0]).stem or "demo"
    return f"tune-{name}-{params.get('metric', 'macro_f1')}"


@contextmanager
def _trial_runner(parallel: int, cluster: ClusterSpec | None) -> Iterator[Any]:
    """Dask (``--dask-address``/``--workers``), else ``parallel`` worker processes; one trial
    at a time runs in a thread of this process (no process start-up)."""
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from zhflow.tasks import cluster as cluster_fns

    if cluster is not None:
        with cluster_fns.open_task_runner(cluster) as dask_runner:
            yield dask_runner
        return
    runner: Any = (ThreadPoolTaskRunner(max_workers=1) if parallel == 1
                   else ProcessPoolTaskRunner(max_workers=parallel))  # fmt: skip
    with cluster_fns.workers_report_here(), runner:
        yield runner


@contextmanager
def _only_tune(root: Path, name: str) -> Iterator[None]:
    """One tune per study at a time: a second would mark the first's trials interrupted."""
    from filelock import FileLock, Timeout

    lock_path = root / TUNE_DIR / f"{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise InputError(f"{root}: another zhflow tune is running this study; wait for it or "
                         "use another --workdir") from None  # fmt: skip
    try:
        yield
    finally:
        lock.release()


def _recover_interrupted(study: Any) -> int:
    """Trials a killed tune left running: mark them failed without an error (= interrupted,
    not counted) and queue their settings again. Returns how many."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    return len(stale)


def _baseline(dims: list[tune_fns.Dimension], defaults: dict[str, Any]) -> dict[str, Any]:
    """``zhflow run``'s defaults for the searched settings a space allows them for."""
    out: dict[str, Any] = {}
    for dim in dims:
        value = defaults[dim.name]
        if dim.constant or not dim.applies({**defaults, **out}):
            continue
        if dim.choices is not None:
            fits = value in dim.choices
        else:
            fits = dim.low is not None and dim.high is not None and dim.low <= value <= dim.high
        if fits:
            out[dim.name] = value
    return out


class _Search:
    """The study, the shared data sets, and the trials in flight."""

    def __init__(self, study: Any, dims: list, fixed: dict, defaults: dict, metric: str,
                 pruner: str, root: Path) -> None:  # fmt: skip
        self.study, self.dims, self.fixed, self.defaults = study, dims, fixed, defaults
        self.metric, self.pruner, self.root = metric, pruner, root
        self.data: dict[str, dict] = {}  # data settings (JSON) -> encoded ref
        self.data_runs: list[dict[str, Any]] = []
        self.done: queue.Queue[int] = queue.Queue()
        self.pending: dict[int, tuple[Any, Any]] = {}  # trial number -> (future, trial)
        self.started = 0

    def settings(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return {**self.defaults, **self.fixed, **sampled}

    def encoded(self, sampled: dict[str, Any]) -> dict:
        import json

        wanted = tune_fns.data_settings(self.settings(sampled))
        key = json.dumps(wanted, sort_keys=True)
        if key not in self.data:
            summary = train_pipeline(**self.fixed, **wanted, until=catalog.ENCODED.name)
            self.data_runs.append({"settings": wanted, "tasks": summary["tasks"]})
            path = Path(summary["artifacts"]["encoded"])
            ref = artifact_ref(self.root, catalog.ENCODED.name, path.name)
            if ref is None:
                raise ZhflowError(f"{path}: the encoded data set vanished")
            self.data[key] = asdict(ref)
        return self.data[key]

    def submit(self, runner: Any) -> None:
        trial = self.study.ask()
        sampled = tune_fns.suggest(trial, self.dims)
        # Named after what it varies (the space's constants are the same in every trial).
        label = tune_fns.describe({k: v for k, v in sampled.items() if k in trial.params})
        label = label or "defaults"
        trial.set_user_attr("label", label)
        trial.set_user_attr("settings", sampled)
        self.started += 1
        try:
            encoded = self.encoded(sampled)
            model_config, train_config = trial_configs(self.settings(sampled))
        except Exception as exc:  # this trial's data settings do not work: the search goes on
            self.fail(trial, exc)
            return
        future = runner.submit(run_trial, parameters=dict(
            number=trial.number, label=label, workdir=str(self.root), encoded=encoded,
            model_config=model_config, train_config=train_config,
            storage=storage_url(self.root), study=self.study.study_name,
            trial_id=trial._trial_id,  # Optuna has no public number -> id lookup
            metric=self.metric,
            pruner=self.pruner))  # fmt: skip
        future.add_done_callback(lambda _f, n=trial.number: self.done.put(n))
        self.pending[trial.number] = (future, trial)

    def fail(self, trial: Any, exc: BaseException) -> None:
        from optuna.trial import TrialState

        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        trial.set_user_attr("error", message)
        self.study.tell(trial, state=TrialState.FAIL)
        _log(f"trial {trial.number} failed: {message}", warning=True)

    def collect(self) -> None:
        """Wait for a trial in flight to end; tell the study how it went."""
        from optuna.trial import TrialState

        number = self.done.get()
        future, trial = self.pending.pop(number)
        try:
            result = future.result()
        except Exception as exc:
            self.fail(trial, exc)
            return
        for name in ("epochs", "seconds", "valid_accuracy", "valid_macro_f1", "best_epoch"):
            if result.get(name) is not None:
                trial.set_user_attr(name, result[name])
        if result["pruned"]:
            self.study.tell(trial, state=TrialState.PRUNED)
            _log(f"trial {number} {result['message']}")
            return
        self.study.tell(trial, result["value"])
        _log(f"trial {number}: validation {self.metric} {result['value']:.4f} "
             f"({trial.user_attrs['label']}; {result['seconds']:.1f} s)")  # fmt: skip


def _log(message: str, warning: bool = False) -> None:
    try:
        logger: Any = get_run_logger()
    except Exception:
        import logging

        logger = logging.getLogger("zhflow.tune")
    (logger.warning if warning else logger.info)(message)


def choose_winner(trials: list[Any], timed_out: float | None = None) -> Any:
    """The completed trial with the best validation score (ties: the earlier one).
    ``timed_out``: the ``--timeout`` that stopped the search starting trials, if one did."""
    ranked = tune_fns.ranked(trials)
    if not ranked or tune_fns.state_name(ranked[0]) != "complete":
        raise ZhflowError(tune_fns.no_winner(trials, timed_out))
    return ranked[0]


@flow(name="zhflow-tune", flow_run_name=tune_run_name, log_prints=True)
def tune_pipeline(
    corpus: str | list[str] | None = None,
    fmt: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    id_col: str | None = None,
    encoding: str = RUN.encoding,
    workdir: str = RUN.workdir,
    user_dict: str | None = None,
    stopwords: str | None = None,
    normalize: bool = RUN.normalize,
    dedupe: bool = RUN.dedupe,
    seed: int = RUN.seed,
    valid_frac: float = RUN.valid_frac,
    test_frac: float = RUN.test_frac,
    trials: int = TUNE.trials,
    timeout: float | None = None,
    space: str | dict[str, Any] | None = None,
    metric: str = TUNE.metric,
    pruner: str = TUNE.pruner,
    parallel: int | None = None,
    processes: int | None = None,
    dask_address: str | None = None,
    dask_workers: int | None = None,
) -> dict[str, Any]:
    """Search ``space`` (a YAML/JSON file, a mapping, or the default space) for ``trials``
    trials in all (this study's earlier trials count); train, test and package the winner."""
    import optuna

    t0 = time.perf_counter()
    if metric not in tune_fns.METRICS:
        raise InputError(f"--metric must be one of {', '.join(tune_fns.METRICS)}, got {metric!r}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise InputError(f"--trials must be a positive integer, got {trials!r}")
    tune_fns.make_pruner(pruner)  # checks the name
    cluster = ClusterSpec.from_params(dask_address, dask_workers)
    parallel = parallel or dask_workers or default_parallel()
    defaults = pipeline_defaults()
    if isinstance(space, str):
        dims = tune_fns.load_space(space, defaults, space_rules())
    else:
        dims = tune_fns.parse_space(space or tune_fns.DEFAULT_SPACE, defaults, rules=space_rules())
    root = Path(workdir).expanduser().resolve()
    flags = dict(
        fmt=fmt,
        text_col=text_col,
        label_col=label_col,
        id_col=id_col,
        encoding=encoding,
        workdir=str(root),
        user_dict=user_dict,
        stopwords=stopwords,
        normalize=normalize,
        dedupe=dedupe,
        seed=seed,
    )  # as given: for the run line
    source, fmt = resolve_corpus(corpus, fmt)
    fixed: dict[str, Any] = dict(corpus=source, fmt=fmt, text_col=text_col, label_col=label_col,
                                 id_col=id_col, encoding=encoding, workdir=str(root),
                                 user_dict=user_dict, stopwords=stopwords, normalize=normalize,
                                 dedupe=dedupe, seed=seed, valid_frac=valid_frac,
                                 test_frac=test_frac, processes=processes,
                                 dask_address=dask_address)  # fmt: skip
    # The corpus first, once: a bad corpus is the whole tune's error, not every trial's.
    source_digest = stages.hash_source(source)
    _Runner(root)(stages.ingest_corpus, source=source, source_digest=source_digest, fmt=fmt,
                  text_col=text_col, label_col=label_col, id_col=id_col, encoding=encoding,
                  seed=seed, valid_frac=valid_frac, test_frac=test_frac,
                  dedupe=dedupe)  # fmt: skip
    identity = {"corpus": source_digest, "space": tune_fns.space_dicts(dims), "metric": metric,
                "pruner": pruner, **{k: v for k, v in fixed.items()
                                     if k not in ("corpus", "workdir", "processes",
                                                  "dask_address")}}  # fmt: skip
    name = tune_fns.study_name(identity)
    _quiet_optuna()
    with _only_tune(root, name):
        study = optuna.create_study(storage=open_storage(storage_url(root)), study_name=name,
                                    direction="maximize", load_if_exists=True,
                                    pruner=tune_fns.make_pruner(pruner))  # fmt: skip
        interrupted = _recover_interrupted(study)
        if interrupted:
            _log(f"{interrupted} trial(s) a killed tune left running: trying them again")
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial(_baseline(dims, defaults), user_attrs={"baseline": True})
        study.sampler = optuna.samplers.TPESampler(
            seed=seed + len(study.get_trials(deepcopy=False)),  # a resumed study: new draws
            n_startup_trials=min(10, max(3, trials // 3)))  # fmt: skip
        search = _Search(study, dims, {k: v for k, v in fixed.items()}, defaults, metric,
                         pruner, root)  # fmt: skip
        timed_out = _search(search, trials, parallel, cluster, timeout)
        all_trials = study.get_trials(deepcopy=False)
        winner = choose_winner(all_trials, timeout if timed_out else None)
        best = dict(winner.user_attrs.get("settings") or winner.params)
        final = train_pipeline(**fixed, **best)  # the test split, once: the winner's
        report = _publish_report(search, all_trials, root, name)
    counts = tune_fns.tally(all_trials)
    command = tune_fns.run_command([corpus] if isinstance(corpus, str) else corpus, flags, best,
                                   defaults)  # fmt: skip
    _log(f"best: trial {winner.number}, validation {metric} {winner.value:.4f}; test accuracy "
         f"{final['accuracy']:.4f}, macro-F1 {final['macro_f1']:.4f}")  # fmt: skip
    _log(f"reproduce: {command}")
    return {
        "best": best, "best_trial": winner.number, "metric": metric,
        "valid_score": winner.value, "test_accuracy": final["accuracy"],
        "test_macro_f1": final["macro_f1"], "model": final["model"],
        "trials": {k: counts[k] for k in ("completed", "pruned", "failed")},
        "interrupted": counts["interrupted"], "started": search.started,
        "data_runs": search.data_runs, "command": command, "study": name,
        "storage": str(root / TUNE_DIR / STUDY_DB), "report": report, "workdir": str(root),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip


def _search(
    search: _Search, trials: int, parallel: int, cluster: ClusterSpec | None,
    timeout: float | None,
) -> bool:  # fmt: skip
    """Start trials until ``trials`` have finished (or, after ``timeout`` seconds, no more),
    and wait for those running. True when the timeout left trials unstarted."""
    deadline = time.monotonic() + timeout if timeout else None
    progress = artifacts.Progress(KEY_TUNE_PROGRESS, "tune", log_every=None, min_seconds=0.0)
    with _trial_runner(parallel, cluster) as runner:
        while True:
            counts = tune_fns.tally(search.study.get_trials(deepcopy=False))
            room = trials - tune_fns.finished(counts) - len(search.pending)
            expired = deadline is not None and time.monotonic() >= deadline
            while room > 0 and len(search.pending) < parallel and not expired:
                search.submit(runner)
                room -= 1
            _publish_progress(progress, counts, trials, len(search.pending))
            if not search.pending:
                break
            search.collect()
            _publish_leaderboard(search)
    done = tune_fns.tally(search.study.get_trials(deepcopy=False))
    _publish_progress(progress, done, trials, 0)
    return expired and room > 0


# ------------------------------------------------------------------------------------------
# artifacts (inside the flow only: each call hits the Prefect API)


def _publish_progress(progress: Any, counts: dict[str, int], trials: int, running: int) -> None:
    done = tune_fns.finished(counts)
    progress.update(artifacts.progress_percent(min(done, trials), trials),
                    f"{done}/{trials} trials finished ({counts['completed']} completed, "
                    f"{counts['pruned']} pruned, {counts['failed']} failed), "
                    f"{running} running")  # fmt: skip


def _publish_leaderboard(search: _Search) -> Any:
    rows = tune_fns.leaderboard_rows(search.study.get_trials(deepcopy=False), search.metric)
    return artifacts._table(
        KEY_TUNE_LEADERBOARD, rows,
        f"zhflow tune, study `{search.study.study_name}`: trials best validation "
        f"{search.metric} first (`{search.root / TUNE_DIR / STUDY_DB}`)")  # fmt: skip


def _importances(study: Any) -> dict[str, float]:
    """Optuna's parameter importances over the completed trials (its default evaluator)."""
    import warnings

    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" on a few trials
            return dict(optuna.importance.get_param_importances(study))
    except Exception:  # fewer than two completed trials, or none that differ
        return {}


def _publish_report(search: _Search, trials: list[Any], root: Path, name: str) -> str:
    """The PNG (score by trial, parameter importance) in a markdown artifact; its path."""
    from zhflow.tasks.tune_plot import TUNE_PNG, plot_tune

    _publish_leaderboard(search)
    points = [{"trial": t.number, "state": tune_fns.state_name(t),
               "value": t.value if tune_fns.state_name(t) == "complete" else (
                   list(t.intermediate_values.values())[-1] if t.intermediate_values else None)}
              for t in trials]  # fmt: skip
    importances = _importances(search.study)
    path = plot_tune(points, importances, root / TUNE_DIR / name / TUNE_PNG, search.metric)
    lines = [f"# zhflow tune: `{name}`", "",
             f"{len(trials)} trials; parameter importance: " + (", ".join(
                 f"{k} {v:.2f}" for k, v in sorted(importances.items(), key=lambda kv: -kv[1])[:5])
                 or "not yet (needs 2+ completed trials that differ)"), "",
             artifacts.png_markdown(path, "score by trial and parameter importance")]  # fmt: skip
    artifacts._markdown(KEY_TUNE_REPORT, "\n".join(lines), f"zhflow tune report ({name})")
    return str(path)
