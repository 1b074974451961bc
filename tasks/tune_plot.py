"""The tune report's PNG: validation score by trial, and the most important parameters.

Pure: data in, PNG out (``tasks/plots.py``'s font, style and atomic save). No Prefect.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zhflow.tasks.plots import _pyplot, _save, _style

TUNE_PNG = "tune.png"
TOP_PARAMS = 8


def plot_tune(
    points: Sequence[Mapping[str, Any]],
    importances: Mapping[str, float],
    path: Path,
    metric: str,
) -> Path:
    """``points``: one per finished trial, ``{"trial", "value", "state"}`` (``value`` is the
    last validation score a pruned trial reported). Completed trials are dots, pruned ones
    crosses, with the best so far as a line; ``importances`` (parameter → share) as bars."""
    with _style():
        fig, (ax_score, ax_imp) = _pyplot().subplots(1, 2, figsize=(10, 3.6))
        shown = [p for p in points if p.get("value") is not None]
        for state, marker, label in (("complete", "o", "completed"), ("pruned", "x", "pruned")):
            chosen = [p for p in shown if p["state"] == state]
            if chosen:
                ax_score.scatter([p["trial"] for p in chosen], [p["value"] for p in chosen],
                                 marker=marker, label=label)  # fmt: skip
        done = sorted((p for p in shown if p["state"] == "complete"), key=lambda p: p["trial"])
        if done:
            best, xs, ys = -1.0, [], []
            for p in done:
                best = max(best, float(p["value"]))
                xs.append(p["trial"])
                ys.append(best)
            ax_score.step(xs, ys, where="post", color="grey", label="best so far")
            ax_score.legend(fontsize=8)
        else:
            ax_score.text(0.5, 0.5, "no completed trial", ha="center", va="center",
                          transform=ax_score.transAxes)  # fmt: skip
        from matplotlib.ticker import MaxNLocator

        ax_score.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbers
        ax_score.set_xlabel("trial")
        ax_score.set_ylabel(f"validation {metric}")
        ax_score.set_title("score by trial")
        ax_score.grid(alpha=0.3)
        top = sorted(importances.items(), key=lambda kv: -kv[1])[:TOP_PARAMS]
        if top:
            names = [name for name, _ in reversed(top)]
            ax_imp.barh(names, [share for _, share in reversed(top)])
            ax_imp.set_xlabel("importance (share)")
        else:
            ax_imp.text(0.5, 0.5, "needs 2+ completed trials\nthat differ", ha="center",
                        va="center", transform=ax_imp.transAxes)  # fmt: skip
            ax_imp.set_yticks([])
        ax_imp.set_title("parameter importance")
        fig.tight_layout()
        return _save(fig, path)
