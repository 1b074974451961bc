"""Content-based cache keys for Prefect tasks whose results are artifact folders.

A stage's key hashes: the stage name, the source of the code that builds it, its parameters,
and the content digests of the artifacts it reads. The same key names the output folder
(``<workdir>/<stage>/<key>``), so a cache record always points at its own content. The policy
drops the record when that folder is missing or fails its manifest check: Prefect then runs the
task again (and records it afresh) instead of trusting a record whose output was deleted or
corrupted.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.serializers import JSONSerializer
from pydantic import Field

from zhflow.tasks.storage import ArtifactRef, artifact_ref, sha256_json

CACHE_DIR = "cache"  # cache records live in <workdir>/cache/<key>, beside the artifacts

# Parameters that say where or how fast to work, never what to compute.
NON_KEY_PARAMS = frozenset({"workdir", "workers", "cluster", "progress", "log"})


@cache
def code_hash(*modules: str) -> str:
    """sha256 over the source of the modules that define a stage's computation."""
    h = hashlib.sha256()
    for name in modules:
        h.update(inspect.getsource(importlib.import_module(name)).encode("utf-8"))
    return h.hexdigest()


def _key_value(value: Any) -> Any:
    """What of an input goes into the key: an artifact's content digest, else the value."""
    if isinstance(value, ArtifactRef):
        return {"artifact": value.stage, "digest": value.digest}
    if isinstance(value, dict) and {"stage", "key", "path", "digest"} <= value.keys():
        return {"artifact": value["stage"], "digest": value["digest"]}
    if isinstance(value, list | tuple):
        return [_key_value(v) for v in value]
    return value


def stage_key(stage: str, modules: tuple[str, ...], inputs: dict[str, Any]) -> str:
    params = {k: _key_value(v) for k, v in sorted(inputs.items()) if k not in NON_KEY_PARAMS}
    return sha256_json({"stage": stage, "code": code_hash(*modules), "inputs": params})


@dataclass
class ArtifactPolicy(CachePolicy):
    """Cache on input content + parameters + code; miss when the output folder is not intact."""

    stage: str = ""
    modules: tuple[str, ...] = ()

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        key = stage_key(self.stage, self.modules, inputs)
        if artifact_ref(inputs["workdir"], self.stage, key) is None:
            # Output missing or corrupt: forget the record so the task runs and records anew.
            (Path(inputs["workdir"]) / CACHE_DIR / key).unlink(missing_ok=True)
        return key


def find_artifact(
    workdir: str, stage: str, modules: tuple[str, ...], inputs: dict[str, Any]
) -> tuple[str, ArtifactRef | None]:
    """The stage key for these inputs and the intact artifact under it, if one exists."""
    key = stage_key(stage, modules, inputs)
    return key, artifact_ref(workdir, stage, key)


# ------------------------------------------------------------------------------------------
# Relocatable records: a work dir can be copied, moved or mounted elsewhere


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and {"stage", "key", "path", "digest"} <= value.keys()


def relative_ref(value: Any) -> Any:
    """An artifact ref as stored: its folder relative to the work dir (``<stage>/<key>``)."""
    if _is_ref(value):
        return {**value, "path": f"{value['stage']}/{value['key']}"}
    return value


def anchor_ref(value: Any, workdir: str | Path) -> Any:
    """An artifact ref as used: its folder in *this* work dir, whatever the record says (an
    absolute path in an old record is another work dir's, e.g. the one this was copied from)."""
    if _is_ref(value):
        return {**value, "path": str(Path(workdir) / value["stage"] / value["key"])}
    return value


class RelocatableJSON(JSONSerializer):
    """Prefect's JSON records, with artifact refs relative to the work dir: a record is
    valid wherever its work dir is (the flow anchors refs on reading, ``anchor_ref``)."""

    type: str = Field(default="zhflow-json", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return super().dumps(relative_ref(obj))
