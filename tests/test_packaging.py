"""The built wheel installs under one name, zhflow.{flows,tasks,models}, beside other packages.

The repository keeps flows/ tasks/ models/ at its top; the wheel maps them under ``zhflow`` so
a distribution that ships its own top-level ``models`` or ``tasks`` (common) neither overwrites
nor is overwritten by ours.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "tasks", "models")


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = out.glob("zhflow-*.whl")
    return wheel


def dummy_wheel(out: Path) -> Path:
    """A distribution with top-level ``models`` and ``tasks`` packages, written by hand."""
    name = "collider"
    info = f"{name}-1.0.dist-info"
    files = {
        "models/__init__.py": "OWNER = 'collider'\n",
        "tasks/__init__.py": "OWNER = 'collider'\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    wheel = out / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            archive.writestr(path, text)
    return wheel


def fresh_venv(where: Path) -> Path:
    """A new venv without pip whose dependencies come from this one's site-packages.

    The .pth line appends this venv's site-packages *after* the new one's, and only as a path:
    the .pth files in it (the editable install's import hook) are not run there.
    """
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "zz_outer_site.pth").write_text(site.getsitepackages()[0] + "\n")
    return python


@pytest.mark.slow
def test_wheel_installs_beside_a_distribution_with_top_level_models_and_tasks(tmp_path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    for package in PACKAGES:
        assert f"zhflow/{package}/__init__.py" in names
        assert not any(n.startswith(f"{package}/") for n in names), f"top-level {package}/ shipped"
    python = fresh_venv(tmp_path / "venv")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel), str(dummy_wheel(tmp_path))],
        check=True,
    )  # fmt: skip
    probe = (
        "import models, tasks, zhflow.flows.cli, zhflow.tasks.stages, zhflow.models.rnn\n"
        "print(models.OWNER, tasks.OWNER)\n"
        "for m in (zhflow.flows.cli, zhflow.tasks.stages, zhflow.models.rnn): print(m.__file__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, env=env, check=True, capture_output=True,
        text=True,
    ).stdout.splitlines()  # fmt: skip
    assert out[0] == "collider collider"
    assert all(line.startswith(str(tmp_path / "venv")) for line in out[1:]), out
    cli = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "zhflow"), "--help"], cwd=tmp_path, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "Usage: zhflow" in cli.stdout
