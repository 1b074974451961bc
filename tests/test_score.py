from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.helpers import train_tiny_bundle
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.errors import InputError
from zhflow.tasks.score import PROB_PREFIX, score_file


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(train_tiny_bundle(tmp_path_factory.mktemp("b") / "bundle"))


def test_scoring_1000_rows_with_empties(bundle, tmp_path) -> None:
    texts = [
        None if i % 50 == 0 else ("   " if i % 77 == 0 else f"味道不错{i}") for i in range(1000)
    ]
    source = tmp_path / "in.csv"
    pl.DataFrame({"review": texts}).write_csv(source)
    out = tmp_path / "preds" / "out.parquet"
    summary = score_file(bundle, source, out, text_col="review", chunk_rows=300, batch_size=64)
    preds = pl.read_parquet(out)
    assert summary["rows"] == preds.height == 1000
    assert preds["id"].to_list() == [str(i) for i in range(1000)]
    prob_cols = [f"{PROB_PREFIX}{label}" for label in bundle.labels]
    assert preds.columns[:3] == ["id", "label", "confidence"] and set(prob_cols) <= set(
        preds.columns
    )
    empty = preds.filter(pl.col("reason").is_not_null())
    assert empty.height == sum(1 for t in texts if not (t and t.strip()))
    assert empty["label"].null_count() == empty.height
    scored = preds.filter(pl.col("reason").is_null())
    sums = scored.select(pl.sum_horizontal(prob_cols)).to_series().to_numpy()
    assert np.allclose(sums, 1.0, atol=1e-5)
    assert scored["label"].is_in(bundle.labels).all()
    assert summary["empty_texts"] == empty.height
    assert [p.name for p in out.parent.iterdir()] == ["out.parquet"]


def test_id_column_is_kept(bundle, tmp_path) -> None:
    source = tmp_path / "in.jsonl"
    pl.DataFrame({"doc": ["a", "b"], "text": ["很好", "很差"]}).write_ndjson(source)
    score_file(bundle, source, tmp_path / "o.parquet", id_col="doc")
    assert pl.read_parquet(tmp_path / "o.parquet")["id"].to_list() == ["a", "b"]


def test_output_that_is_a_directory_is_refused(bundle, tmp_path) -> None:
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": ["很好"]}).write_csv(source)
    with pytest.raises(InputError, match="is a directory"):
        score_file(bundle, source, tmp_path)


def _empty_inputs(folder) -> dict[str, list[str]]:
    """One file with no rows per format: no bytes, a header alone, no records, no row groups."""
    folder.mkdir()
    (folder / "nothing.csv").write_bytes(b"")
    (folder / "header.csv").write_text("text\n", encoding="utf-8")
    (folder / "nothing.jsonl").write_bytes(b"")
    pl.DataFrame({"text": []}, schema={"text": pl.Utf8}).write_parquet(folder / "none.parquet")
    (folder / "full.csv").write_text("text\n很好吃\n太难吃了\n", encoding="utf-8")
    pl.DataFrame({"text": ["很好吃", "太难吃了"]}).write_ndjson(folder / "full.jsonl")
    pl.DataFrame({"text": ["很好吃", "太难吃了"]}).write_parquet(folder / "full.parquet")
    return {"csv": ["nothing.csv", "header.csv"], "jsonl": ["nothing.jsonl"],
            "parquet": ["none.parquet"]}  # fmt: skip


@pytest.mark.parametrize("sharded", [False, True])
def test_an_empty_input_among_several_is_skipped_and_named(bundle, tmp_path, sharded) -> None:
    from zhflow.tasks.score import predict_rows, score_file_sharded, score_parquet_shard

    empties = _empty_inputs(tmp_path / "in")
    for fmt, names in empties.items():
        full = tmp_path / "in" / f"full.{fmt}"
        sources = [str(tmp_path / "in" / n) for n in names]
        source = [sources[0], str(full), *sources[1:]]  # an empty file first and after
        out = tmp_path / f"{fmt}-{sharded}.parquet"
        if sharded:

            def run(pairs):
                return (score_parquet_shard(str(bundle.path), i, o) for i, o in pairs)

            summary = score_file_sharded(bundle, source, out, run, fmt=fmt)
        else:
            summary = score_file(bundle, source, out, fmt=fmt, workers=1)
        assert summary["rows"] == pl.read_parquet(out).height == 2, fmt
        assert pl.read_parquet(out)["id"].to_list() == ["0", "1"]  # the row index goes on
        assert summary["empty_inputs"] == sources, fmt
        expected = predict_rows(bundle, pl.DataFrame({"id": ["0", "1"],
                                                      "text": ["很好吃", "太难吃了"]}))  # fmt: skip
        assert pl.read_parquet(out)["label"].to_list() == expected["label"].to_list()


def test_sharded_scoring_hands_workers_absolute_paths(bundle, tmp_path, monkeypatch) -> None:
    """A worker on another machine has another cwd: a relative --output's shard files must
    still be found there."""
    from zhflow.tasks.score import score_file_sharded, score_parquet_shard

    monkeypatch.chdir(tmp_path)
    pl.DataFrame({"text": ["很好吃", "太难吃了"]}).write_csv(tmp_path / "in.csv")
    handed: list[str] = []

    def run(pairs):
        for in_path, out_path in pairs:
            handed.extend([in_path, out_path])
            yield score_parquet_shard(str(bundle.path), in_path, out_path)

    summary = score_file_sharded(bundle, "in.csv", "sub/out.parquet", run)
    assert summary["rows"] == 2 and handed
    assert all(Path(p).is_absolute() and Path(p).parent.parent == tmp_path / "sub"
               for p in handed)  # fmt: skip


def test_every_input_empty_or_one_empty_input_is_refused(bundle, tmp_path) -> None:
    empties = _empty_inputs(tmp_path / "in")
    every = [str(tmp_path / "in" / n) for n in empties["csv"]]
    with pytest.raises(InputError, match=r"header\.csv: every input is empty \(no rows\)"):
        score_file(bundle, every, tmp_path / "o.parquet", workers=1)
    with pytest.raises(InputError, match=r"nothing\.jsonl: empty corpus \(no rows\)"):
        score_file(bundle, str(tmp_path / "in" / "nothing.jsonl"), tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()


# ----------------------------------------------------------------------------- pipelined path


def _mixed_texts(n: int) -> list[str | None]:
    return [
        None if i % 41 == 0 else ("  " if i % 53 == 0 else f"味道不错，送餐很快{i}号")
        for i in range(n)
    ]


def test_pipelined_scoring_equals_serial_path(bundle, tmp_path) -> None:
    import torch

    from zhflow.tasks.corpus import read_texts_in_chunks
    from zhflow.tasks.score import score_chunks, score_chunks_pipelined

    source = tmp_path / "in.csv"
    pl.DataFrame({"review": _mixed_texts(700)}).write_csv(source)

    def chunks():
        return read_texts_in_chunks(source, None, "review", None, "utf-8", 128)

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = pl.concat(list(score_chunks(bundle, chunks(), batch_size=32)))
        # min_parallel=2: every chunk goes through the worker pool, even tiny ones.
        piped = pl.concat(
            list(score_chunks_pipelined(bundle, chunks(), 32, workers=2, depth=2, min_parallel=2))
        )
        threaded = pl.concat(
            list(score_chunks_pipelined(bundle, chunks(), 32, 1, 3, 2, forward_threads=3))
        )
        out = tmp_path / "o.parquet"
        summary = score_file(bundle, source, out, text_col="review", batch_size=32,
                             chunk_rows=128, workers=2, forward_threads=2)  # fmt: skip
    finally:
        torch.set_num_threads(previous)
    assert torch.get_num_threads() == previous
    assert serial.height == piped.height == 700 == summary["rows"]
    assert piped.equals(serial) and threaded.equals(serial)
    assert summary["forward_threads"] == 2 and summary["torch_threads"] == 1
    written = pl.read_parquet(out)
    assert written["id"].to_list() == [str(i) for i in range(700)]
    assert written.equals(serial.cast(dict(written.schema)))  # type: ignore[arg-type]


def test_pipelined_scoring_stops_its_workers_on_close(bundle) -> None:
    from zhflow.tasks.score import score_chunks_pipelined

    frames = (pl.DataFrame({"id": [str(i + k * 50) for i in range(50)], "text": ["很好吃"] * 50})
              for k in range(10))  # fmt: skip
    gen = score_chunks_pipelined(bundle, frames, 16, workers=1, depth=3, min_parallel=2)
    first = next(gen)
    assert first.height == 50 and first["id"][0] == "0"
    gen.close()  # must not hang or leak a pool


def test_segmenter_matches_segment_texts_and_encode_tokens() -> None:
    from zhflow.tasks.encode import encode_tokens
    from zhflow.tasks.score import pad_ragged
    from zhflow.tasks.segment import FlatIdEncoder, Segmenter, TokenizerSpec, segment_texts

    spec = TokenizerSpec(engine="char")
    texts = [t or "" for t in _mixed_texts(300)]
    expected = segment_texts(texts, spec)
    index = {"<pad>": 0, "<unk>": 1, "味": 2, "道": 3, "快": 4}
    with Segmenter(spec, 2, min_parallel=2) as seg:
        assert seg.submit(texts).result() == expected
        assert seg.started
    with Segmenter(spec, 2, min_parallel=2, post=FlatIdEncoder(index, 6)) as seg:
        parts = seg.segment(texts)
    lengths = np.concatenate([p[1] for p in parts])
    ids = pad_ragged(np.concatenate([p[0] for p in parts]), lengths, 6)
    ref_ids, ref_lengths = encode_tokens(expected, index, 6)
    assert np.array_equal(lengths, ref_lengths) and np.array_equal(ids, ref_ids)
    local = Segmenter(spec, 2)  # below min_parallel: in this process, no pool
    assert local.segment(texts[:10]) == expected[:10] and not local.started
    local.close()
