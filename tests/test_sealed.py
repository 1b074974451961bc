"""Issue 13: a model bundle stays sealed. Manifest entries are plain names of regular files
inside the bundle, checked before any listed file is opened; config and labels are checked
on load. Each refusal is one line with exit code 3. docs/RELIABILITY.md lists the cases."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import train_tiny_bundle
from zhflow.tasks import storage
from zhflow.tasks.bundle import load_bundle, seal_bundle
from zhflow.tasks.errors import BundleError


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("sealed") / "bundle", epochs=1)


@pytest.fixture
def bundle(bundle_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the suite) if loading blocks on a device or a FIFO."""

    def alarm(*_: object) -> None:
        raise AssertionError("the loader blocked: it opened a listed device or FIFO")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(90)  # generous: a loaded 2-core machine imports torch and prefect slowly
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _list_in_manifest(bundle: Path, name: str, size: int = 4, sha: str = "0" * 64) -> None:
    path = bundle / storage.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"][name] = {"size": size, "sha256": sha}
    path.write_text(json.dumps(manifest))


def _refused(bundle: Path, fragment: str) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message and "refused model bundle" in message, message
    assert fragment in message, message
    assert info.value.exit_code == 3
    return message


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file the manifest check hashes: must stay empty for a refused manifest."""
    seen: list[str] = []
    real = storage.sha256_file

    def spy(path: str | os.PathLike[str]) -> str:
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(storage, "sha256_file", spy)
    monkeypatch.setattr("zhflow.tasks.bundle.sha256_file", spy)
    return seen


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("/dev/zero", "not a plain relative name"),
        ("../../../../etc/passwd", "not a plain relative name"),
        ("a/../config.json", "not a plain relative name"),
        ("./config.json", "not a plain relative name"),
        ("", "not a file name"),
        ("sub\\x.bin", "not a file name"),
    ],
)
def test_manifest_entry_outside_or_odd_is_refused_unopened(
    bundle: Path, no_hang: None, opened: list[str], entry: str, fragment: str
) -> None:
    _list_in_manifest(bundle, entry, size=os.stat("/etc/passwd").st_size)
    _refused(bundle, fragment)
    assert opened == []


def test_symlink_leaving_the_bundle_is_refused(bundle: Path, opened: list[str]) -> None:
    (bundle / "extra.txt").symlink_to("/etc/passwd")
    _list_in_manifest(bundle, "extra.txt", size=os.stat("/etc/passwd").st_size)
    _refused(bundle, "leads outside the folder")
    assert opened == []


def test_weights_swapped_for_a_symlink_outside_is_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "weights.safetensors"
    shutil.move(bundle / "weights.safetensors", outside)
    (bundle / "weights.safetensors").symlink_to(outside)
    _refused(bundle, "leads outside the folder")


def test_symlink_to_a_device_or_fifo_is_refused_without_hanging(
    bundle: Path, no_hang: None, opened: list[str]
) -> None:
    (bundle / "zero.bin").symlink_to("/dev/zero")
    _list_in_manifest(bundle, "zero.bin")
    _refused(bundle, "leads outside the folder")
    os.mkfifo(bundle / "pipe.bin")
    manifest = json.loads((bundle / storage.MANIFEST).read_text())
    del manifest["files"]["zero.bin"]
    (bundle / storage.MANIFEST).write_text(json.dumps(manifest))
    _list_in_manifest(bundle, "pipe.bin")
    _refused(bundle, "not a regular file")
    assert opened == []


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("not json", "_manifest.json is unreadable"),
        ("[]", "not a manifest"),
        ('{"files": []}', "not a manifest"),
        ('{"files": {"config.json": 3}}', "has no size"),
        ('{"files": {}}', "not listed in _manifest.json"),
    ],
)
def test_malformed_manifest_is_refused(bundle: Path, manifest: str, fragment: str) -> None:
    (bundle / storage.MANIFEST).write_text(manifest)
    _refused(bundle, fragment)


def _reseal_config(bundle: Path, **changes: object) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))
    seal_bundle(bundle)


@pytest.mark.parametrize(
    ("max_len", "fragment"),
    [(0, "max_len must be an integer >= 1, got 0"), (-5, "got -5"), ("24", "got '24'"),
     (True, "got True"), (None, "got None")],
)  # fmt: skip
def test_resealed_bad_max_len_is_refused(bundle: Path, max_len: object, fragment: str) -> None:
    _reseal_config(bundle, max_len=max_len)
    _refused(bundle, fragment)


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (["neg", "neg"], "labels repeat ('neg')"),
        (["neg", ""], "a label is empty"),
        (["neg", 1], "must be a list of strings"),
        ("neg,pos", "must be a list of strings"),
        ([], "no labels"),
    ],
)
def test_resealed_bad_labels_are_refused(bundle: Path, labels: object, fragment: str) -> None:
    (bundle / "labels.json").write_text(json.dumps({"labels": labels}))
    seal_bundle(bundle)
    _refused(bundle, fragment)


def test_tokenizer_file_outside_the_bundle_is_refused(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["tokenizer"]["spec"]["user_dict"] = "../../../../etc/passwd"
    (bundle / "config.json").write_text(json.dumps(config))
    seal_bundle(bundle)
    _refused(bundle, "user_dict '../../../../etc/passwd' is not a file listed in _manifest.json")


def test_config_not_an_object_is_refused(bundle: Path) -> None:
    (bundle / "config.json").write_text("[1, 2]")
    seal_bundle(bundle)
    _refused(bundle, "format None")


def test_cli_refuses_an_unsealed_bundle_before_a_server_starts(
    bundle: Path, tmp_path: Path, no_hang: None
) -> None:
    from zhflow.flows.cli import main

    _list_in_manifest(bundle, "/dev/zero")
    src = tmp_path / "in.csv"
    src.write_text("text\n很好吃\n", encoding="utf-8")
    result = CliRunner().invoke(
        main, ["score", "--model", str(bundle), str(src), "--output", str(tmp_path / "p.parquet")]
    )
    assert result.exit_code == 3, (result.output, result.exception)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("zhflow: error:")]
    assert len(lines) == 1 and "not a plain relative name" in lines[0], result.stderr
    assert "Starting temporary server" not in result.stderr


def test_the_intact_bundle_still_loads(bundle: Path) -> None:
    loaded = load_bundle(bundle)
    assert loaded.max_len == 24 and sorted(loaded.labels) == ["neg", "pos"]
