"""Shared fixtures: a small labelled Chinese corpus and, for flow tests, one Prefect test server."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from zhflow.flows.settings import apply_defaults

apply_defaults()

POSITIVE = [
    "这家店的菜很好吃，服务也很热情",
    "送餐很快，味道不错，下次还点",
    "质量很好，物流很快，非常满意",
    "酒店干净整洁，前台服务周到",
    "性价比很高，推荐大家购买",
    "包装精美，味道正宗，好评",
    "环境优雅，菜品丰富，值得再来",
    "快递小哥很给力，东西完好无损",
]
NEGATIVE = [
    "太难吃了，再也不会点这家",
    "送餐慢了一个小时，饭都凉了",
    "质量很差，用了两天就坏了",
    "房间有异味，隔音效果很差",
    "客服态度恶劣，不给退款",
    "分量太少，价格还贵，差评",
    "菜里有头发，非常恶心",
    "物流太慢，包装破损严重",
]


def tiny_corpus_rows(copies: int = 6) -> list[tuple[str, str]]:
    """Labelled rows; copies get a numbered suffix so texts stay distinct."""
    rows = []
    for k in range(copies):
        rows += [(f"{t}{'！' * (k % 3)}{k}", "pos") for t in POSITIVE]
        rows += [(f"{t}{'。' * (k % 2)}{k}", "neg") for t in NEGATIVE]
    return rows


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    rows = tiny_corpus_rows()
    pl.DataFrame({"text": [r[0] for r in rows], "label": [r[1] for r in rows]}).write_csv(path)
    return path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect server for the session (~20 s to start), isolated from ~/.prefect."""
    from prefect.settings import (
        PREFECT_HOME,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with (
        temporary_settings(
            {PREFECT_HOME: str(home), PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(home / "storage")}
        ),
        prefect_test_harness(server_startup_timeout=90),
    ):
        yield


@pytest.fixture(scope="session")
def _zhflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zhflow_home")


@pytest.fixture(autouse=True)
def _offline_env(monkeypatch: pytest.MonkeyPatch, _zhflow_home: Path) -> None:
    # Never find (or stop) a developer's own `zhflow server` from a test.
    monkeypatch.setenv("ZHFLOW_HOME", str(_zhflow_home))
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PYTHONHASHSEED", "0")
