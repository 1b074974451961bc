"""Every flow setting's default, once: the flows' keyword defaults (``train_pipeline``,
``score_pipeline``, ``tune_pipeline``) and the ``zhflow`` command line's option defaults
both read them from here.

Standard library only, so that the CLI reads them without loading torch, Prefect or polars
(``zhflow --help`` stays fast). The config dataclasses that hold some of the same settings
(``TokenizerSpec``, ``NgramSpec``, ``RNNConfig``, ``TrainConfig``) keep their own literals: their
source is part of the stages' cache keys (tasks/codeversion.py) and of how old bundles load,
and ``models/`` imports nothing from ``tasks/``. tests/test_defaults.py checks that they agree
with these where they mean the same thing (and that the flows and the CLI read these).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunDefaults:
    """``zhflow run`` / ``train_pipeline``; ``zhflow tune`` shares the data settings."""

    encoding: str = "utf-8"
    workdir: str = "data/work"
    tokenizer: str = "jieba"
    mode: str = "precise"
    hmm: bool = True
    normalize: bool = True
    # GRU: with the wide branch beside it, as accurate as the LSTM on the shared corpora and
    # about a third cheaper per epoch, which keeps `make demo` inside its 10 minutes.
    model: str = "gru"  # the recurrent cell (`--cell`)
    model_type: str = "rnn"
    layers: int = 1
    hidden: int = 128
    embedding_dim: int = 128
    bidirectional: bool = True
    dropout: float = 0.2
    input: str = "embedding"  # token vectors (`--token-vectors`)
    ngram_features: int = 0
    wide: bool = True
    wide_word_ngrams: int = 2
    wide_char_ngrams: int = 3
    wide_min_df: int = 2
    pretrain: bool = False
    ensemble_size: int = 1  # `--seeds`
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    amp: bool = False
    max_len: int = 200
    min_freq: int = 2
    max_vocab: int = 50_000
    ngram: int = 2
    seed: int = 42
    valid_frac: float = 0.1
    test_frac: float = 0.1
    dedupe: bool = False
    until: str = "bundle"  # catalog.BUNDLE.name (tests/test_defaults.py)


@dataclass(frozen=True)
class ScoreDefaults:
    """``zhflow score`` / ``score_pipeline``."""

    encoding: str = "utf-8"
    batch_size: int = 512
    chunk_rows: int = 50_000  # rows read per chunk: bounds memory


@dataclass(frozen=True)
class TuneDefaults:
    """``zhflow tune``'s own settings / ``tune_pipeline``."""

    trials: int = 20
    metric: str = "macro_f1"
    pruner: str = "median"


RUN = RunDefaults()
SCORE = ScoreDefaults()
TUNE = TuneDefaults()
