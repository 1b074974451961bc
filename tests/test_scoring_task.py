"""tasks/scoring.py on its own: which bundle a ``--bundle`` path means."""

from __future__ import annotations

import json
from pathlib import Path

from zhflow.tasks import catalog
from zhflow.tasks.scoring import resolve_bundle


def test_a_bundle_folder_is_itself(tmp_path: Path) -> None:
    (tmp_path / catalog.CONFIG_JSON).write_text("{}")
    assert resolve_bundle(str(tmp_path)) == str(tmp_path)


def test_a_work_dir_means_its_latest_bundle_relative_or_absolute(tmp_path: Path) -> None:
    latest = tmp_path / catalog.LATEST_RUN
    latest.parent.mkdir(parents=True)
    latest.write_text(json.dumps({"model": "bundle/abc"}))
    assert resolve_bundle(str(tmp_path)) == str(tmp_path / "bundle" / "abc")
    latest.write_text(json.dumps({"model": "/elsewhere/b"}))
    assert resolve_bundle(str(tmp_path)) == "/elsewhere/b"  # an old, absolute record


def test_an_unreadable_record_leaves_the_path_for_the_bundle_check(tmp_path: Path) -> None:
    latest = tmp_path / catalog.LATEST_RUN
    latest.parent.mkdir(parents=True)
    latest.write_text("not json")
    assert resolve_bundle(str(tmp_path)) == str(tmp_path)
    latest.write_text(json.dumps({"accuracy": 0.9}))  # a data-only run: no model yet
    assert resolve_bundle(str(tmp_path)) == str(tmp_path)
