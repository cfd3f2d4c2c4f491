"""Shared fixtures: a data dir, a sources file, settings and a real Dagster instance per test, the
loopback GitHub server. Plain helper functions are in rag_assets_tests/helpers.py."""

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from rag_assets.instance import INSTANCE_CONFIG
from rag_assets.settings import Settings
from rag_assets.testing.github_server import FakeGitHub

# Re-exported for tests that still import them from here; new code imports rag_assets_tests.helpers.
from rag_assets_tests.helpers import SAMPLE_DOCS, milvus_rows, write_sources  # noqa: F401


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def env(workdir: Path, monkeypatch) -> dict[str, str]:
    """The environment a user would set: everything under the test's own folder."""
    values = {
        "RAG_DATA_DIR": str(workdir / "data"),
        "RAG_SOURCES_FILE": str(workdir / "sources.yaml"),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
    }
    for name in ("MILVUS_URI", "MILVUS_COLLECTION", "EMBEDDING_MODEL", "GITHUB_TOKEN", "MILVUS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    home = workdir / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_CONFIG))
    return values


@pytest.fixture
def settings(env) -> Settings:
    return Settings.from_env()


@pytest.fixture
def instance(env):
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture
def docs_folder(workdir: Path) -> Path:
    """A copy of the bundled sample docs that a test may edit."""
    folder = workdir / "docs"
    shutil.copytree(SAMPLE_DOCS, folder)
    return folder


@pytest.fixture
def github():
    """A GitHub API on 127.0.0.1 with no repositories yet (rag_assets/testing/github_server.py)."""
    with FakeGitHub() as server:
        yield server


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (RAG_NO_SKIPS=1) a skipped test is a failure, unless it needs hardware CI lacks (marker
    `gpu`).
    """
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("RAG_NO_SKIPS") == "1" and item.get_closest_marker("gpu") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every service must be present: {report.longrepr}"
