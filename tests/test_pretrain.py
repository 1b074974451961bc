"""In-domain pretraining (tasks/pretrain.py) and its stage: word2vec rows aligned to the vocab."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

pytest.importorskip("gensim")

from zhflow.models.rnn import RNNConfig
from zhflow.tasks import stages
from zhflow.tasks.pretrain import align_to_vocab, stable_hash, train_word_vectors
from zhflow.tasks.train import TrainConfig, train_model

DOCS = [["好吃", "很", "香"], ["难吃", "很", "咸"], ["好吃", "不", "贵"]] * 20


def test_word_vectors_are_deterministic_for_a_seed() -> None:
    a = train_word_vectors(DOCS, dim=8, seed=3)
    b = train_word_vectors(DOCS, dim=8, seed=3)
    c = train_word_vectors(DOCS, dim=8, seed=4)
    assert np.array_equal(a["好吃"], b["好吃"])
    assert not np.array_equal(a["好吃"], c["好吃"])
    assert stable_hash("好吃") == stable_hash("好吃")  # not Python's per-process hash


def test_vectors_are_aligned_to_vocabulary_ids() -> None:
    vectors = train_word_vectors(DOCS, dim=8, seed=0)
    matrix, found = align_to_vocab(vectors, ["<pad>", "<unk>", "很", "好吃", "从未见过"])
    assert found.tolist() == [False, False, True, True, False]
    assert np.array_equal(matrix[3], vectors["好吃"]) and not matrix[4].any()


def test_pretrained_rows_initialise_the_embedding_table() -> None:
    vectors = torch.randn(6, 4)
    found = torch.tensor([False, False, True, True, False, True])
    cfg = RNNConfig(vocab_size=6, num_classes=2, embedding_dim=4, hidden_size=4)
    data = {"ids": torch.tensor([[2, 3], [4, 5]] * 4, dtype=torch.int32),
            "lengths": torch.tensor([2, 2] * 4), "labels": torch.tensor([0, 1] * 4)}  # fmt: skip
    plain = train_model(cfg, TrainConfig(epochs=1, seed=1, calibrate=False), data, data,
                        log=None)  # fmt: skip
    tc = TrainConfig(epochs=1, seed=1, lr=1e-9, calibrate=False)  # ~no update: see the init
    seeded = train_model(cfg, tc, data, data, log=None, init_embeddings=(vectors, found))
    table = seeded.state_dict["embedding.weight"]
    assert torch.allclose(table[found], vectors[found], atol=1e-5)
    assert not torch.allclose(plain.state_dict["embedding.weight"][found], vectors[found])


def test_unlabeled_texts_identical_to_a_held_out_text_are_dropped(tmp_path) -> None:
    path = tmp_path / "u.txt"
    path.write_text("送餐很快\n\n味道不错 \n  \nＡＢＣ好\n", encoding="utf-8")
    texts, dropped = stages.unlabeled_texts([str(path)], held_out=["味道不错", "abc好"])
    assert texts == ["送餐很快"] and dropped == 2


def test_an_unlabeled_file_of_blank_lines_is_refused_like_an_empty_one(tmp_path) -> None:
    from zhflow.tasks.errors import InputError

    good, blank = tmp_path / "u.txt", tmp_path / "blank.txt"
    good.write_text("送餐很快\n", encoding="utf-8")
    blank.write_text("\n\n   \n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"blank\.txt: --unlabeled file has no non-empty text"):
        stages.unlabeled_texts([str(good), str(blank)], held_out=[])


def test_pretrain_stage_writes_aligned_embeddings(tmp_path, tiny_csv) -> None:
    workdir = str(tmp_path / "w")
    corpus = stages.ingest_corpus.fn(
        workdir=workdir, source=[str(tiny_csv)], source_digest=stages.hash_source([str(tiny_csv)]),
        fmt=None, text_col=None, label_col=None, id_col=None, encoding="utf-8", seed=0,
        valid_frac=0.1, test_frac=0.1, dedupe=False)  # fmt: skip
    spec = stages.segment_fns.TokenizerSpec(engine="char")
    tokens = stages.segment_corpus.fn(workdir=workdir, corpus=corpus, tokenizer=spec.to_dict(),
                                      identity=spec.identity(), workers=1)  # fmt: skip
    vocab = stages.build_vocab_table.fn(workdir=workdir, tokens=tokens, min_freq=1,
                                        max_vocab=1000)  # fmt: skip
    extra = tmp_path / "more.txt"
    extra.write_text("味道很好\n服务周到\n", encoding="utf-8")
    ref = stages.pretrain_embeddings.fn(
        workdir=workdir, corpus=corpus, tokens=tokens, vocab=vocab, unlabeled=[str(extra)],
        unlabeled_digest=stages.hash_source([str(extra)]), tokenizer=spec.to_dict(),
        identity=spec.identity(), dim=8, seed=0, workers=1)  # fmt: skip
    vectors, found = stages.load_embeddings(ref)
    size = pl.read_parquet(vocab.file("vocab.parquet")).height
    assert vectors.shape == (size, 8) and found.shape == (size,) and 0 < int(found.sum()) < size
    summary = stages.read_json(ref, "summary.json")
    assert summary["unlabeled_texts"] == 2 and summary["vocab_found"] == int(found.sum())
