"""Guards on the paths a command writes: an output never replaces an input or a sealed folder.

Paths are compared by what they are, not how they are spelled: a file is the same file when
``os.stat`` (which follows symlinks) gives the same device and inode, so ``./in.csv``, a
symlink to it and a hard link of it all count as ``in.csv``. These checks run before
anything is read, so a refused command has touched nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tasks.errors import InputError
from tasks.storage import MANIFEST

#: The folders of a work dir that hold artifacts, cache records and bookkeeping: never a
#: place for a user's output (``tasks/stages.py``, ``tasks/cache.py``, ``flows/pipeline.py``).
WORKDIR_FOLDERS = frozenset(
    {"corpus", "tokens", "ngrams", "vocab", "encoded", "model", "metrics", "bundle",
     "cache", "locks", "checkpoints", "runs", "shards"}
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
    return (folder / "runs" / "latest.json").is_file() or (folder / "cache").is_dir()


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
    output: str | os.PathLike[str], sealed: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Refuse an ``output`` inside a model bundle or artifact (a folder with a manifest),
    inside one of the ``sealed`` folders (e.g. the ``--model`` bundle), or inside a work
    dir's artifact folders: writing there would break what was sealed."""
    out = Path(output)
    out_real = _real(out)
    for folder in sealed:
        if out_real.is_relative_to(_real(Path(folder))):
            raise InputError(
                f"{out}: --output is inside the model bundle {folder}: pick a path outside it"
            )
    for parent in out_real.parents:
        if (parent / MANIFEST).is_file():
            raise InputError(
                f"{out}: --output is inside the sealed folder {parent} (a model bundle or "
                "artifact): pick a path outside it"
            )
        if parent.name in WORKDIR_FOLDERS and is_workdir(parent.parent):
            raise InputError(
                f"{out}: --output is inside the work dir's {parent.name}/ folder "
                f"({parent.parent}): pick a path outside it"
            )
