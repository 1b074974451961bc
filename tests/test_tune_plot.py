"""tasks/tune_plot.py on its own: the tune report's PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zhflow.tasks.tune_plot import plot_tune

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_tune_writes_a_png_for_completed_pruned_and_failed_trials(tmp_path: Path) -> None:
    points: list[dict[str, Any]] = [
        {"trial": 0, "value": 0.81, "state": "complete"},
        {"trial": 1, "value": 0.74, "state": "pruned"},
        {"trial": 2, "value": None, "state": "fail"},  # no score: not drawn
        {"trial": 3, "value": 0.86, "state": "complete"},
    ]
    out = plot_tune(points, {"lr": 0.7, "hidden": 0.3}, tmp_path / "t" / "tune.png", "macro_f1")
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert not list(out.parent.glob("*.tmp"))  # written in place atomically


def test_plot_tune_with_no_finished_trial_and_no_importances(tmp_path: Path) -> None:
    out = plot_tune([], {}, tmp_path / "tune.png", "accuracy")
    assert out.read_bytes()[:8] == PNG_MAGIC
