"""The built wheel ships all three top-level packages (setuptools' auto-discovery drops `tasks`)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_imports_flows_tasks_models(tmp_path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("zhflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for package in ("flows", "tasks", "models"):
        assert f"{package}/__init__.py" in names
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
         str(tmp_path / "site"), str(wheel)],
        check=True,
    )  # fmt: skip
    probe = (
        "import flows.cli, tasks.stages, models.rnn, sys;"
        "print('\\n'.join(m.__file__ for m in (flows.cli, tasks.stages, models.rnn)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    assert all(line.startswith(str(tmp_path / "site")) for line in out.splitlines())
