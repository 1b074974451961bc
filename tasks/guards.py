"""Guards on the paths a command writes: an output never replaces an input or a sealed folder.

Paths are compared by what they are, not how they are spelled: a file is the same file when
``os.stat`` (which follows symlinks) gives the same device and inode, so ``./in.csv``, a
symlink to it and a hard link of it all count as ``in.csv``. These checks run before
anything is read, so a refused command has touched nothing.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from zhflow.tasks import catalog
from zhflow.tasks.errors import InputError, ZhflowError
from zhflow.tasks.storage import MANIFEST, write_errno

F = TypeVar("F", bound=Callable[..., Any])

#: The folders of a work dir that hold artifacts, cache records and bookkeeping: never a
#: place for a user's output (``tasks/stages.py``, ``tasks/cache.py``, ``flows/pipeline.py``).
WORKDIR_FOLDERS = frozenset(
    {"corpus", "tokens", "ngrams", "vocab", "encoded", "model", "metrics", "bundle",
     catalog.CACHE_DIR, catalog.LOCKS_DIR, catalog.CHECKPOINTS_DIR,
     catalog.LATEST_RUN.split("/")[0], catalog.SHARDS_DIR}
)  # fmt: skip


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` names after following symlinks; None if unreadable."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _real(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(path))))


def is_workdir(folder: Path) -> bool:
    """A zhflow work dir: it has run records or a cache folder."""
    return (folder / catalog.LATEST_RUN).is_file() or (folder / catalog.CACHE_DIR).is_dir()


def check_output_not_input(output: str | os.PathLike[str], inputs: Iterable[str]) -> None:
    """Refuse an ``output`` that is one of ``inputs`` (same file) or inside an input folder."""
    out = Path(output)
    out_real = _real(out)  # "new/../in.csv" is in.csv once the writer creates new/
    out_id = _identity(out_real)
    for given in inputs:
        source = Path(given)
        if out_id is not None and _identity(source) == out_id:
            raise InputError(
                f"{out}: --output is the input {source}; scoring would replace it: "
                "pick another output file"
            )
        if source.is_dir() and out_real.is_relative_to(_real(source)):
            raise InputError(
                f"{out}: --output is inside the input folder {source}: pick a path outside it"
            )


def check_output_outside_sealed(
    output: str | os.PathLike[str],
    sealed: Iterable[str | os.PathLike[str]] = (),
    flag: str = "--output",
    is_folder: bool = False,
) -> None:
    """Refuse an ``output`` inside a model bundle or artifact (a folder with a manifest),
    inside one of the ``sealed`` folders (e.g. the ``--bundle`` bundle), or inside a work
    dir's artifact folders: writing there would break what was sealed. ``flag`` names the
    option in the message; ``is_folder``: ``output`` is a folder to write into, so it must not
    be a sealed one itself either."""
    out = Path(output)
    out_real = _real(out)
    for folder in sealed:
        if out_real.is_relative_to(_real(Path(folder))):
            raise InputError(
                f"{out}: {flag} is inside the model bundle {folder}: pick a path outside it"
            )
    for parent in (out_real, *out_real.parents) if is_folder else out_real.parents:
        if (parent / MANIFEST).is_file():
            raise InputError(
                f"{out}: {flag} is inside the sealed folder {parent} (a model bundle or "
                "artifact): pick a path outside it"
            )
        if parent.name in WORKDIR_FOLDERS and is_workdir(parent.parent):
            raise InputError(
                f"{out}: {flag} is inside the work dir's {parent.name}/ folder "
                f"({parent.parent}): pick a path outside it"
            )


_READ_HINTS = {
    errno.ENODEV: "; a pipe or device cannot be read in chunks: save it to a file first",
    errno.ESPIPE: "; a pipe or device cannot be read in chunks: save it to a file first",
    errno.ELOOP: "; a symlink loop",
}


def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return str(source)
    return ", ".join(map(str, source))


def read_failure(exc: BaseException, source: Any) -> InputError | None:
    """The one-line error for an OS error met while reading ``source``, naming the input
    (never the output), or None when ``exc`` is not an OS error."""
    if isinstance(exc, ZhflowError):
        return None
    code = write_errno(exc)
    if code is None:  # not an OS error (bad content is reported by the reader itself)
        return None
    named = exc.filename if isinstance(exc, OSError) and exc.filename else _describe(source)
    return InputError(f"{named}: cannot read ({os.strerror(code)}{_READ_HINTS.get(code, '')})")


def reads_input(fn: F) -> F:
    """Decorate a reader whose first argument is the input: an OS error while it reads
    (a generator: while it yields) becomes one line naming that input."""

    def refuse(exc: Exception, source: Any) -> None:
        failure = read_failure(exc, source)
        if failure is None:
            raise exc
        raise failure from None

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(source: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(source, *args, **kwargs)
            except Exception as exc:
                refuse(exc, source)

        return generator  # type: ignore[return-value]

    @functools.wraps(fn)
    def function(source: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(source, *args, **kwargs)
        except Exception as exc:
            refuse(exc, source)

    return function  # type: ignore[return-value]


def check_readable(path: str | os.PathLike[str]) -> None:
    """Refuse a path that cannot even be looked at (a symlink loop, a name too long, a file
    used as a folder); a missing path is left to the reader, which names it."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno is None:
            raise
        raise InputError(
            f"{path}: cannot read ({os.strerror(exc.errno)}{_READ_HINTS.get(exc.errno, '')})"
        ) from None


def check_workdir(workdir: str | os.PathLike[str]) -> None:
    """The work dir is a folder this process can write, or can be created as one."""
    from zhflow.tasks.storage import WRITE_ERRNOS

    if not os.fspath(workdir).strip():  # "" would silently be the current directory
        raise InputError("--workdir is empty: name a folder (default data/work)")

    path = Path(os.path.abspath(os.path.expanduser(workdir)))
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # to be created; a file on the way: below
        pass
    except OSError:
        check_readable(path)  # a symlink loop...: one line
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise InputError(f"--workdir {workdir}: {existing} is a file, not a folder")
    # Inside a bundle, the cached corpus and tokens would ship with it (and break its seal).
    check_output_outside_sealed(path, flag="--workdir", is_folder=True)
    if existing != path:
        return  # created on first write; a failure there is one line (write_guard)
    try:
        with open(path / f".zhflow-write-probe-{os.getpid()}", "wb") as probe:
            os.unlink(probe.name)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise InputError(f"--workdir {workdir}: cannot write ({os.strerror(exc.errno)})") from None
