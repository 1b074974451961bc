"""Headless matplotlib plots (Agg backend): training curves and the confusion matrix.

Pure functions: data in, PNG file out (written to a temporary name and renamed into place).
No Prefect, no display.

Every plot is drawn in Noto Sans CJK SC, shipped by the ``noto-cjk-sans-otc`` wheel (pinned in
constraints.txt) and registered with matplotlib here, so Chinese labels render on a fresh
machine with no CJK font installed instead of silently turning into boxes. The font's identity
(:func:`plot_font`) is an input of the metrics stage: a new font redraws cached plots.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from zhflow.tasks import catalog
from zhflow.tasks.display import plain
from zhflow.tasks.storage import atomic_path, sha256_file

TRAINING_CURVE = catalog.TRAINING_CURVE_PNG
CONFUSION_PNG = catalog.CONFUSION_PNG

#: The package that ships the plot font, and the face of its collection the plots use.
FONT_PACKAGE = "noto-cjk-sans-otc"
FONT_FAMILY = "Noto Sans CJK SC"
#: Pixels per inch of the PNGs: small enough to inline in a UI artifact (tens of KB each).
DPI = 96


def _pyplot() -> Any:
    """matplotlib's pyplot on the headless Agg backend, imported on first use: importing it
    costs ~1.5 s, which every cached rerun and scoring run would pay for nothing."""
    import matplotlib

    matplotlib.use("Agg")  # headless; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def font_file() -> Path:
    """The font collection (.ttc) inside the installed ``noto-cjk-sans-otc`` package."""
    import noto_cjk_sans_otc

    return Path(str(noto_cjk_sans_otc.FONT_PATH))


@cache
def plot_font() -> dict[str, str]:
    """What the plots are drawn with: package, version, family and the font file's sha256."""
    path = font_file()
    return {
        "package": FONT_PACKAGE,
        "version": metadata.version(FONT_PACKAGE),
        "family": FONT_FAMILY,
        "file": path.name,
        "sha256": sha256_file(path),
    }


def register_font() -> str:
    """Add the shipped font to matplotlib's font manager unless it is there; its family."""
    from matplotlib import font_manager

    path = str(font_file())
    if not any(entry.fname == path for entry in font_manager.fontManager.ttflist):
        font_manager.fontManager.addfont(path)  # every face of the collection
    return FONT_FAMILY


@contextmanager
def _style() -> Iterator[None]:
    plt = _pyplot()
    # DejaVu Sans (matplotlib's own) only for the rare glyph Noto Sans CJK lacks.
    family = [register_font(), "DejaVu Sans"]
    with plt.rc_context({"font.family": family}), warnings.catch_warnings():
        # A glyph neither font has (an emoji in a label): matplotlib warns and draws a box.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        yield


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        drawn = io.BytesIO()
        fig.savefig(drawn, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    from PIL import Image  # matplotlib's own dependency

    # A plot has few colours: a 256-colour palette makes the PNG ~3x smaller than RGBA, which
    # matters once it is inlined (base64) in a UI artifact, and looks the same.
    image = Image.open(drawn).convert("RGB").quantize(colors=256)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
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


def row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (the share of each true label's texts per prediction);
    a row with no texts stays 0."""
    totals = matrix.sum(axis=1, keepdims=True).astype(np.float64)
    out = np.zeros(matrix.shape, dtype=np.float64)
    np.divide(matrix, totals, out=out, where=totals != 0)
    return out


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """Confusion matrix (rows = true, columns = predicted) → PNG. Colour is the row share, so
    a small class's errors show as clearly as a large one's; cells give count and share."""
    matrix = np.asarray(confusion, dtype=np.int64).reshape(len(labels), len(labels))
    shares = row_shares(matrix)
    n = len(labels)
    size = min(2.0 + 0.5 * n, 9.0)  # inches; 9 at 96 dpi keeps a 14-class PNG under 100 KB
    with _style():
        fig, ax = _pyplot().subplots(figsize=(size + 1.2, size))
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true label")
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
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        f"{matrix[i, j]:,}\n{shares[i, j]:.0%}",
                        ha="center",
                        va="center",
                        fontsize=8 if n <= 12 else 6,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
        fig.tight_layout()
        return _save(fig, path)


RELIABILITY_PNG = catalog.RELIABILITY_PNG


def plot_reliability(
    before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], path: Path,
    ece_before: float, ece_after: float,
) -> Path:  # fmt: skip
    """Reliability diagram (accuracy against confidence per bin), before and after
    calibration, with the diagonal of perfect calibration → PNG."""
    with _style():
        fig, ax = _pyplot().subplots(figsize=(4.6, 4.2))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
        for bins, style, name, ece in (
            (before, "s--", "before", ece_before),
            (after, "o-", "after calibration", ece_after),
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
