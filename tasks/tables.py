"""N-gram and vocabulary tables with polars.

Both tables are fitted on the training split only, so validation and test scores are honest.
"""

from __future__ import annotations

import polars as pl

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
