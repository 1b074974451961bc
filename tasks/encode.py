"""token -> id -> tensor: encode token lists as padded id arrays with lengths.

Arrays are stored as safetensors (no pickles), post-padded with ``<pad>`` = 0; the model
reads each sequence's true length, so padding never reaches its representation.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from zhflow.tasks.features import NgramFeaturizer
from zhflow.tasks.segment import FlatIdEncoder
from zhflow.tasks.storage import atomic_path
from zhflow.tasks.tables import PAD, UNK

PAD_ID, UNK_ID = 0, 1


def encode_tokens(
    token_lists: Iterable[Sequence[str] | None], index: dict[str, int], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Map tokens to ids, truncate to the first ``max_len`` and post-pad with 0.

    Returns ``ids`` int32 ``(N, max_len)`` and ``lengths`` int64 ``(N,)``. Unknown tokens map
    to ``<unk>`` = 1; a text with no tokens becomes one ``<unk>`` so every length is >= 1
    (packed RNNs reject empty sequences).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    docs = [list(tokens or ()) for tokens in token_lists]
    flat, lengths = FlatIdEncoder(index, max_len, UNK_ID)(docs)  # the scorer's encoder too
    return pad_ragged(flat, lengths, max_len), lengths


def pad_ragged(flat: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Ragged ids (all rows concatenated) → int32 ``(N, max_len)`` post-padded with 0."""
    ids = np.zeros((len(lengths), max_len), dtype=np.int32)
    ids[np.arange(max_len)[None, :] < lengths[:, None]] = flat
    return ids


def build_label_map(labels: Iterable[str]) -> list[str]:
    """Sorted distinct labels: position = class id. Sorting makes ids independent of row order."""
    return sorted({str(label) for label in labels})


def encode_labels(labels: Iterable[str], label_map: Sequence[str]) -> np.ndarray:
    lookup = {label: i for i, label in enumerate(label_map)}
    try:
        return np.fromiter((lookup[str(x)] for x in labels), dtype=np.int64)
    except KeyError as exc:
        raise ValueError(
            f"label {exc.args[0]!r} is not in the label map {list(label_map)}"
        ) from None


def save_split(
    path: Path,
    ids: np.ndarray,
    lengths: np.ndarray,
    labels: np.ndarray,
    bags: Mapping[str, np.ndarray] | None = None,
) -> None:
    """One split's tensors; ``bags`` (:func:`wide_bags`) adds the wide branch's inputs."""
    tensors = {"ids": ids, "lengths": lengths, "labels": labels, **(bags or {})}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def wide_bags(
    featurizer: NgramFeaturizer, token_lists: Sequence[Sequence[str]]
) -> dict[str, np.ndarray]:
    """One split's inputs to the wide branch: each text's n-gram bag, ragged (``bag_ids``,
    ``bag_counts``, ``bag_weights``), and ``bag_word_counts``: how many entries of each bag
    are word n-grams, so that training can also fit the character n-grams alone."""
    ids, counts, weights = featurizer(token_lists)
    return {"bag_ids": ids, "bag_counts": counts, "bag_weights": weights,
            "bag_word_counts": featurizer.word_counts(ids, counts)}  # fmt: skip


def load_split(path: Path) -> dict[str, np.ndarray]:
    return load_file(str(path))


def save_label_map(path: Path, label_map: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps({"labels": list(label_map)}, ensure_ascii=False), encoding="utf-8"
        )


def load_label_map(path: Path) -> list[str]:
    labels = json.loads(Path(path).read_text(encoding="utf-8"))["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{path}: 'labels' must be a list of strings")
    return labels


__all__ = [
    "PAD",
    "PAD_ID",
    "UNK",
    "UNK_ID",
    "build_label_map",
    "encode_labels",
    "encode_tokens",
    "load_label_map",
    "load_split",
    "pad_ragged",
    "save_label_map",
    "save_split",
    "wide_bags",
]
