"""A stage's code version follows its own functions and what they call, as syntax."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from zhflow.tasks.codeversion import code_version

PROBE = "zhflow._codeversion_probe"  # a zhflow.* name: the walk follows what lives there
BASE = '''
LIMIT = 3


def shared(x):
    return x + 1


def helper_a(x):
    """Only stage_a calls this."""
    return shared(x) * LIMIT


def helper_b(x):
    return shared(x) - 1


def stage_a(x):
    def build():
        return helper_a(x)

    return build()


def stage_b(x):
    return helper_b(x)
'''


def _versions(tmp_path: Path, text: str, tag: str) -> tuple[str, str]:
    path = tmp_path / tag / "probe.py"  # a file per version: no stale line cache
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(PROBE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PROBE] = module
    try:
        spec.loader.exec_module(module)
        return code_version(module.stage_a), code_version(module.stage_b)
    finally:
        del sys.modules[PROBE]


@pytest.mark.parametrize(
    ("edit", "a_changes", "b_changes"),
    [
        (lambda t: t.replace("return shared(x) * LIMIT", "return shared(x) * LIMIT  # why"),
         False, False),
        (lambda t: t.replace('"""Only stage_a calls this."""', '"""Reworded."""'), False, False),
        (lambda t: t.replace("return shared(x) * LIMIT", "return shared(x) * LIMIT * 2"),
         True, False),
        (lambda t: t.replace("LIMIT = 3", "LIMIT = 4"), True, False),
        (lambda t: t.replace("return x + 1", "return x + 2"), True, True),
        (lambda t: t.replace("return helper_b(x)", "return helper_b(x) + 0"), False, True),
        (lambda t: t + "\n\ndef unused():\n    return 0\n", False, False),
    ],
    ids=["comment", "docstring", "own-helper", "constant", "shared-helper", "other-stage",
         "new-function"],
)  # fmt: skip
def test_an_edit_changes_the_versions_of_the_stages_that_reach_it(
    tmp_path: Path, edit, a_changes: bool, b_changes: bool
) -> None:
    a0, b0 = _versions(tmp_path, BASE, "before")
    a1, b1 = _versions(tmp_path, edit(BASE), "after")
    assert (a1 != a0, b1 != b0) == (a_changes, b_changes)


def test_every_stage_reaches_the_functions_it_calls() -> None:
    from zhflow.tasks import stages  # noqa: F401  (registers the stages)
    from zhflow.tasks.cache import STAGE_CODE
    from zhflow.tasks.codeversion import reached

    def names(stage: str) -> set[str]:
        return set(reached(STAGE_CODE[stage].root))

    # The encode stage calls tables.vocab_to_index (the module lists used to miss it).
    assert "zhflow.tasks.tables.vocab_to_index" in names("encoded")
    assert "zhflow.tasks.segment.TokenizerSpec" in names("tokens")
    assert "zhflow.tasks.train.train_model" in names("model")
    assert "zhflow.models.rnn.RNNClassifier" in names("model")
    assert "zhflow.tasks.tables.build_vocab" not in names("ngrams")  # a sibling's function


def test_code_version_is_the_same_in_another_process() -> None:
    import os
    import subprocess

    probe = ("from zhflow.tasks import stages; from zhflow.tasks.cache import stage_code, "
             "STAGE_CODE; print(' '.join(stage_code(s) for s in sorted(STAGE_CODE)))")  # fmt: skip

    def versions(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                              text=True, env=env)  # fmt: skip
        return done.stdout

    first = versions("1")
    assert first.strip() and versions("2") == first
