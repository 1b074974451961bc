"""docs/CONCEPTS.md stays true: its ```python blocks run; THULAC cuts a fixture as recorded."""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = ROOT / "docs" / "CONCEPTS.md"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    """(section heading, code) for every python block, in document order."""
    text = CONCEPTS.read_text(encoding="utf-8")
    blocks = []
    for match in _BLOCK.finditer(text):
        headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
        blocks.append((headings[-1] if headings else "intro", match.group(1)))
    return blocks


BLOCKS = _blocks()


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; avoids OpenMP stalls on shared cores
    yield
    torch.set_num_threads(previous)


def test_every_concept_has_an_example() -> None:
    sections = {heading for heading, _ in BLOCKS}
    for concept in ("Segmentation", "THULAC", "characters", "N-grams", "token -> num -> vector",
                    "One-hot", "RNN", "LSTM", "GRU", "Bidirectional", "Stacked",
                    "`nn.LSTM` arguments"):  # fmt: skip
        assert any(concept in s for s in sections), f"no python example under a {concept!r} heading"


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[h for h, _ in BLOCKS])
def test_concepts_example_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    exec(compile(code, str(CONCEPTS), "exec"), {"__name__": "__concepts__"})
    # "A couple of seconds" each; generous bound for shared CI cores (THULAC loads a model).
    assert time.perf_counter() - start < 20
    assert capsys.readouterr().out  # every example shows something


@pytest.mark.skipif(importlib.util.find_spec("thulac") is None, reason="thulac not installed")
def test_thulac_tokens_on_fixture() -> None:
    from zhflow.tasks.segment import TokenizerSpec, make_tokenizer

    cases = json.loads((FIXTURES / "thulac_tokens.json").read_text(encoding="utf-8"))["cases"]
    spec = TokenizerSpec(engine="thulac")
    assert spec.identity()["engine_version"]  # the THULAC version enters caches and bundles
    assert spec.identity()["mode"] is None  # jieba-only options do not split caches
    tokenize = make_tokenizer(spec)
    for case in cases:
        assert tokenize(case["text"]) == case["tokens"], case["text"]
