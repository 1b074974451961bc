"""Atomic, content-addressed artifact storage.

Every artifact is a directory ``<workdir>/<stage>/<key>/`` holding its files plus a
``_manifest.json`` listing each file's size and sha256 and a ``digest`` over them all.
A directory is built under a temporary name and renamed into place, so a reader never
sees a partial artifact; the manifest is what proves an artifact is complete and intact.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhflow.tasks.catalog import MANIFEST as MANIFEST  # re-exported for readers
from zhflow.tasks.catalog import UNKEYED_JSON_KEYS
from zhflow.tasks.errors import InputError, WriteError, ZhflowError

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


#: errno values that say a location cannot take a write: the user's disk or folder, not a
#: zhflow bug. Anything else propagates as it is.
WRITE_ERRNOS = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOTDIR,
     errno.EISDIR, errno.EEXIST, errno.EFBIG, errno.ENAMETOOLONG, errno.ELOOP}
)  # fmt: skip
# polars and safetensors report OS errors in their message, not as OSError.errno.
_ERRNO_IN_MESSAGE = re.compile(r"\(os error (\d+)\)|\[errno (\d+)\]", re.IGNORECASE)


def write_errno(exc: BaseException) -> int | None:
    """The errno of a failed write, from an OSError or from a library's error message."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    match = _ERRNO_IN_MESSAGE.search(str(exc))
    return int(match.group(1) or match.group(2)) if match else None


def _disk_full(folder: Path) -> bool:
    """No free block left where ``folder`` lives (torch.save reports ENOSPC as a RuntimeError
    about a file position, with no errno)."""
    for candidate in (folder, *folder.parents):
        try:
            return os.statvfs(candidate).f_bfree == 0
        except OSError:
            continue
    return False


def write_failure(exc: BaseException, target: Path) -> InputError | None:
    """The one-line error for a write to ``target`` that failed with ``exc``, or None when
    ``exc`` is not about the location (a bug, or an error reading some other file)."""
    if isinstance(exc, WriteError):  # from a nested guard: say its path as the user knows it
        said = _without_temp_name(Path(os.path.abspath(exc.path)), Path(os.path.abspath(target)))
        return None if said == Path(os.path.abspath(exc.path)) else WriteError(said, exc.why)
    if isinstance(exc, ZhflowError):
        return None
    code = write_errno(exc)
    named = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    if code is None or code not in WRITE_ERRNOS:
        if not isinstance(exc, OSError | RuntimeError) or not _disk_full(target.parent):
            return None
        code, named = errno.ENOSPC, None
    where = Path(os.path.abspath(named)) if named else Path(os.path.abspath(target))
    mine = Path(os.path.abspath(target))
    if named and not (where == mine or where.is_relative_to(mine.parent) or
                      mine.is_relative_to(where)):  # fmt: skip
        return None  # an error about another file (e.g. an input read in the body)
    where = _without_temp_name(where, mine)
    why = os.strerror(code)
    if code in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(where)
        if blocker is not None:
            why = f"{blocker} is a file, not a folder"
    return WriteError(where if named else target, why)


def _without_temp_name(where: Path, target: Path) -> Path:
    """A path under one of our temporary names (``.<name>.*.tmp`` beside the target) said
    as the final path the user knows."""
    if not where.is_relative_to(target.parent) or where == target.parent:
        return where
    first, *rest = where.relative_to(target.parent).parts
    if first.startswith(".") and first.endswith(".tmp"):
        return target.joinpath(*rest)
    return where


def _file_in_the_way(path: Path) -> Path | None:
    """The first existing non-folder on the way to ``path`` (a file named like a folder)."""
    for candidate in reversed((path, *path.parents)):
        if candidate.exists() and not candidate.is_dir():
            return candidate
        if not candidate.exists():
            return None
    return None


@contextlib.contextmanager
def write_guard(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write to ``target`` (read-only or full disk, no permission, a file where
    a folder should be) into one ``InputError`` line naming the path; other errors pass."""
    try:
        yield
    except Exception as exc:
        failure = write_failure(exc, Path(target))
        if failure is None:
            raise
        raise failure from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success move it into place with os.replace.

    On any error the temporary file is removed and ``target`` is left as it was; a failed
    write (see :func:`write_guard`) is one line naming the path.
    """
    target = Path(target)
    with write_guard(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(target)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=target.parent)
        tmp_path = Path(tmp)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held while writing: how a live writer is told
            yield tmp_path
            # After the write: a writer may have replaced the file (safetensors' save_file
            # creates its own, mode 0600), and a bundle must stay readable by whoever may
            # read the folder.
            os.chmod(tmp_path, 0o666 & ~_UMASK)
            os.replace(tmp_path, target)
        finally:
            os.close(fd)
            if tmp_path.exists():
                tmp_path.unlink()


#: A temporary file untouched for this long, and not locked, is a dead writer's leftover.
DEAD_TEMP_SECONDS = 300


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.zhflow-"


def remove_dead_temps(target: Path) -> list[Path]:
    """Remove what a writer killed outright (SIGKILL, power loss) left beside ``target``:
    its ``.<name>.zhflow-XXXXXXXX.tmp`` files, no longer locked (:func:`atomic_path` holds an
    ``flock`` on its file while it writes; the kernel drops it when the process dies) and
    unmodified for :data:`DEAD_TEMP_SECONDS` (on NFS a lock is emulated and can lapse just
    before the rename). Before this, a ``zhflow score`` killed each night left one more
    output-sized file. Names are matched exactly, so no file of the user's is touched."""
    pattern = re.compile(re.escape(_temp_prefix(target)) + r"[a-z0-9_]{8}\.tmp")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            if pattern.fullmatch(entry.name) and _is_dead_temp(Path(entry.path)):
                Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return removed


def _is_dead_temp(path: Path) -> bool:
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
        if time.time() - path.stat().st_mtime < DEAD_TEMP_SECONDS:
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer holds it
    finally:
        os.close(fd)
    return True


def write_json_atomic(target: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")


def build_manifest(folder: Path) -> dict[str, Any]:
    """Every file's size and sha256 (all checked on reading), and the ``digest`` that names
    the content downstream: over the same entries, except that a JSON file of
    :data:`~zhflow.tasks.catalog.UNKEYED_JSON_KEYS` enters it without its wall-clock keys."""
    files, keyed = {}, {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        keyed[rel] = files[rel]
        if path.name in UNKEYED_JSON_KEYS:
            keyed[rel] = {"json": _json_digest(path, UNKEYED_JSON_KEYS[path.name])}
    return {"files": files, "digest": sha256_json(keyed)}


def _json_digest(path: Path, unkeyed: frozenset[str]) -> str:
    """The digest of a JSON file's content with the keys ``unkeyed`` dropped at every depth."""

    def drop(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: drop(v) for k, v in value.items() if k not in unkeyed}
        if isinstance(value, list):
            return [drop(v) for v in value]
        return value

    return sha256_json(drop(json.loads(path.read_text(encoding="utf-8"))))


def write_manifest(folder: Path) -> None:
    """Seal ``folder``: its ``_manifest.json`` (also for a bundle copied outside the store)."""
    (folder / MANIFEST).write_text(json.dumps(build_manifest(folder), indent=2), encoding="utf-8")


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
    with write_guard(final), _building(final, key) as tmp:
        yield tmp


def _give_umask_modes(folder: Path) -> None:
    """Every file and folder of a finished artifact gets the umask's mode: some writers make
    their own files 0600 (safetensors' ``save_file``, ``mkstemp``), and a bundle must stay
    readable by whoever may read the work dir."""
    for path in folder.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


@contextlib.contextmanager
def _building(final: Path, key: str) -> Iterator[Path]:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=final.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        _give_umask_modes(tmp)
        write_manifest(tmp)
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
