from __future__ import annotations

import numpy as np
import pytest

from zhflow.tasks.encode import (
    build_label_map,
    encode_labels,
    encode_tokens,
    load_label_map,
    load_split,
    save_label_map,
    save_split,
)

INDEX = {"<pad>": 0, "<unk>": 1, "好": 2, "吃": 3, "很": 4}
ITOS = ["<pad>", "<unk>", "好", "吃", "很"]


def test_round_trip_and_padding() -> None:
    ids, lengths = encode_tokens([["很", "好", "吃"], ["好"]], INDEX, max_len=5)
    assert ids.dtype == np.int32 and ids.shape == (2, 5)
    assert lengths.tolist() == [3, 1]
    assert ids[0].tolist() == [4, 2, 3, 0, 0]
    decoded = [[ITOS[int(i)] for i in row[:n]] for row, n in zip(ids, lengths, strict=True)]
    assert decoded == [["很", "好", "吃"], ["好"]]


def test_truncation_keeps_the_head() -> None:
    ids, lengths = encode_tokens([["很", "好", "吃", "好"]], INDEX, max_len=2)
    assert ids.tolist() == [[4, 2]] and lengths.tolist() == [2]


def test_unknown_tokens_and_empty_texts() -> None:
    ids, lengths = encode_tokens([["难", "吃"], [], None], INDEX, max_len=3)
    assert ids[0].tolist() == [1, 3, 0]
    assert ids[1].tolist() == [1, 0, 0] and ids[2].tolist() == [1, 0, 0]
    assert lengths.tolist() == [2, 1, 1]


def test_labels_sorted_and_encoded() -> None:
    label_map = build_label_map(["pos", "neg", "pos", 1])  # type: ignore[list-item]  # on purpose
    assert label_map == ["1", "neg", "pos"]
    assert encode_labels(["pos", "neg"], label_map).tolist() == [2, 1]
    with pytest.raises(ValueError, match="not in the label map"):
        encode_labels(["meh"], label_map)


def test_split_and_label_files_round_trip(tmp_path) -> None:
    ids, lengths = encode_tokens([["很", "好"]], INDEX, max_len=4)
    save_split(tmp_path / "train.safetensors", ids, lengths, np.array([1]))
    loaded = load_split(tmp_path / "train.safetensors")
    assert loaded["ids"].tolist() == ids.tolist() and loaded["labels"].tolist() == [1]
    save_label_map(tmp_path / "labels.json", ["neg", "pos"])
    assert load_label_map(tmp_path / "labels.json") == ["neg", "pos"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
