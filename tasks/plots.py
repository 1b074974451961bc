"""Headless matplotlib plots (Agg backend): training curves and the confusion matrix.

Pure functions: data in, PNG file out (written to a temporary name and renamed into place).
No Prefect, no display.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from tasks.display import plain
from tasks.storage import atomic_path

TRAINING_CURVE = "training_curve.png"
CONFUSION_PNG = "confusion.png"

# Fonts that can draw Chinese labels, if one is installed; otherwise matplotlib's default
# (labels still render, CJK glyphs as boxes, and the markdown table names them exactly).
_CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Source Han Sans SC",
    "AR PL UMing CN",
)


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, imported on first use: importing it
    costs ~1.5 s, which every cached rerun and scoring run would pay for nothing."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _font_family() -> list[str]:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return [f for f in _CJK_FONTS if f in installed] + ["DejaVu Sans"]


@contextmanager
def _style() -> Iterator[None]:
    with _pyplot().rc_context({"font.family": _font_family()}), warnings.catch_warnings():
        # No CJK font installed: matplotlib warns per missing glyph and draws boxes.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


def plot_training_curve(
    history: Sequence[dict[str, Any]], path: Path, best_epoch: int | None = None
) -> Path:
    """Loss (train, valid) and validation accuracy / macro-F1 per epoch → PNG at ``path``."""
    epochs = [int(r["epoch"]) for r in history]
    with _style():
        fig, (ax_loss, ax_score) = _pyplot().subplots(1, 2, figsize=(9, 3.4))
        if epochs:
            ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
            ax_loss.plot(epochs, [r["valid_loss"] for r in history], "s--", label="valid loss")
            ax_score.plot(
                epochs, [r["valid_accuracy"] for r in history], "o-", label="valid accuracy"
            )
            ax_score.plot(
                epochs, [r["valid_macro_f1"] for r in history], "s--", label="valid macro-F1"
            )
            if best_epoch is not None:
                ax_score.axvline(
                    best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}"
                )
        else:
            for ax in (ax_loss, ax_score):
                ax.text(0.5, 0.5, "no epochs", ha="center", va="center", transform=ax.transAxes)
        ax_loss.set_title("loss")
        ax_score.set_title("validation")
        ax_score.set_ylim(0, 1.02)
        for ax in (ax_loss, ax_score):
            ax.set_xlabel("epoch")
            if epochs:
                ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
                ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """Confusion matrix (rows = true, columns = predicted), counts in the cells → PNG."""
    matrix = np.asarray(confusion, dtype=np.int64).reshape(len(labels), len(labels))
    n = len(labels)
    size = min(2.0 + 0.6 * n, 14.0)
    with _style():
        fig, ax = _pyplot().subplots(figsize=(size + 1.2, size))
        image = ax.imshow(matrix, cmap="Blues", vmin=0)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        # Labels are text, never markup: "$\\foo{$" must not reach mathtext (it raised).
        names = [plain(x) for x in labels]
        ax.set_xticks(
            range(n),
            names,
            rotation=45 if n > 4 else 0,
            ha="right" if n > 4 else "center",
            parse_math=False,
        )
        ax.set_yticks(range(n), names, parse_math=False)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion matrix (test)")
        if n <= 30:
            top = matrix.max() if matrix.size else 0
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if top and matrix[i, j] > top / 2 else "black",
                    )
        fig.tight_layout()
        return _save(fig, path)


RELIABILITY_PNG = "reliability.png"


def plot_reliability(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], path: Path,
    ece_before: float, ece_after: float,
) -> Path:  # fmt: skip
    """Reliability diagram (accuracy against confidence per bin), before and after the
    temperature, with the diagonal of perfect calibration → PNG."""
    with _style():
        fig, ax = _pyplot().subplots(figsize=(4.6, 4.2))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
        for bins, style, name, ece in (
            (before, "s--", "before", ece_before),
            (after, "o-", "after temperature", ece_after),
        ):
            kept = [b for b in bins if b["n"]]
            ax.plot([b["confidence"] for b in kept], [b["accuracy"] for b in kept], style,
                    label=f"{name} (ECE {ece:.3f})")  # fmt: skip
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("reliability (test)")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)
