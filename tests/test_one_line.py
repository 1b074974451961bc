"""Issue 13: every failure is one ``zhflow: error:`` line naming the path, no traceback.

Read-only and full disks use a small tmpfs (mounted here when running as root; skipped, with
the reason, where the machine does not allow it). Root ignores chmod, so a read-only folder
is a tmpfs remounted read-only, not a chmod. docs/RELIABILITY.md lists the cases.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from tests.conftest import tiny_corpus_rows
from tests.helpers import train_tiny_bundle
from zhflow.tasks.display import markdown, plain
from zhflow.tasks.errors import InputError, WriteError
from zhflow.tasks.storage import atomic_path, building_artifact, write_failure, write_guard

# ------------------------------------------------------------------------------------------
# fixtures: a tmpfs that can be made read-only or full


class Tmpfs:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _mount(self, *args: str) -> None:
        done = subprocess.run(["mount", *args], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs here: {done.stderr.decode(errors='replace')}")

    def read_only(self) -> None:
        self._mount("-o", "remount,ro", str(self.path))

    def writable(self) -> None:
        self._mount("-o", "remount,rw", str(self.path))

    def fill(self) -> None:
        """Leave no free block (a file written until ENOSPC)."""
        with open(self.path / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        assert os.statvfs(self.path).f_bfree == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield Tmpfs(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("oneline") / "bundle", epochs=1)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rows = tiny_corpus_rows()
    path = tmp_path / "tiny.csv"
    pl.DataFrame({"text": [t for t, _ in rows], "label": [lab for _, lab in rows]}).write_csv(path)
    return path


def _cli(*args: object) -> Result:
    from zhflow.flows.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result: Result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


RUN = ("--tokenizer", "char", "--processes", "1", "--json")


# ------------------------------------------------------------------------------------------
# the write guard (pure)


def test_write_failure_names_the_path_for_each_write_errno(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    for code in (errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EDQUOT):
        failure = write_failure(OSError(code, os.strerror(code), str(target)), target)
        assert isinstance(failure, WriteError)
        assert str(failure) == f"{target}: cannot write ({os.strerror(code)})"
    # polars and safetensors put the errno in the message only.
    polars_like = pl.exceptions.ComputeError("underlying IO error: No space left (os error 28)")
    assert "No space left on device" in str(write_failure(polars_like, target))
    # A bug, or an error about another file (an input read in the body), passes unchanged.
    assert write_failure(ValueError("bug"), target) is None
    other = OSError(errno.EACCES, "Permission denied", "/somewhere/else/input.csv")
    assert write_failure(other, target) is None
    assert write_failure(OSError(errno.ENOENT, "gone", str(target)), target) is None


def test_a_file_in_the_way_of_a_folder_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    refused = pytest.raises(WriteError, match=r"afile is a file, not a folder")
    with refused, atomic_path(blocker / "deeper" / "out.json") as tmp:
        tmp.write_text("{}")
    refused = pytest.raises(WriteError, match=r"afile is a file, not a folder")
    with refused, building_artifact(blocker, "corpus", "k" * 64) as out:
        (out / "x").write_text("x")


def test_read_only_writes_are_one_line_and_name_the_final_path(tmpfs: Tmpfs) -> None:
    (tmpfs.path / "wd").mkdir()
    tmpfs.read_only()
    target = tmpfs.path / "wd" / "runs" / "latest.json"
    with pytest.raises(WriteError) as info, atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert "cannot write (Read-only file system)" in str(info.value)
    assert ".tmp" not in str(info.value)


def test_disk_full_inside_an_artifact_names_the_artifact_file(tmpfs: Tmpfs) -> None:
    import torch
    from safetensors.torch import save_file

    root = tmpfs.path / "wd"
    root.mkdir()
    tmpfs.fill()
    with pytest.raises(WriteError) as info, building_artifact(root, "encoded", "a" * 64) as out:
        save_file({"ids": torch.zeros(200_000)}, str(out / "train.safetensors"))
    # No filename in safetensors' error: the artifact being built is named.
    assert str(info.value) == f"{root}/encoded/{'a' * 64}: cannot write (No space left on device)"
    assert not (root / "encoded" / ("a" * 64)).exists()
    assert [p.name for p in (root / "encoded").iterdir()] == []  # no temp folder left


def test_torch_save_on_a_full_disk_is_one_line(tmpfs: Tmpfs) -> None:
    """torch.save reports ENOSPC as a RuntimeError about a file position, with no errno."""
    import torch

    tmpfs.fill()
    target = tmpfs.path / "checkpoint.pt"
    full = pytest.raises(WriteError, match=r"checkpoint\.pt: cannot write \(No space left")
    with full, atomic_path(target) as tmp:
        torch.save({"w": torch.zeros(100_000)}, tmp)
    assert not target.exists()


def test_stage_on_a_read_only_work_dir_is_one_line(corpus: Path, tmpfs: Tmpfs) -> None:
    """The stage itself (no CLI pre-check): its lock folder cannot be made."""
    from zhflow.tasks import stages

    tmpfs.read_only()
    with pytest.raises(WriteError, match=r"locks.*cannot write \(Read-only file system\)"):
        stages.ingest_corpus.fn(workdir=str(tmpfs.path), source=[str(corpus)], source_digest="d",
                                fmt=None, text_col=None, label_col=None, id_col=None,
                                encoding="utf-8", seed=0, valid_frac=0.1, test_frac=0.1,
                                dedupe=False)  # fmt: skip


def test_write_guard_lets_other_errors_through(tmp_path: Path) -> None:
    with pytest.raises(KeyError), write_guard(tmp_path / "x"):
        raise KeyError("a bug stays a bug")


# ------------------------------------------------------------------------------------------
# through the CLI: checked before any stage (no Prefect server needed)


def test_workdir_that_is_a_regular_file(corpus: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    _one_error_line(
        _cli("run", corpus, "--workdir", afile, *RUN), 2, "afile is a file, not a folder"
    )
    _one_error_line(
        _cli("run", corpus, "--workdir", afile / "deeper", *RUN), 2, "afile is a file, not a folder"
    )
    assert afile.read_text() == "not a folder"


def test_corpus_path_that_is_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "a.csv").symlink_to(tmp_path / "b.csv")
    (tmp_path / "b.csv").symlink_to(tmp_path / "a.csv")
    _one_error_line(
        _cli("run", tmp_path / "a.csv", "--workdir", tmp_path / "w", *RUN),
        2,
        "a.csv: cannot read",
        "symlink loop",
    )


def test_a_missing_corpus_or_column_is_refused_before_any_flow_runs(
    corpus: Path, tmp_path: Path, bundle_dir: Path
) -> None:
    """A typo in a path or ``--text-col`` is one line at once, read from names and headers:
    no Prefect server started, no flow run failed and logged first."""
    workdir = tmp_path / "w"
    parquet = tmp_path / "tiny.parquet"
    pl.read_csv(corpus).write_parquet(parquet)
    for result, fragments in [
        (_cli("run", tmp_path / "nope.csv", "--workdir", workdir, *RUN),
         ("nope.csv: no such file or directory",)),
        (_cli("run", corpus, "--text-col", "txet", "--workdir", workdir, *RUN),
         ("tiny.csv: no column 'txet'", "columns found: text, label")),
        (_cli("run", parquet, "--label-col", "y", "--workdir", workdir, *RUN),
         ("tiny.parquet: no column 'y'",)),
        (_cli("score", "--model", bundle_dir, corpus, "--id-col", "uid", "--output",
              tmp_path / "p.parquet"), ("tiny.csv: no column 'uid'",)),
        (_cli("evaluate", "--model", bundle_dir, corpus, "--label-col", "y"),
         ("tiny.csv: no column 'y'",)),
        (_cli("evaluate", "--model", tmp_path / "no-bundle", corpus), ("no-bundle",)),
        (_cli("run", corpus, "--user-dict", tmp_path / "nope.txt", "--workdir", workdir, *RUN,
              "--tokenizer", "jieba"), ("user dictionary file not found:", "nope.txt")),
        (_cli("run", corpus, "--stopwords", tmp_path / "nope.txt", "--workdir", workdir, *RUN),
         ("stopword file not found:", "nope.txt")),
        (_cli("run", corpus, "--workdir", "", *RUN), ("--workdir is empty",)),
        (_cli("run", corpus, "--workdir", workdir, *RUN, "--seed", 2**63),
         ("--seed", "0<=x<=4294967295")),
        (_cli("run", corpus, "--workdir", workdir, *RUN, "--ngram-features", "1"),
         ("--ngram-features", "1 is neither 0 (off) nor >= 2")),
        (_cli("run", corpus, "--workdir", workdir, *RUN, "--wide-word-ngrams", "0",
              "--wide-char-ngrams", "0"), ("--wide: ",)),
        (_cli("evaluate", "--model", bundle_dir, corpus, "--min-accuracy", "nan"),
         ("--min-accuracy", "not a finite number")),
        (_cli("run", corpus, "--workdir", workdir, *RUN, "--unlabeled", tmp_path / "nope.txt"),
         ("nope.txt: no such file or directory",)),
        (_cli("run", corpus, "--workdir", bundle_dir / "wd", *RUN),
         ("--workdir is inside the sealed folder", str(bundle_dir))),
        (_cli("run", corpus, "--workdir", workdir, *RUN, "--no-pretrain", "--unlabeled", corpus),
         ("--unlabeled pretrains the embeddings: it contradicts --no-pretrain",)),
        (_cli("info", ""), ("the bundle path is empty",)),
        (_cli("predict", "--model", "", "好吃"), ("the bundle path is empty",)),
    ]:  # fmt: skip
        refused_bundle = "no-bundle" in fragments or "the bundle path is empty" in fragments
        _one_error_line(result, 3 if refused_bundle else 2, *fragments)
        assert "Flow run" not in result.stderr and "temporary" not in result.stderr, result.stderr
    assert not workdir.exists() and not (tmp_path / "p.parquet").exists()


def test_a_corpus_bad_past_its_header_is_refused_before_any_flow_runs(
    corpus: Path, tmp_path: Path
) -> None:
    """``run`` reads, validates and splits the corpus before a server starts, so what only a
    full read finds (a ragged row, one label, too few rows to split) is one line too."""
    ragged = tmp_path / "ragged.csv"
    lines = corpus.read_text(encoding="utf-8").splitlines()
    ragged.write_text("\n".join([*lines[:30], "好,pos,extra", *lines[30:]]) + "\n", "utf-8")
    one_label = tmp_path / "one.csv"
    pl.DataFrame({"text": [f"好{i}" for i in range(40)], "label": ["pos"] * 40}).write_csv(
        one_label
    )
    workdir = tmp_path / "w"
    for path, fragment in [(ragged, "ragged.csv: line 31: 3 fields"),
                           (one_label, "one.csv: only one label")]:  # fmt: skip
        result = _cli("run", path, "--workdir", workdir, *RUN)
        _one_error_line(result, 2, fragment)
        assert "Flow run" not in result.stderr and "temporary" not in result.stderr, result.stderr
    assert not (workdir / "artifacts").exists()


def test_the_console_drops_prefects_reports_of_a_user_error_and_the_ui_keeps_them() -> None:
    """Prefect reports a failed run's exception four times; on the console the CLI's one
    ``zhflow: error:`` line replaces them, the API handler (the UI's logs) keeps them, and
    a bug's report stays everywhere."""
    import logging

    from prefect.logging.handlers import APILogHandler

    from zhflow.flows.cli import _quiet_user_errors, _UserErrorsOffTheConsole

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "", 0, message, None, None)

    console = _UserErrorsOffTheConsole()
    for message in [
        "Task run failed with exception: InputError('a.csv: line 3: 4 fields')",
        "Finished in state Failed('Task run encountered an exception InputError: a.csv: ...')",
        "Encountered exception during execution: BundleError('b: refused model bundle')",
        "Finished in state Failed('Flow run encountered an exception: BelowMinimumAccuracy: ')",
    ]:
        assert not console.filter(record(message)), message
    for message in ["Task run failed with exception: ValueError('a bug')",
                    "corpus: 40 rows kept of 40; labels {'pos': 40}"]:  # fmt: skip
        assert console.filter(record(message)), message
    _quiet_user_errors()
    handlers = [h for name in ("prefect", "prefect.task_runs", "prefect.flow_runs")
                for h in logging.getLogger(name).handlers]  # fmt: skip
    assert any(isinstance(h, APILogHandler) for h in handlers)
    for handler in handlers:
        on_console = any(isinstance(f, _UserErrorsOffTheConsole) for f in handler.filters)
        assert on_console != isinstance(handler, APILogHandler), handler


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--lr", "nan"), ("--lr", "inf"), ("--lr", "+Infinity"), ("--dropout", "nan")],
)
def test_non_finite_flags_are_refused_before_any_stage(
    corpus: Path, tmp_path: Path, flag: str, value: str
) -> None:
    workdir = tmp_path / "w"
    line = _one_error_line(
        _cli("run", corpus, "--workdir", workdir, flag, value, *RUN), 2, flag, "not a finite number"
    )
    assert "--help" in line
    assert not workdir.exists()  # nothing ran


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run", "--epochs", "x"], "Invalid value for '--epochs'"),
        (["bogus"], "No such command 'bogus'"),
        (["score"], "Missing"),
        (["run", "--no-such-flag"], "No such option '--no-such-flag'"),
    ],
)
def test_click_usage_errors_are_one_line(args: list[str], fragment: str) -> None:
    result = _cli(*args)
    line = _one_error_line(result, 2, fragment, "--help")
    assert result.stderr.strip() == line  # nothing else: no "Usage:" block
    assert "Usage:" not in result.output


def test_help_and_version_are_unchanged() -> None:
    for args in (["--help"], ["run", "--help"], ["score", "-h"]):
        result = _cli(*args)
        assert result.exit_code == 0 and result.stdout.startswith("Usage: "), result.output
    assert _cli("--version").exit_code == 0


@pytest.mark.prefect
def test_read_only_work_dir_cached_rerun_and_new_corpus(
    prefect_server, corpus: Path, tmpfs: Tmpfs, tmp_path: Path
) -> None:
    workdir = tmpfs.path / "wd"
    result = _cli("run", corpus, "--workdir", workdir, "--until", "tokenize", *RUN)
    assert result.exit_code == 0, (result.output, result.exception)
    other = tmp_path / "other.csv"
    other.write_text(corpus.read_text() + "新的一行,pos\n")
    tmpfs.read_only()
    for src in (corpus, other):  # a cached rerun, then a new corpus
        _one_error_line(
            _cli("run", src, "--workdir", workdir, "--until", "tokenize", *RUN),
            2,
            f"--workdir {workdir}: cannot write (Read-only file system)",
        )


def test_reading_a_pipe_names_the_input(bundle_dir: Path, tmp_path: Path) -> None:
    from zhflow.tasks.bundle import load_bundle
    from zhflow.tasks.score import score_file

    read, write = os.pipe()
    os.write(write, "text\n好吃\n".encode())
    os.close(write)
    source = f"/dev/fd/{read}"
    try:
        with pytest.raises(InputError) as info:
            score_file(load_bundle(bundle_dir), source, tmp_path / "p.parquet", fmt="csv")
    finally:
        os.close(read)
    assert str(info.value).startswith(f"{source}: cannot read"), info.value
    assert "save it to a file first" in str(info.value)
    assert "p.parquet" not in str(info.value) and not (tmp_path / "p.parquet").exists()


# ------------------------------------------------------------------------------------------
# labels are text, never markup


HOSTILE_LABELS = ["$\\foo{$", "$x$", "<img src=x onerror=alert(1)>", "\x1b[31m红\x1b[0m", "a|b"]


def test_plain_and_markdown_text() -> None:
    assert plain("\x1b[31m红\x1b[0m\x07\n好") == "红 好"
    assert plain("\x1b]0;evil title\x07ok") == "ok"
    assert markdown("<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"
    assert markdown("a|b") == "a\\|b" and markdown("$x$") == "\\$x\\$"
    assert markdown("好评") == "好评"


def test_confusion_plot_draws_markup_labels_as_text(tmp_path: Path) -> None:
    from zhflow.tasks.plots import plot_confusion

    n = len(HOSTILE_LABELS)
    matrix = [[int(i == j) for j in range(n)] for i in range(n)]
    out = plot_confusion(matrix, HOSTILE_LABELS, tmp_path / "confusion.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_confusion_markdown_and_tables_carry_no_html_or_escapes() -> None:
    from zhflow.flows.artifacts import confusion_markdown, metrics_rows, profile_rows, score_rows

    n = len(HOSTILE_LABELS)
    per = {
        lab: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1} for lab in HOSTILE_LABELS
    }
    matrix = [[int(i == j) for j in range(n)] for i in range(n)]
    metrics = {"labels": HOSTILE_LABELS, "per_class": per, "accuracy": 1.0, "macro_f1": 1.0,
               "n": n, "confusion_matrix": matrix}  # fmt: skip
    md = confusion_markdown(metrics)
    assert "<img" not in md and "\x1b" not in md and "&lt;img" in md
    assert "\\$\\\\foo\\{\\$" in md  # shown as typed
    rows = (
        metrics_rows(metrics)
        + profile_rows({"labels": dict.fromkeys(HOSTILE_LABELS, 1), "small_labels": HOSTILE_LABELS})
        + score_rows({"labels": dict.fromkeys(HOSTILE_LABELS, 1), "rows": n})
    )
    text = json.dumps(rows, ensure_ascii=False)
    assert "\\u001b" not in text and "\x1b" not in text


# ------------------------------------------------------------------------------------------
# with a Prefect server: failures deep in a run or a scoring job


@pytest.mark.prefect
def test_disk_full_during_run_is_one_line(prefect_server, corpus: Path, tmpfs: Tmpfs) -> None:
    workdir = tmpfs.path / "wd"
    result = _cli("run", corpus, "--workdir", workdir, "--until", "vocab", *RUN)
    assert result.exit_code == 0, (result.output, result.exception)
    tmpfs.fill()
    result = _cli("run", corpus, "--workdir", workdir, "--until", "encode", *RUN)
    _one_error_line(result, 2, f"{workdir}/encoded/", "cannot write (No space left on device)")
    assert "Traceback" not in result.stderr
    assert not [p for p in (workdir / "encoded").iterdir()]  # nothing half-made kept


@pytest.mark.prefect
def test_relative_output_under_a_read_only_folder(
    prefect_server, bundle_dir: Path, tmpfs: Tmpfs, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\n很好吃\n", encoding="utf-8")
    tmpfs.read_only()
    previous = os.getcwd()
    os.chdir(tmpfs.path)
    try:
        for out in ("p.parquet", "sub/p.parquet"):
            result = _cli("score", "--model", bundle_dir, src, "--output", out, "--processes", "1")
            _one_error_line(result, 2, "cannot write (Read-only file system)")
    finally:
        os.chdir(previous)
    assert list(tmpfs.path.iterdir()) == []


@pytest.mark.prefect
def test_disk_full_while_scoring_is_one_line(
    prefect_server, bundle_dir: Path, tmpfs: Tmpfs, tmp_path: Path
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("text\n" + "很好吃\n" * 200, encoding="utf-8")
    tmpfs.fill()
    out = tmpfs.path / "p.parquet"
    result = _cli("score", "--model", bundle_dir, src, "--output", out, "--processes", "1")
    _one_error_line(result, 2, f"{out}: cannot write (No space left on device)")
    assert sorted(p.name for p in tmpfs.path.iterdir()) == ["filler"]


# ------------------------------------------------------------------------------------------
# a real process with its own temporary Prefect server


def _zhflow() -> list[str]:
    script = Path(sys.executable).with_name("zhflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "zhflow.flows.cli"]


def temporary_server_env(home: Path) -> dict[str, str]:
    """No PREFECT_API_URL: the command starts (and must stop) its own temporary server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PYTHONUNBUFFERED="1",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")  # fmt: skip
    return env


@pytest.mark.slow
def test_error_is_the_last_stderr_line_after_the_server_stops(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """A bad byte past the header fails inside the flow: the temporary server stops first,
    then the one error line (naming the input, not the output) ends stderr. A pipe is refused
    before any server starts, with the same kind of line."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text\n好吃\n".encode() + b"\xff\xfe\n")

    def score(path: str, stdin: bytes = b"") -> tuple[int, str]:
        done = subprocess.run(
            [*_zhflow(), "score", "--model", str(bundle_dir), path, "--format", "csv",
             "--output", str(tmp_path / "p.parquet"), "--processes", "1"],
            input=stdin, capture_output=True, timeout=300,
            env=temporary_server_env(tmp_path / "h"),
        )  # fmt: skip
        return done.returncode, done.stderr.decode(errors="replace")

    code, err = score(str(bad))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err[-3000:]
    assert "Starting temporary server" in err and "Stopping temporary server" not in err
    assert lines[-1].startswith(f"zhflow: error: {bad}: not valid utf-8 at line 3"), lines[-3:]
    assert sum("not valid utf-8" in line for line in lines) == 1, err  # Prefect's reports: off
    assert "Traceback" not in err and not (tmp_path / "p.parquet").exists()
    code, err = score("/dev/stdin", "text\n好吃\n".encode())
    assert code == 2, err[-3000:]
    assert err.splitlines()[-1].startswith("zhflow: error: /dev/stdin: cannot read"), err
    assert "temporary" not in err and "Traceback" not in err
    assert not (tmp_path / "p.parquet").exists()
