"""Content-based cache keys for Prefect tasks whose results are artifact folders.

A stage's key hashes: the stage name, its code version (the catalog's explicit version and the
syntax of the functions that build it and of what they call: tasks/codeversion.py), its
parameters, and the content digests of the artifacts it reads. The same key names the output folder
(``<workdir>/<stage>/<key>``), so a cache record always points at its own content. The policy
drops the record when that folder is missing or fails its manifest check: Prefect then runs the
task again (and records it afresh) instead of trusting a record whose output was deleted or
corrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.serializers import JSONSerializer
from pydantic import Field

from zhflow.tasks import catalog
from zhflow.tasks.catalog import CACHE_DIR  # records: <workdir>/cache/<key>, beside artifacts
from zhflow.tasks.codeversion import code_version
from zhflow.tasks.storage import ArtifactRef, artifact_ref, sha256_json

# Parameters that say where or how fast to work, never what to compute.
NON_KEY_PARAMS = frozenset({"workdir", "workers", "cluster", "progress", "log"})


@dataclass(frozen=True)
class StageCode:
    """What builds a stage: its task function (the root of its code version) and the
    parameters that never enter its key beyond :data:`NON_KEY_PARAMS`."""

    root: Callable[..., Any]
    key_ignores: tuple[str, ...] = ()


#: Filled by ``zhflow.tasks.stages.artifact_task``: stage name -> its code.
STAGE_CODE: dict[str, StageCode] = {}


@cache
def stage_code(stage: str) -> str:
    """A stage's code version: the catalog's explicit ``version`` and the hash of the functions
    that build it and what they call (tasks/codeversion.py)."""
    return f"v{catalog.stage(stage).version}-{code_version(STAGE_CODE[stage].root)}"


def _key_value(value: Any) -> Any:
    """What of an input goes into the key: an artifact's content digest, else the value."""
    if isinstance(value, ArtifactRef):
        return {"artifact": value.stage, "digest": value.digest}
    if _is_ref(value):
        return {"artifact": value["stage"], "digest": value["digest"]}
    if isinstance(value, list | tuple):
        return [_key_value(v) for v in value]
    return value


def stage_key(
    stage: str, code: str, inputs: dict[str, Any], key_ignores: tuple[str, ...] = ()
) -> str:
    """The key of ``stage`` built by code version ``code`` from ``inputs``."""
    ignored = NON_KEY_PARAMS | set(key_ignores)
    params = {k: _key_value(v) for k, v in sorted(inputs.items()) if k not in ignored}
    return sha256_json({"stage": stage, "code": code, "inputs": params})


def key_of(stage: str, inputs: dict[str, Any]) -> str:
    """The key of a registered stage (``STAGE_CODE``) for ``inputs``."""
    return stage_key(stage, stage_code(stage), inputs, STAGE_CODE[stage].key_ignores)


@dataclass
class ArtifactPolicy(CachePolicy):
    """Cache on input content + parameters + code; miss when the output folder is not intact.

    ``code`` stands in for the registered stage's code version (tests)."""

    stage: str = ""
    code: str = ""

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        key = stage_key(self.stage, self.code, inputs) if self.code else key_of(self.stage, inputs)
        if artifact_ref(inputs["workdir"], self.stage, key) is None:
            # Output missing or corrupt: forget the record so the task runs and records anew.
            (Path(inputs["workdir"]) / CACHE_DIR / key).unlink(missing_ok=True)
        return key


def find_artifact(
    workdir: str, stage: str, inputs: dict[str, Any]
) -> tuple[str, ArtifactRef | None]:
    """The stage key for these inputs and the intact artifact under it, if one exists."""
    key = key_of(stage, inputs)
    return key, artifact_ref(workdir, stage, key)


# ------------------------------------------------------------------------------------------
# Relocatable records: a work dir can be copied, moved or mounted elsewhere


def _is_ref(value: Any) -> bool:
    return isinstance(value, dict) and {"stage", "key", "path", "digest"} <= value.keys()


def as_ref(value: Any) -> Any:
    """An ``ArtifactRef`` for a ref as stored (a JSON object), anything else unchanged."""
    return ArtifactRef(**{k: value[k] for k in ("stage", "key", "path", "digest")}) if _is_ref(
        value) else value  # fmt: skip


def relative_ref(value: Any) -> Any:
    """An artifact ref as stored: a JSON object, its folder relative to the work dir
    (``<stage>/<key>``)."""
    if isinstance(value, ArtifactRef):
        value = asdict(value)
    if _is_ref(value):
        return {**value, "path": f"{value['stage']}/{value['key']}"}
    return value


def anchor_ref(value: Any, workdir: str | Path) -> Any:
    """An artifact ref as used: an ``ArtifactRef`` whose folder is in *this* work dir, whatever
    the record says (an absolute path in an old record is another work dir's, e.g. the one this
    was copied from)."""
    ref = as_ref(value)
    if isinstance(ref, ArtifactRef):
        return replace(ref, path=str(Path(workdir) / ref.stage / ref.key))
    return value


class RelocatableJSON(JSONSerializer):
    """Prefect's JSON records, with artifact refs relative to the work dir: a record is
    valid wherever its work dir is (the flow anchors refs on reading, ``anchor_ref``)."""

    type: str = Field(default="zhflow-json", frozen=True)

    def dumps(self, obj: Any) -> bytes:
        return super().dumps(relative_ref(obj))

    def loads(self, blob: bytes) -> Any:
        return as_ref(super().loads(blob))
