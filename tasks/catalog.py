"""The catalog: every stage of the training flow, named once, with its folder, files and version.

A stage's ``name`` is the one word for it everywhere: ``zhflow run --until``, its work-dir
folder (``<workdir>/<name>/<key>/``), its Prefect task name and artifact key, the run summary's
``tasks`` and ``artifacts``, and docs/ARCHITECTURE.md (whose work-dir table is
:func:`workdir_table`, checked by tests/test_catalog.py). Every file name an artifact, a bundle
or the work dir holds is a constant here; code elsewhere names files through them.

``version`` is the stage's explicit code version, part of its cache key beside the hash of the
functions that build it (tasks/cache.py): bump it when an artifact's meaning changes without
its code changing (a new library default, a file format read elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass

# ------------------------------------------------------------------------------------------
# File names

MANIFEST = "_manifest.json"  # in every artifact folder and bundle: file sizes and sha256
CORPUS_PARQUET = "corpus.parquet"
PROFILE_JSON = "profile.json"
TOKENS_PARQUET = "tokens.parquet"
TOKENIZER_JSON = "tokenizer.json"
NGRAMS_PARQUET = "ngrams.parquet"
FEATURES_PARQUET = "features.parquet"
FEATURES_JSON = "features.json"
VOCAB_PARQUET = "vocab.parquet"
SUMMARY_JSON = "summary.json"
SPLITS = ("train", "valid", "test")
SPLIT_SAFETENSORS = "{split}.safetensors"
LABELS_JSON = "labels.json"
META_JSON = "meta.json"
EMBEDDINGS_SAFETENSORS = "embeddings.safetensors"
WEIGHTS_SAFETENSORS = "weights.safetensors"
MODEL_CONFIG_JSON = "model_config.json"
HISTORY_JSON = "history.json"
#: JSON keys that record how long making an artifact took, or whether it was resumed, not
#: what it is: the manifest checks the whole file, but its digest (what downstream keys
#: hash) reads the file without them, so two identical trainings (one seed, another
#: machine, or a resumed run) give the stages after them the same keys.
UNKEYED_JSON_KEYS = {HISTORY_JSON: frozenset({"seconds", "samples_per_s", "resumed_from_epoch"})}
METRICS_JSON = "metrics.json"
CONFUSION_MD = "confusion.md"
TRAINING_CURVE_PNG = "training_curve.png"
CONFUSION_PNG = "confusion.png"
RELIABILITY_PNG = "reliability.png"
PLOTS = (TRAINING_CURVE_PNG, CONFUSION_PNG, RELIABILITY_PNG)
# A bundle (the bundle stage's folder, or a copy of it anywhere).
CONFIG_JSON = "config.json"
USER_DICT_TXT = "user_dict.txt"
STOPWORDS_TXT = "stopwords.txt"
# Outside the stage folders.
CACHE_DIR = "cache"  # Prefect's cache records, beside the artifacts
LOCKS_DIR = "locks"  # <stage>-<key>.lock: one builder per artifact
CHECKPOINTS_DIR = "checkpoints"  # <key>/checkpoint.pt: a model being trained, per epoch
CHECKPOINT_PT = "checkpoint.pt"
SHARDS_DIR = "shards"  # a sharded stage's scratch files on a cluster, removed after the run
LATEST_RUN = "runs/latest.json"
LEADERBOARD = "runs/leaderboard.json"
EVALUATIONS_DIR = "evaluations"
PREDICTIONS_PARQUET = "predictions.parquet"
SCORES = "scores/predictions.parquet"  # `zhflow serve`'s default scoring output


def split_file(split: str) -> str:
    """The encoded tensors of one split: ``train.safetensors`` and so on."""
    return SPLIT_SAFETENSORS.format(split=split)


# ------------------------------------------------------------------------------------------
# Stages


@dataclass(frozen=True)
class ArtifactFile:
    name: str
    schema: str = ""  # columns or tensors, for the docs' table
    optional: str = ""  # when the file is there only sometimes


@dataclass(frozen=True)
class Stage:
    name: str
    files: tuple[ArtifactFile, ...]
    version: int = 1

    @property
    def folder(self) -> str:
        return self.name

    def file_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.files)


CORPUS = Stage("corpus", (
    ArtifactFile(CORPUS_PARQUET, "id, text, label, split"),
    ArtifactFile(PROFILE_JSON),
))  # fmt: skip
TOKENS = Stage("tokens", (
    ArtifactFile(TOKENS_PARQUET, "id, tokens list<str>, label, split"),
    ArtifactFile(TOKENIZER_JSON),
))  # fmt: skip
NGRAMS = Stage("ngrams", (
    ArtifactFile(NGRAMS_PARQUET, "n, ngram, count, doc_freq"),
    ArtifactFile(FEATURES_PARQUET, "id, key, doc_freq, idf", optional="wide branch"),
    ArtifactFile(FEATURES_JSON, optional="wide branch"),
))  # fmt: skip
VOCAB = Stage("vocab", (
    ArtifactFile(VOCAB_PARQUET, "id, token, count, doc_freq"),
    ArtifactFile(SUMMARY_JSON),
))  # fmt: skip
ENCODED = Stage("encoded", (
    ArtifactFile(SPLIT_SAFETENSORS,
                 "ids, lengths, labels, bag_ids, bag_counts, bag_weights, bag_word_counts"),
    ArtifactFile(LABELS_JSON),
    ArtifactFile(META_JSON),
))  # fmt: skip
EMBEDDINGS = Stage("embeddings", (
    ArtifactFile(EMBEDDINGS_SAFETENSORS, "vectors, found"),
    ArtifactFile(SUMMARY_JSON),
))  # fmt: skip
MODEL = Stage("model", (
    ArtifactFile(WEIGHTS_SAFETENSORS),
    ArtifactFile(MODEL_CONFIG_JSON),
    ArtifactFile(HISTORY_JSON),
))  # fmt: skip
METRICS = Stage("metrics", (
    ArtifactFile(METRICS_JSON),
    ArtifactFile(CONFUSION_MD),
    *(ArtifactFile(name) for name in PLOTS),
))  # fmt: skip
BUNDLE = Stage("bundle", (
    ArtifactFile(CONFIG_JSON),
    ArtifactFile(WEIGHTS_SAFETENSORS),
    ArtifactFile(VOCAB_PARQUET),
    ArtifactFile(LABELS_JSON),
    ArtifactFile(METRICS_JSON),
    ArtifactFile(FEATURES_PARQUET, optional="wide branch"),
    ArtifactFile(USER_DICT_TXT, optional="--user-dict"),
    ArtifactFile(STOPWORDS_TXT, optional="--stopwords"),
    *(ArtifactFile(name) for name in PLOTS),
))  # fmt: skip

#: In flow order. ``embeddings`` runs only with --pretrain / --unlabeled.
STAGES: tuple[Stage, ...] = (CORPUS, TOKENS, NGRAMS, VOCAB, ENCODED, EMBEDDINGS, MODEL, METRICS,
                             BUNDLE)  # fmt: skip
BY_NAME = {stage.name: stage for stage in STAGES}

#: Where ``--until`` may stop the training flow; ``bundle`` (the default) runs it all.
UNTIL = (TOKENS.name, NGRAMS.name, VOCAB.name, ENCODED.name, BUNDLE.name)
#: The old ``--until`` words (verbs, and ``train`` for the whole run): deprecated spellings.
UNTIL_ALIASES = {"tokenize": TOKENS.name, "encode": ENCODED.name, "train": BUNDLE.name}


def until_stage(name: str) -> str:
    """The stage ``--until NAME`` stops after (an old spelling gives its new name)."""
    stage = UNTIL_ALIASES.get(name, name)
    if stage not in UNTIL:
        raise ValueError(f"until must be one of {', '.join(UNTIL)}, got {name!r}")
    return stage


def stage(name: str) -> Stage:
    return BY_NAME[name]


# ------------------------------------------------------------------------------------------
# The work directory, as docs/ARCHITECTURE.md shows it

_OUTSIDE_STAGES = (
    (f"{CACHE_DIR}/", "Prefect cache records (small: artifact refs, paths relative to the "
     "work dir)"),
    (f"{LOCKS_DIR}/", "<stage>-<key>.lock: one builder per artifact"),
    (f"{CHECKPOINTS_DIR}/<key>/", f"{CHECKPOINT_PT}: the model stage's last finished epoch, "
     "until it is done"),
    (f"{SHARDS_DIR}/", "a sharded stage's scratch files on a Dask cluster, removed after it"),
    (LATEST_RUN, "paths of the last full run's artifacts (an --until run leaves it)"),
    (LEADERBOARD, "one entry per bundle trained here, best macro-F1 first"),
)  # fmt: skip


def _describe(file: ArtifactFile) -> str:
    text = file.name.replace("{split}", "train|valid|test")
    if file.schema:
        text += f" ({file.schema})"
    if file.optional:
        text += f" [{file.optional}]"
    return text


def workdir_table() -> str:
    """The work dir's layout, one line per folder: docs/ARCHITECTURE.md holds this text."""
    rows = [(f"{s.folder}/<key>/", ", ".join(_describe(f) for f in s.files)) for s in STAGES]
    rows += list(_OUTSIDE_STAGES)
    width = max(len(where) for where, _ in rows) + 2
    lines = [f"  {where:<{width}}{what}" for where, what in rows]
    return "\n".join(["data/work/", *lines])
