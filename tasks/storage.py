"""Atomic, content-addressed artifact storage.

Every artifact is a directory ``<workdir>/<stage>/<key>/`` holding its files plus a
``_manifest.json`` listing each file's size and sha256 and a ``digest`` over them all.
A directory is built under a temporary name and renamed into place, so a reader never
sees a partial artifact; the manifest is what proves an artifact is complete and intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "_manifest.json"
_CHUNK = 1 << 20
# mkstemp/mkdtemp create 0600/0700 entries; finished files get the usual umask-based modes.
# Read once at import (os.umask can only be read by setting it, which races with threads).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hash a file in 1 MiB chunks (prefect's file_hash reads whole files into memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of JSON-able data (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it into place with os.replace.

    On any error the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def build_manifest(folder: Path) -> dict[str, Any]:
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return {"files": files, "digest": sha256_json(files)}


def manifest_entry_problem(folder: Path, rel: Any) -> str | None:
    """Why a manifest entry must not be opened, or None: an entry is a plain relative name
    inside ``folder`` naming a regular file (a symlink only if it stays inside). Checked
    before any listed file is opened, so a manifest naming ``/dev/zero`` or
    ``../../etc/passwd`` never makes a reader hang on, or read, something outside."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        return f"manifest entry {rel!r} is not a file name"
    parts = rel.split("/")
    if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
        return f"manifest entry {rel!r} is not a plain relative name inside the folder"
    path = folder / rel
    try:
        inside = Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(folder)))
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return f"{rel} is listed in the manifest but missing"
    if not inside:
        return f"manifest entry {rel!r} leads outside the folder (a symlink)"
    if not stat.S_ISREG(mode):
        return f"manifest entry {rel!r} is not a regular file"
    return None


def manifest_problem(folder: Path, manifest: Any) -> str | None:
    """Why a parsed manifest is unusable (shape or any entry), or None."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return f"{MANIFEST} is not a manifest (no 'files' object)"
    for rel, meta in manifest["files"].items():
        if not isinstance(meta, dict) or not isinstance(meta.get("size"), int):
            return f"manifest entry {rel!r} has no size"
        problem = manifest_entry_problem(folder, rel)
        if problem:
            return problem
    return None


def verify_artifact(folder: str | os.PathLike[str], deep: bool = True) -> str | None:
    """Return the artifact's digest if it is complete and intact, else None.

    ``deep`` re-hashes every file, so a truncated or corrupted file is caught even when
    its size happens to match; shallow checks only presence and sizes.
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest_problem(folder, manifest) is not None:
            return None
        for rel, meta in manifest["files"].items():
            path = folder / rel
            if path.stat().st_size != meta["size"]:
                return None
            if deep and sha256_file(path) != meta["sha256"]:
                return None
        return str(manifest["digest"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class ArtifactRef:
    """A small, picklable pointer to a finished artifact: what tasks pass and caches store."""

    stage: str
    key: str
    path: str
    digest: str

    def file(self, name: str) -> Path:
        return Path(self.path) / name


@contextlib.contextmanager
def building_artifact(root: str | os.PathLike[str], stage: str, key: str) -> Iterator[Path]:
    """Build an artifact in a temporary folder, then write its manifest and rename it into place.

    Use ``finish_artifact`` semantics through the context manager: the body writes files into
    the yielded folder; on success the folder becomes ``<root>/<stage>/<key>``.
    """
    final = Path(root) / stage / key
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        manifest = build_manifest(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        if final.exists():
            # A stale or corrupt copy (a valid one would have been reused): replace it.
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process finished the same key first; its content is identical.
            if verify_artifact(final, deep=False) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def artifact_ref(root: str | os.PathLike[str], stage: str, key: str) -> ArtifactRef | None:
    """The ref of an existing, intact artifact, or None if it must be (re)built."""
    folder = Path(root) / stage / key
    digest = verify_artifact(folder)
    if digest is None:
        return None
    return ArtifactRef(stage=stage, key=key, path=str(folder.resolve()), digest=digest)
