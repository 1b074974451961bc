"""N-gram and vocabulary tables with polars.

Both tables are fitted on the training split only, so validation and test scores are honest.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from zhflow.tasks.features import CHAR, WORD, NgramFeaturizer, NgramSpec, smooth_idf

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)
# Whitespace tokens are dropped at segmentation, so a space never occurs inside a token.
NGRAM_SEPARATOR = " "

NGRAM_SCHEMA = {"n": pl.Int32, "ngram": pl.Utf8, "count": pl.Int64, "doc_freq": pl.Int64}
VOCAB_SCHEMA = {"id": pl.Int32, "token": pl.Utf8, "count": pl.Int64, "doc_freq": pl.Int64}


Tokens = pl.DataFrame | pl.LazyFrame


def _collect(frame: pl.LazyFrame) -> pl.DataFrame:
    """Run a query on polars' streaming engine: memory bounded by the groups, not the rows."""
    return frame.collect(engine="streaming")


def explode_tokens(tokens: Tokens) -> pl.LazyFrame:
    """One row per token occurrence: ``doc`` (row number) and ``token`` (a lazy query)."""
    return (
        tokens.lazy()
        .select(pl.col("tokens"))
        .with_row_index("doc")
        .explode("tokens")
        .drop_nulls("tokens")
        .rename({"tokens": "token"})
    )


def _ngrams_of(n: int) -> pl.Expr:
    """Each document's n-grams, computed inside its own token list (never across documents)."""
    window = [pl.element().shift(-k) for k in range(n)]
    # concat_str is null where the window runs past the end of the list: dropped.
    return pl.col("tokens").list.eval(pl.concat_str(window, separator=NGRAM_SEPARATOR).drop_nulls())


def count_ngrams(tokens: Tokens, n_max: int) -> pl.DataFrame:
    """Count n-grams for n = 1..n_max: total occurrences and number of documents holding each.

    ``tokens`` may be a lazy scan of a Parquet file: the query streams over the rows, so
    memory grows with the number of distinct n-grams, not with the corpus. Sorted by ``n``,
    then count descending, then n-gram, so the table is identical across runs.
    """
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    docs = tokens.lazy().select(pl.col("tokens")).with_row_index("doc")
    tables = [
        docs.select(pl.col("doc"), _ngrams_of(n).alias("ngram"))
        .explode("ngram")
        .drop_nulls("ngram")  # documents with fewer than n tokens
        .group_by("ngram")
        .agg(pl.len().alias("count"), pl.col("doc").n_unique().alias("doc_freq"))
        .with_columns(pl.lit(n).alias("n"))
        for n in range(1, n_max + 1)
    ]
    return _collect(
        pl.concat(tables)
        .select(list(NGRAM_SCHEMA))
        .cast(NGRAM_SCHEMA)  # type: ignore[arg-type]
        .sort(["n", "count", "ngram"], descending=[False, True, False])
    )


def build_vocab(tokens: Tokens, min_freq: int = 2, max_vocab: int = 50_000) -> pl.DataFrame:
    """Vocabulary table: ``<pad>`` = 0, ``<unk>`` = 1, then tokens by count desc, token asc.

    ``min_freq`` drops rarer tokens (they become ``<unk>``); ``max_vocab`` caps the table's
    size, specials included. Ties are broken by the token string, so ids do not depend on
    row order, machine or polars version. ``tokens`` may be lazy (streamed, as above).
    """
    if min_freq < 1:
        raise ValueError(f"min_freq must be >= 1, got {min_freq}")
    if max_vocab < len(SPECIALS) + 1:
        raise ValueError(f"max_vocab must be >= {len(SPECIALS) + 1}, got {max_vocab}")
    counted = _collect(
        explode_tokens(tokens)
        .filter(~pl.col("token").is_in(list(SPECIALS)))
        .group_by("token")
        .agg(pl.len().alias("count"), pl.col("doc").n_unique().alias("doc_freq"))
        .filter(pl.col("count") >= min_freq)
        .sort(["count", "token"], descending=[True, False])
        .head(max_vocab - len(SPECIALS))
    )
    specials = pl.DataFrame(
        {"token": list(SPECIALS), "count": [0, 0], "doc_freq": [0, 0]},
        schema={"token": pl.Utf8, "count": pl.Int64, "doc_freq": pl.Int64},
    )
    return (
        pl.concat([specials, counted.cast({"count": pl.Int64, "doc_freq": pl.Int64})])
        .with_row_index("id")
        .select(list(VOCAB_SCHEMA))
        .cast(VOCAB_SCHEMA)  # type: ignore[arg-type]
    )


def vocab_to_index(vocab: pl.DataFrame) -> dict[str, int]:
    """token -> id mapping for encoding."""
    return dict(zip(vocab["token"].to_list(), vocab["id"].to_list(), strict=True))


def summarize_vocab(vocab: pl.DataFrame, tokens: Tokens) -> dict[str, float | int]:
    """Size and coverage: the share of token occurrences the vocabulary keeps (not <unk>)."""
    total, known = _collect(
        explode_tokens(tokens).select(
            pl.len().alias("total"),
            pl.col("token").is_in(vocab["token"].implode()).sum().alias("known"),
        )
    ).row(0)
    return {
        "size": vocab.height,
        "token_occurrences": int(total),
        "coverage": round(known / total, 4) if total else 0.0,
    }


FEATURE_SCHEMA = {"id": pl.Int32, "key": pl.Utf8, "doc_freq": pl.Int64, "idf": pl.Float32}


def _characters(tokens: Tokens) -> pl.LazyFrame:
    """Each document's tokens joined, as a list of its characters (the char n-grams' input)."""
    chars = pl.col("tokens").list.join("").str.split("")
    return tokens.lazy().select(
        chars.list.eval(pl.element().filter(pl.element() != "")).alias("tokens")
    )


def select_ngram_features(tokens: Tokens, spec: NgramSpec) -> pl.DataFrame:
    """The wide branch's features: n-grams of the train split kept by document frequency.

    Word 1..``word_n``-grams (``w:``) and character 1..``char_n``-grams (``c:``) with
    ``doc_freq >= min_df``, the ``max_features`` most frequent by document frequency (ties by
    key), ids in that order, and their smoothed IDF. Deterministic: ids depend on the counts
    only. Keys are those ``zhflow.tasks.features.NgramFeaturizer`` generates.
    """
    parts = []
    if spec.word_n:
        parts.append(
            count_ngrams(tokens, spec.word_n)
            .lazy()
            .select((pl.lit(f"{WORD}:") + pl.col("ngram")).alias("key"), "doc_freq")
        )
    if spec.char_n:
        parts.append(
            count_ngrams(_characters(tokens), spec.char_n)
            .lazy()
            .select(
                (
                    pl.lit(f"{CHAR}:")
                    + pl.col("ngram").str.replace_all(NGRAM_SEPARATOR, "", literal=True)
                ).alias("key"),
                "doc_freq",
            )
        )
    n_docs = int(_collect(tokens.lazy().select(pl.len())).item())
    chosen = _collect(
        pl.concat(parts)
        .filter(pl.col("doc_freq") >= spec.min_df)
        .sort(["doc_freq", "key"], descending=[True, False])
        .head(spec.max_features)
    )
    return (
        chosen.with_row_index("id")
        .with_columns(pl.Series("idf", smooth_idf(chosen["doc_freq"].to_numpy(), n_docs)))
        .select(list(FEATURE_SCHEMA))
        .cast(FEATURE_SCHEMA)  # type: ignore[arg-type]
    )


def featurizer_from_table(features: pl.DataFrame, spec: NgramSpec) -> NgramFeaturizer:
    """The ``NgramFeaturizer`` of a feature table (ids must be 0..F-1 in order)."""
    ids = features["id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError("feature ids must be 0..F-1 in order")
    index = dict(zip(features["key"].to_list(), ids.tolist(), strict=True))
    idf = features["idf"].to_numpy().astype(np.float32)
    return NgramFeaturizer(index=index, idf=idf, word_n=spec.word_n, char_n=spec.char_n)
