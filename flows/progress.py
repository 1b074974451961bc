"""Progress bars on a terminal: segmentation, training epochs and scoring.

When stderr is a terminal, ``zhflow run`` and ``zhflow score`` draw rich progress bars
(rich comes with Prefect); otherwise (CI, a log file, the Prefect UI's logs) only the plain
log lines are written, as before. ``ZHFLOW_PROGRESS=0`` turns the bars off, ``=1`` forces
them on.

The bars listen to the same process-local hooks as the Prefect progress artifacts
(``zhflow.tasks.stages.SEGMENT_HOOKS`` and ``EPOCH_HOOKS``; :data:`SCORE_HOOKS` for scoring),
so the tasks do not know who watches them.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: Scoring progress, ``{"rows": rows scored so far, "total": estimated rows or None}``.
SCORE_HOOKS: list[Callable[[dict[str, Any]], None]] = []


def bars_wanted() -> bool:
    choice = os.environ.get("ZHFLOW_PROGRESS", "")
    if choice in ("0", "1"):
        return choice == "1"
    return sys.stderr.isatty()


def scoring_listener(
    progress: Callable[[int], None], estimate: Callable[[], int | None]
) -> Callable[[int], None]:
    """``progress`` (a scorer's rows callback), also reported to :data:`SCORE_HOOKS` when a
    bar listens; ``estimate`` (the expected row count) is called only then."""
    if not SCORE_HOOKS:
        return progress
    total = estimate()

    def both(rows: int) -> None:
        progress(rows)
        for hook in list(SCORE_HOOKS):
            hook({"rows": rows, "total": total})

    return both


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=Console(stderr=True),
        transient=False,
    )


class _Bars:
    """One rich Progress with a bar per stage, created when the stage first reports."""

    def __init__(self, progress: Any, epochs: int | None) -> None:
        self.progress = progress
        self.epochs = epochs
        self.tasks: dict[str, Any] = {}

    def _bar(self, name: str, total: float | None) -> Any:
        if name not in self.tasks:
            self.tasks[name] = self.progress.add_task(name, total=total, note="")
        return self.tasks[name]

    def segmentation(self, record: dict[str, Any]) -> None:
        bar = self._bar("segmentation", record["total"])
        self.progress.update(bar, completed=record["done"], total=record["total"])

    def training(self, record: dict[str, Any]) -> None:
        bar = self._bar("training epochs", self.epochs)
        note = (f"loss {record['train_loss']:.4f}  valid acc {record['valid_accuracy']:.4f}  "
                f"macro-F1 {record['valid_macro_f1']:.4f}")  # fmt: skip
        self.progress.update(bar, completed=record["epoch"], note=note)

    def scoring(self, record: dict[str, Any]) -> None:
        total = max(record["total"] or 0, record["rows"]) or None
        bar = self._bar("scoring", total)
        self.progress.update(bar, completed=record["rows"], total=total)


@contextlib.contextmanager
def terminal_bars(epochs: int | None = None) -> Iterator[None]:
    """Draw the bars while the block runs, when :func:`bars_wanted`; else do nothing."""
    if not bars_wanted():
        yield
        return
    progress = _progress()
    bars = _Bars(progress, epochs)
    hooks: list[tuple[list, Callable[[dict[str, Any]], None]]] = [(SCORE_HOOKS, bars.scoring)]
    stages = sys.modules.get("zhflow.tasks.stages")  # loaded by the training flow; not by scoring
    if stages is not None:
        hooks += [(stages.SEGMENT_HOOKS.hooks, bars.segmentation),
                  (stages.EPOCH_HOOKS.hooks, bars.training)]  # fmt: skip
    for registry, hook in hooks:
        registry.append(hook)
    try:
        with progress:
            yield
    finally:
        for registry, hook in hooks:
            registry.remove(hook)
