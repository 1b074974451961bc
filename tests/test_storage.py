from __future__ import annotations

import os

import pytest

from zhflow.tasks.storage import (
    artifact_ref,
    atomic_path,
    building_artifact,
    sha256_file,
    verify_artifact,
)


def test_atomic_path_leaves_target_untouched_on_error(tmp_path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_artifact_is_built_then_verified(tmp_path) -> None:
    with building_artifact(tmp_path, "stage", "k1") as out:
        (out / "a.txt").write_text("hello")
    ref = artifact_ref(tmp_path, "stage", "k1")
    assert ref is not None and ref.file("a.txt").read_text() == "hello"
    assert ref.digest == verify_artifact(tmp_path / "stage" / "k1")


def test_corrupt_or_truncated_artifact_is_rejected(tmp_path) -> None:
    with building_artifact(tmp_path, "stage", "k1") as out:
        (out / "a.txt").write_text("hello")
    path = tmp_path / "stage" / "k1" / "a.txt"
    path.write_text("jello")  # same size, other content
    assert verify_artifact(path.parent) is None
    assert verify_artifact(path.parent, deep=False) is not None
    path.write_text("hel")
    assert artifact_ref(tmp_path, "stage", "k1") is None


def test_failed_build_leaves_nothing(tmp_path) -> None:
    with pytest.raises(ValueError), building_artifact(tmp_path, "stage", "k2") as out:
        (out / "a.txt").write_text("partial")
        raise ValueError("bad input")
    assert list((tmp_path / "stage").iterdir()) == []


def test_sha256_file_chunks(tmp_path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (3 << 20))
    import hashlib

    assert sha256_file(path) == hashlib.sha256(b"x" * (3 << 20)).hexdigest()
