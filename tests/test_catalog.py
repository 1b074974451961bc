"""The catalog names every stage once; code and docs follow it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from zhflow.tasks import catalog

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "models")


def test_architecture_work_dir_table_is_the_catalogs() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```\n(data/work/\n.*?)\n```", doc, flags=re.S)
    assert blocks, "docs/ARCHITECTURE.md has no ```data/work/ ...``` block"
    assert blocks[0] == catalog.workdir_table(), (
        "docs/ARCHITECTURE.md's work-dir table differs from the catalog; paste the output of "
        "python -c 'from zhflow.tasks import catalog; print(catalog.workdir_table())'"
    )


def _catalog_file_names() -> set[str]:
    names = {v for k, v in vars(catalog).items() if k.isupper() and isinstance(v, str)}
    return {n for n in names if "." in n}  # files, not folders


def test_file_names_are_literals_only_in_the_catalog() -> None:
    names = _catalog_file_names()
    assert {"metrics.json", "vocab.parquet", "runs/latest.json"} <= names
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "tasks" / "catalog.py":
                continue
            text = path.read_text(encoding="utf-8")
            for name in names:
                # A quoted literal on its own (messages may mention a file inside a sentence).
                if re.search(rf"""(?<![\w/])["']{re.escape(name)}["']""", text):
                    found.append(f"{path.relative_to(ROOT)}: {name}")
            if re.search(r"""["']runs["']\s*/\s*["']""", text):
                found.append(f"{path.relative_to(ROOT)}: runs/...")
    assert not found, "use the tasks/catalog.py constants:\n" + "\n".join(found)


def test_every_stage_task_is_named_by_the_catalog() -> None:
    from zhflow.tasks import stages
    from zhflow.tasks.cache import STAGE_CODE

    tasks = [v for v in vars(stages).values() if hasattr(v, "cache_policy") and hasattr(v, "fn")]
    assert sorted(t.name for t in tasks) == sorted(s.name for s in catalog.STAGES)
    assert set(STAGE_CODE) == set(catalog.BY_NAME)
    assert all(s.folder == s.name for s in catalog.STAGES)


@pytest.mark.parametrize(
    ("given", "stage"),
    [("tokenize", "tokens"), ("encode", "encoded"), ("train", "bundle"), ("vocab", "vocab"),
     ("encoded", "encoded"), ("bundle", "bundle")],
)  # fmt: skip
def test_until_takes_stage_names_and_the_old_spellings(given: str, stage: str) -> None:
    assert catalog.until_stage(given) == stage


def test_until_refuses_a_stage_it_cannot_stop_at() -> None:
    with pytest.raises(ValueError, match="until must be one of tokens, ngrams"):
        catalog.until_stage("corpus")


def test_cli_until_notes_a_deprecated_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    from zhflow.flows.cli import _until

    assert _until("tokenize") == "tokens"
    assert "--until tokenize is deprecated; use --until tokens" in capsys.readouterr().err
    assert _until("tokens") == "tokens"
    assert capsys.readouterr().err == ""


def test_cli_choices_are_the_registries() -> None:
    from zhflow.flows import cli
    from zhflow.models.registry import MODEL_TYPES
    from zhflow.tasks.corpus import READERS
    from zhflow.tasks.engines import ENGINES

    run: dict[str, Any] = {p.name: p for p in cli.run.params}
    assert list(run["tokenizer"].type.choices) == list(ENGINES)
    assert list(run["model_type"].type.choices) == list(MODEL_TYPES)
    # The CLI keeps its own list (importing the readers would load polars for every command).
    assert list(run["fmt"].type.choices) == list(READERS) == cli.FORMATS
