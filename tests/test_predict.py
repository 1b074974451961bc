"""``zhflow predict`` and ``zhflow info`` on a small trained bundle: no Prefect on either path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from tests.helpers import train_tiny_bundle
from zhflow.flows.cli import main

TEXTS = ["这家店的菜很好吃，服务也很热情", "质量很差，用了两天就坏了"]
TRAINING = {"corpus_digest": "ab" * 32, "rows": 96, "trained_at": "2026-12-01T02:00:00Z"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "bundle"
    return train_tiny_bundle(out, epochs=3, extra={"zhflow_version": "0.1.0",
                                                   "training": TRAINING})  # fmt: skip


@pytest.fixture(scope="module")
def old_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("old") / "bundle", epochs=1)


def _scored(bundle: Path, texts: list[str], tmp_path: Path) -> pl.DataFrame:
    """What `zhflow score` writes for these texts (its pure function)."""
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.score import score_file

    source = tmp_path / "in.csv"
    pl.DataFrame({"text": texts}).write_csv(source)
    score_file(load_bundle(bundle), source, tmp_path / "p.parquet", workers=1)
    return pl.read_parquet(tmp_path / "p.parquet")


def test_predict_texts_match_what_score_writes(bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(bundle), *TEXTS, "--json"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.strip().splitlines()]
    scored = _scored(bundle, TEXTS, tmp_path)
    assert [i["text"] for i in items] == TEXTS
    assert [i["label"] for i in items] == scored["label"].to_list()
    for item, confidence in zip(items, scored["confidence"].to_list(), strict=True):
        assert item["confidence"] == pytest.approx(confidence, abs=1e-5)
        assert sum(item["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(item["probs"].values()) == pytest.approx(item["confidence"], abs=1e-6)


def test_predict_reads_stdin_lines_and_marks_empty_ones(bundle: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(bundle)],
                                input=f"{TEXTS[0]}\n\n{TEXTS[1]}\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip("\n").split("\n")
    assert len(lines) == 3
    label, confidence, text = lines[0].split("\t")
    assert label in ("pos", "neg") and 0.5 <= float(confidence) <= 1 and text == TEXTS[0]
    assert lines[1] == "-\t-\t\t(empty text)"
    assert lines[2].endswith("\t" + TEXTS[1])


def test_predict_escapes_a_tab_or_newline_in_the_text_so_each_line_has_three_fields(
    bundle: Path,
) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(bundle), "好吃\t不贵\n再来",
                                       "C:\\路径"])  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.strip("\n").split("\n")]
    assert [len(row) for row in rows] == [3, 3]
    assert rows[0][2] == "好吃\\t不贵\\n再来" and rows[1][2] == "C:\\\\路径"


def test_predict_refused_bundle_is_one_line_exit_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "nope"), "x"])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"zhflow: error: {tmp_path / 'nope'}: refused model bundle: no such directory"
    )


def test_predict_and_info_never_import_prefect(bundle: Path) -> None:
    code = (
        "import sys\n"
        "from zhflow.flows.cli import main\n"
        f"b = {str(bundle)!r}\n"
        "for args in (['predict', '--model', b, '很好'], ['info', b]):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), e.code\n"
        "print('PREFECT' if any(m.startswith('prefect') for m in sys.modules) else 'CLEAN')\n"
    )
    env = {**os.environ}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "CLEAN"


def test_info_shows_what_the_bundle_holds(bundle: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    assert info["intact"] is True and info["format"] == "zhflow-bundle/1"
    assert info["tokenizer"] == config["tokenizer"]["identity"]
    assert info["tokenizer"]["engine"] == "char"
    assert info["model"] == config["model"] and info["model"]["cell"] == "lstm"
    assert info["vocab_size"] == pl.read_parquet(bundle / "vocab.parquet").height
    assert info["labels"] == ["neg", "pos"]
    assert info["training"] == TRAINING
    assert info["versions"]["bundle"]["zhflow"] == "0.1.0"
    assert info["versions"]["bundle"]["torch"] == config["torch_version"]
    assert set(info["versions"]["installed"]) == {"zhflow", "torch", "jieba"}
    identity = config["tokenizer"]["identity"]  # the tiny bundle segments characters
    assert info["versions"]["bundle"][identity["engine"]] == identity["engine_version"]
    assert all(info["versions"]["installed"].values())

    text = CliRunner().invoke(main, ["info", str(bundle)]).stdout
    assert f"corpus sha256 {'ab' * 32} (96 rows)" in text and "2026-12-01T02:00:00Z" in text
    assert "labels:     neg, pos" in text and "(intact)" in text


def test_info_on_an_old_bundle_and_test_metrics(old_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from tests.helpers import seal_bundle

    info = json.loads(CliRunner().invoke(main, ["info", str(old_bundle), "--json"]).stdout)
    assert info["training"] is None and info["test_metrics"] is None  # metrics.json: {"n": 0}
    assert "not recorded" in CliRunner().invoke(main, ["info", str(old_bundle)]).stdout

    copy = tmp_path / "copy"
    shutil.copytree(old_bundle, copy)
    (copy / "metrics.json").write_text(json.dumps({"accuracy": 0.9, "macro_f1": 0.85, "n": 40}))
    seal_bundle(copy)
    info = json.loads(CliRunner().invoke(main, ["info", str(copy), "--json"]).stdout)
    assert info["test_metrics"] == {"accuracy": 0.9, "macro_f1": 0.85, "n": 40}
    assert info["intact"] is True
    (copy / "labels.json").write_text('{"labels": ["neg", "POS"]}')  # altered after sealing
    altered = CliRunner().invoke(main, ["info", str(copy)])
    assert altered.exit_code == 0 and "ALTERED" in altered.stdout


def test_info_on_a_folder_that_is_no_bundle(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["info", str(tmp_path)])
    assert result.exit_code == 3
    assert (
        result.stderr.strip()
        == f"zhflow: error: {tmp_path}: refused model bundle: missing config.json"
    )
    afile = tmp_path / "reviews.csv"
    afile.write_text("text\n好\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["info", str(afile)])
    assert result.exit_code == 3 and "a file, not a bundle folder" in result.stderr
    # A work dir whose record is damaged, or names a model of the wrong type.
    (tmp_path / "runs").mkdir()
    for record in ("not json", '{"model": 5}'):
        (tmp_path / "runs" / "latest.json").write_text(record, encoding="utf-8")
        result = CliRunner().invoke(main, ["info", str(tmp_path)])
        assert result.exit_code == 3, result.output
        assert "a work dir whose runs/latest.json names no bundle" in result.stderr
        assert "Traceback" not in result.output


def test_predict_on_a_bundle_with_the_wide_branch_matches_score(tmp_path: Path) -> None:
    wide = train_tiny_bundle(tmp_path / "wide", epochs=2, wide=True)
    result = CliRunner().invoke(main, ["predict", "--model", str(wide), *TEXTS, "--json"])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in result.stdout.strip().splitlines()]
    scored = _scored(wide, TEXTS, tmp_path)
    assert [i["label"] for i in items] == scored["label"].to_list()
    for item, confidence in zip(items, scored["confidence"].to_list(), strict=True):
        assert item["confidence"] == pytest.approx(confidence, abs=1e-5)


def test_explain_lists_the_ngrams_that_weighed_most(tmp_path: Path) -> None:
    import numpy as np

    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.predict import explain_texts

    wide = train_tiny_bundle(tmp_path / "wide", epochs=1, wide=True)
    result = CliRunner().invoke(
        main, ["predict", "--model", str(wide), "--explain", "--json", TEXTS[0]]
    )
    assert result.exit_code == 0, result.output
    (item,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    parts = item["explain"]
    assert 0 < len(parts) <= 5 and all(p["kind"] == "char" for p in parts)
    assert all(p["ngram"] in TEXTS[0] for p in parts)  # every n-gram is in the text
    weights = [p["weight"] for p in parts]
    assert weights == sorted(weights, reverse=True)
    # By hand for the top n-gram: TF-IDF weight x (its row for the label - the row's mean).
    loaded = load_bundle(wide)
    fz = loaded.featurizer
    assert fz is not None and loaded.model.wide is not None
    from zhflow.tasks.segment import segment_texts

    ids, w = fz.bag(segment_texts([TEXTS[0]], loaded.tokenizer)[0])
    table = loaded.model.wide.bag.weight.detach().numpy()
    c = loaded.labels.index(item["label"])
    k = list(ids).index(fz.index[f"c:{parts[0]['ngram']}"])
    expected = w[k] * (table[ids[k], c] - table[ids[k]].mean())
    assert np.isclose(parts[0]["weight"], expected, atol=1e-4)
    assert explain_texts(loaded, [""], [None]) == [[]]


def test_explain_without_a_wide_branch_is_one_line(bundle: Path) -> None:
    result = CliRunner().invoke(main, ["predict", "--model", str(bundle), "--explain", "好"])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("zhflow: error:") and "--no-wide" in result.stderr


def test_bundle_info_reads_json_only(bundle: Path) -> None:
    from zhflow.flows.commands import bundle_info

    info = bundle_info(bundle)
    assert info["intact"] is True and info["labels"] == ["neg", "pos"]
    assert info["model"]["cell"] == "lstm" and info["training"] == TRAINING


def test_predict_text_that_is_not_utf8_is_one_line(bundle: Path) -> None:
    from zhflow.tasks.errors import InputError
    from zhflow.tasks.predict import require_utf8

    assert require_utf8("好吃", "TEXT 1") == "好吃"
    bad = b"\xe5\xa5\xbd\xff".decode("utf-8", "surrogateescape")  # as Python hands argv over
    with pytest.raises(InputError, match=r"^TEXT 2: not valid UTF-8 \(byte 0xff at character 2\)$"):
        require_utf8(bad, "TEXT 2")
    result = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "好吃", bad])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "zhflow: error: TEXT 2: not valid UTF-8 (byte 0xff at character 2)"
    ]


@pytest.mark.parametrize(
    "damage",
    [
        ("metrics.json", "{bad"),
        ("metrics.json", "7"),
        ("metrics.json", '{"accuracy": "x"}'),
        ("config.json", "[1, 2]"),
        ("labels.json", '{"labels": 5}'),
    ],
)
def test_info_on_a_bundle_with_a_damaged_json_file_never_crashes(
    bundle: Path, tmp_path: Path, damage: tuple[str, str]
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    name, content = damage
    (copy / name).write_text(content, encoding="utf-8")
    result = CliRunner().invoke(main, ["info", str(copy)])
    assert "Traceback" not in result.output
    if name == "metrics.json":  # described, flagged as altered, without test figures
        assert result.exit_code == 0 and "ALTERED" in result.stdout
        assert "no metrics recorded" in result.stdout
    else:
        assert result.exit_code == 3
        assert result.stderr.startswith(f"zhflow: error: {copy}: refused model bundle: unreadable")


def test_predict_and_info_take_a_work_dir_as_score_does(bundle: Path, tmp_path: Path) -> None:
    import shutil

    workdir = tmp_path / "wd"
    shutil.copytree(bundle, workdir / "bundle" / "k")
    (workdir / "runs").mkdir()
    (workdir / "runs" / "latest.json").write_text('{"model": "bundle/k"}', encoding="utf-8")
    direct = CliRunner().invoke(main, ["predict", "--bundle", str(bundle), "好吃"])
    via_workdir = CliRunner().invoke(main, ["predict", "--bundle", str(workdir), "好吃"])
    assert via_workdir.exit_code == 0 and via_workdir.stdout == direct.stdout
    info = json.loads(CliRunner().invoke(main, ["info", str(workdir), "--json"]).stdout)
    assert info["bundle"] == str((workdir / "bundle" / "k").resolve()) and info["intact"]
