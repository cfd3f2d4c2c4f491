"""Shared fixtures: a data dir, a sources file, settings and a real Dagster instance per test, the
loopback GitHub server. Plain helper functions are in rag_assets_tests/helpers.py."""

import os
import shutil
import sys
from pathlib import Path

import dagster as dg
import pytest

from rag_assets.definitions import build_resources
from rag_assets.resources.embedder import Embedder
from rag_assets.settings import Settings
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import SAMPLE_DOCS, USER_ENV_UNSET, user_env

TMPFS = Path("/dev/shm")
TMPFS_MIN_FREE = 4 << 30


def pytest_configure(config):
    """Test folders on tmpfs where the machine has one, unless --basetemp or PYTEST_DEBUG_TEMPROOT says
    otherwise. Every Dagster event is a SQLite commit, and on a disk their fsyncs were about half the
    time of an in-process run; nothing here tests durability across a power cut."""
    usable = sys.platform == "linux" and TMPFS.is_dir() and os.access(TMPFS, os.W_OK)
    if config.option.basetemp or not usable or shutil.disk_usage(TMPFS).free < TMPFS_MIN_FREE:
        return
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(TMPFS))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def env(workdir: Path, monkeypatch) -> dict[str, str]:
    """The environment a user would set: everything under the test's own folder."""
    for name in USER_ENV_UNSET:
        monkeypatch.delenv(name, raising=False)
    values = user_env(workdir)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(env) -> Settings:
    return Settings.from_env()


@pytest.fixture
def instance(env):
    with dg.DagsterInstance.get() as instance:
        yield instance


@pytest.fixture(scope="session")
def loaded_embedders():
    """Models loaded once per session, by what the embedder resource asks for (model, device, precision,
    batch tokens). Loading is per step in production; here it would be once per run_ingest."""
    loaded: dict[tuple, Embedder] = {}
    yield loaded
    for embedder in loaded.values():
        embedder.close()


@pytest.fixture(scope="session")
def shared_cache_dir(tmp_path_factory) -> Path:
    """One embedding cache for the session. Safe to share: entries are keyed by model identity and text
    hash. Tests that count what the model embedded keep their own, cold cache (the default)."""
    return tmp_path_factory.mktemp("shared_cache")


@pytest.fixture
def warm(loaded_embedders, shared_cache_dir):
    """Resource overrides for run_ingest/build_definitions: the embedder the settings describe, already
    loaded, with the session's embedding cache. `warm(settings)` -> {"embedder": ...}.

    Dagster passes the very object to every step (a hardcoded resource: no setup, no teardown), so the
    model stays loaded from one run to the next.
    """

    def resources(settings: Settings) -> dict:
        resource = build_resources(settings)["embedder"].model_copy(
            update={"cache_dir": str(shared_cache_dir)}
        )
        key = (
            resource.model,
            resource.device,
            resource.precision,
            resource.batch_tokens,
            resource.query_prompt,
            resource.document_prompt,
            resource.backend,
        )
        if key not in loaded_embedders:
            loaded_embedders[key] = resource.get()
        resource._embedder = loaded_embedders[key]
        return {"embedder": dg.ResourceDefinition.hardcoded_resource(resource)}

    return resources


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
