"""The plot font: shipped by a pinned Python package, registered with matplotlib, used for
every label, even on a machine with no CJK font of its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from zhflow.tasks import plots
from zhflow.tasks.storage import sha256_file

LABELS = ["书籍", "平板", "手机"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_system_fonts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """matplotlib's font list cut down to its own bundled fonts (DejaVu and friends): a fresh
    machine with no fonts installed, CJK or other."""
    import matplotlib
    from matplotlib import font_manager

    bundled = Path(matplotlib.get_data_path()).resolve()
    manager = font_manager.fontManager
    own = [f for f in manager.ttflist if Path(f.fname).resolve().is_relative_to(bundled)]
    monkeypatch.setattr(manager, "ttflist", own)
    manager._findfont_cached.cache_clear()  # type: ignore[attr-defined]  # private cache
    yield manager
    monkeypatch.undo()
    manager._findfont_cached.cache_clear()  # type: ignore[attr-defined]


def _covers(font_path: Any, text: str) -> bool:
    from matplotlib import ft2font

    face = ft2font.FT2Font(str(font_path), face_index=getattr(font_path, "face_index", 0))
    charmap = face.get_charmap()
    return all(ord(ch) in charmap for ch in text)


def test_without_system_fonts_no_font_covers_the_labels(no_system_fonts: Any) -> None:
    """The premise: matplotlib's own fonts draw 书籍 as boxes. (Its Last Resort font maps
    every code point, to a box naming the Unicode block: coverage, but no glyph.)"""
    real = [f for f in no_system_fonts.ttflist if not f.name.startswith("Last Resort")]
    assert real
    assert not any(_covers(f.fname, "书") for f in real)


def test_confusion_png_draws_every_chinese_label_in_the_shipped_font(
    no_system_fonts: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib import font_manager
    from matplotlib.backends.backend_agg import RendererAgg

    drawn: dict[str, Any] = {}
    draw_text = RendererAgg.draw_text

    def spy(self: Any, gc: Any, x: float, y: float, s: str, prop: Any, *a: Any, **k: Any) -> Any:
        drawn[s] = font_manager.findfont(prop)  # the font this text is rendered with
        return draw_text(self, gc, x, y, s, prop, *a, **k)

    monkeypatch.setattr(RendererAgg, "draw_text", spy)
    out = plots.plot_confusion([[5, 1, 0], [0, 4, 2], [1, 0, 6]], LABELS,
                               tmp_path / plots.CONFUSION_PNG)  # fmt: skip
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for label in LABELS:  # tick labels of both axes
        font = drawn[label]
        assert Path(font) == plots.font_file(), (label, font)
        assert _covers(font, label), (label, font)
    assert plots.FONT_FAMILY in {f.name for f in no_system_fonts.ttflist}  # registered


def test_the_family_resolves_to_the_simplified_chinese_face(no_system_fonts: Any) -> None:
    from matplotlib import font_manager, ft2font

    family = plots.register_font()
    resolved = font_manager.findfont(font_manager.FontProperties(family=[family]))
    assert Path(resolved) == plots.font_file()
    face = ft2font.FT2Font(str(resolved), face_index=resolved.face_index)
    assert face.family_name == plots.FONT_FAMILY  # SC glyph forms, not the JP face 0
    assert _covers(resolved, "".join(LABELS) + "负面正面中性，。！")


def test_font_identity_is_the_pinned_package_and_its_file_hash() -> None:
    font = plots.plot_font()
    assert font["package"] == plots.FONT_PACKAGE
    assert font["version"] == metadata.version(plots.FONT_PACKAGE)
    assert font["sha256"] == sha256_file(plots.font_file())
    pins = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(plots.FONT_PACKAGE)}=={re.escape(font['version'])}$", pins,
                     flags=re.MULTILINE)  # fmt: skip
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{plots.FONT_PACKAGE}' in pyproject
