from __future__ import annotations

from zhflow.tasks.cache import CACHE_DIR, ArtifactPolicy, stage_key
from zhflow.tasks.storage import ArtifactRef, building_artifact

MODULES = ("zhflow.tasks.tables",)


def _ref(digest: str) -> dict:
    return {"stage": "tokens", "key": "k", "path": "/nowhere", "digest": digest}


def test_key_depends_on_content_and_params_not_location() -> None:
    base = stage_key("vocab", MODULES, {"workdir": "/a", "tokens": _ref("d1"), "min_freq": 2})
    assert base == stage_key(
        "vocab", MODULES, {"workdir": "/b", "tokens": _ref("d1"), "min_freq": 2}
    )
    assert base != stage_key(
        "vocab", MODULES, {"workdir": "/a", "tokens": _ref("d2"), "min_freq": 2}
    )
    assert base != stage_key(
        "vocab", MODULES, {"workdir": "/a", "tokens": _ref("d1"), "min_freq": 3}
    )
    assert base != stage_key(
        "ngrams", MODULES, {"workdir": "/a", "tokens": _ref("d1"), "min_freq": 2}
    )
    # the worker count changes speed, not the result
    assert stage_key("t", MODULES, {"workdir": "/a", "workers": 1}) == stage_key(
        "t", MODULES, {"workdir": "/a", "workers": 4}
    )


def test_artifact_ref_objects_key_like_dicts() -> None:
    ref = ArtifactRef(stage="tokens", key="k", path="/elsewhere", digest="d1")
    assert stage_key("s", MODULES, {"x": ref}) == stage_key("s", MODULES, {"x": _ref("d1")})


def test_policy_forgets_record_when_output_is_gone(tmp_path) -> None:
    policy = ArtifactPolicy(stage="vocab", modules=MODULES)
    inputs = {"workdir": str(tmp_path), "min_freq": 2}
    key = stage_key("vocab", MODULES, inputs)
    record = tmp_path / CACHE_DIR / key
    record.parent.mkdir()
    record.write_text("{}")
    with building_artifact(tmp_path, "vocab", key) as out:
        (out / "vocab.parquet").write_bytes(b"data")
    assert policy.compute_key(None, inputs, {}) == key
    assert record.exists()  # intact output: the record stands
    (tmp_path / "vocab" / key / "vocab.parquet").write_bytes(b"dat")  # truncated
    assert policy.compute_key(None, inputs, {}) == key
    assert not record.exists()  # corrupt output: the record is dropped, the task reruns
