"""Issue 13, second reliability pass: outputs never destroy inputs or sealed folders.

The path checks run in the CLI before a Prefect server starts or any file is read, so these
tests need no server. docs/RELIABILITY.md lists each case with its outcome.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from tests.helpers import train_tiny_bundle
from zhflow.tasks.errors import InputError
from zhflow.tasks.guards import check_output_not_input, check_output_outside_sealed


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("guards") / "bundle", epochs=1)


def _cli(*args: object, cwd: Path | None = None) -> Result:
    from zhflow.flows.cli import main

    if cwd is None:
        return CliRunner().invoke(main, [str(a) for a in args])
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(previous)


def _one_error_line(result: Result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _score(bundle: Path, src: object, out: object, cwd: Path | None = None) -> Result:
    return _cli("score", "--model", bundle, src, "--output", out, "--processes", "1", cwd=cwd)


@pytest.fixture
def victims(tmp_path: Path) -> dict[str, Path]:
    csv = tmp_path / "victim.csv"
    csv.write_text("text\n很好吃\n太难吃了\n", encoding="utf-8")
    parquet = tmp_path / "in.parquet"
    pl.DataFrame({"text": ["很好吃", "太难吃了"]}).write_parquet(parquet)
    return {"csv": csv, "parquet": parquet}


def test_output_equal_to_parquet_input_is_refused(bundle_dir, victims) -> None:
    src = victims["parquet"]
    before = _digest(src)
    _one_error_line(_score(bundle_dir, src, src), 2, "--output is the input", "in.parquet")
    assert _digest(src) == before


def test_output_spelled_differently_is_refused(bundle_dir, victims) -> None:
    src = victims["csv"]
    before = _digest(src)
    result = _score(bundle_dir, "victim.csv", "./victim.csv", cwd=src.parent)
    _one_error_line(result, 2, "--output is the input")
    result = _score(bundle_dir, src, src.parent / "sub" / ".." / "victim.csv")
    _one_error_line(result, 2, "--output is the input")
    assert _digest(src) == before


def test_output_that_is_a_symlink_or_hard_link_to_the_input_is_refused(
    bundle_dir, victims, tmp_path: Path
) -> None:
    src = victims["csv"]
    before = _digest(src)
    link = tmp_path / "link.parquet"
    link.symlink_to(src)
    _one_error_line(_score(bundle_dir, src, link), 2, "--output is the input")
    _one_error_line(_score(bundle_dir, link, src), 2, "--output is the input")
    hard = tmp_path / "hard.parquet"
    os.link(src, hard)
    _one_error_line(_score(bundle_dir, src, hard), 2, "--output is the input")
    # Among several inputs, the second one.
    other = tmp_path / "other.csv"
    shutil.copyfile(src, other)
    result = _cli("score", "--model", bundle_dir, other, src, "--output", hard)
    _one_error_line(result, 2, "--output is the input")
    assert _digest(src) == before and link.is_symlink()


def test_output_inside_an_input_folder_is_refused(bundle_dir, tmp_path: Path) -> None:
    folder = tmp_path / "lines"
    folder.mkdir()
    (folder / "a.txt").write_text("很好吃\n", encoding="utf-8")
    _one_error_line(_score(bundle_dir, folder, folder / "p.parquet"), 2, "inside the input folder")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]


def test_output_inside_the_model_bundle_is_refused(bundle_dir, victims, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(bundle_dir, bundle)
    before = {p.name: _digest(p) for p in bundle.iterdir()}
    for target in (bundle / "vocab.parquet", bundle / "new.parquet", bundle / "x" / "p.parquet"):
        _one_error_line(_score(bundle, victims["csv"], target), 2, "inside the model bundle")
    assert {p.name: _digest(p) for p in bundle.iterdir()} == before


def test_output_inside_work_dir_artifacts_is_refused(bundle_dir, victims, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    (workdir / "cache").mkdir(parents=True)
    artifact = workdir / "corpus" / "abc123"
    artifact.mkdir(parents=True)
    (artifact / "corpus.parquet").write_bytes(b"data")
    (artifact / "_manifest.json").write_text("{}")
    _one_error_line(
        _score(bundle_dir, victims["csv"], artifact / "corpus.parquet"), 2, "sealed folder"
    )
    _one_error_line(
        _score(bundle_dir, victims["csv"], workdir / "corpus" / "p.parquet"), 2, "corpus/ folder"
    )
    assert (artifact / "corpus.parquet").read_bytes() == b"data"


def test_guards_allow_ordinary_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\na\n")
    check_output_not_input(tmp_path / "out.parquet", [str(src), str(tmp_path / "missing.csv")])
    check_output_outside_sealed(tmp_path / "out.parquet", [tmp_path / "bundle"])
    # A work dir's own top level is not an artifact folder (e.g. wd/predictions.parquet).
    (tmp_path / "cache").mkdir()
    check_output_outside_sealed(tmp_path / "predictions.parquet")
    with pytest.raises(InputError, match="inside the work dir's runs/ folder"):
        check_output_outside_sealed(tmp_path / "runs" / "p.parquet")


def test_ordinary_scoring_still_works_and_input_stays(bundle_dir, victims, tmp_path) -> None:
    src = victims["csv"]
    before = _digest(src)
    out = tmp_path / "preds.parquet"
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.score import score_file

    score_file(load_bundle(bundle_dir), str(src), out)
    assert pl.read_parquet(out).height == 2 and _digest(src) == before


def test_score_output_must_be_a_parquet_file(tmp_path: Path) -> None:
    from zhflow.flows.scoring import check_score_paths
    from zhflow.tasks.errors import InputError

    src = tmp_path / "in.csv"
    src.write_text("text\n好\n", encoding="utf-8")
    for name in ("pred.csv", "pred", "-"):
        with pytest.raises(InputError, match=r"--output must be a \.parquet file"):
            check_score_paths(str(tmp_path / "no-bundle"), str(src), str(tmp_path / name))
