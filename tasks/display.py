"""User text (labels, file names) shown in plots, tables and markdown: text, never markup.

A label comes from the user's corpus and can hold anything: ``$\\foo{$`` (matplotlib would
parse it as mathtext and crash), ``<img src=x onerror=...>`` (raw HTML in a markdown
artifact), ``\\x1b[31m`` (a terminal escape sequence). ``plain`` strips escape sequences and
control characters; ``markdown`` also escapes HTML and markdown syntax so the text shows
as typed. Plots additionally draw labels with mathtext off (tasks/plots.py).
"""

from __future__ import annotations

import html
import re
import unicodedata

# ANSI/VT escape sequences: CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \),
# and two-character escapes (ESC + one byte); C1 CSI (\x9b) as well.
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]"
)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|~$])")


def plain(text: object) -> str:
    """``text`` without terminal escape sequences or control characters (line breaks and
    tabs become spaces); everything printable, Chinese included, is kept."""
    s = _ESCAPES.sub("", str(text))
    s = re.sub(r"[\t\n\r\x0b\x0c\u2028\u2029\x85]", " ", s)
    return "".join(c for c in s if unicodedata.category(c) != "Cc")


def markdown(text: object) -> str:
    """``text`` safe inside markdown (a table cell too): no HTML, no markdown syntax."""
    # Backslash-escape markdown first: html.escape's entities (&lt;) must stay intact.
    return html.escape(_MARKDOWN.sub(r"\\\1", plain(text)), quote=False)
