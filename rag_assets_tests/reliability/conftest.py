"""Fixtures of the reliability tests: a PostgreSQL-backed instance from docker/dagster.yaml, fast
retries, and the loopback GitHub server."""

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from rag_assets_tests.reliability.helpers import DOCKER_INSTANCE

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RETRY_ATTEMPTS = 3


@pytest.fixture
def postgres_database():
    """A new, empty database on the test PostgreSQL (RAG_TEST_POSTGRES_URL), dropped afterwards.

    Yields (user, password, host, port, database). Skips, saying why, when the server cannot be reached.
    """
    import psycopg2

    url = os.environ.get("RAG_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5432}"
    try:
        admin = psycopg2.connect(url, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"PostgreSQL not reachable at {where} (set RAG_TEST_POSTGRES_URL): {str(error).strip()}")
    admin.autocommit = True
    name = f"rag_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            parts.username or "postgres",
            parts.password or "",
            parts.hostname,
            str(parts.port or 5432),
            name,
        )
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def postgres_home(env, postgres_database, monkeypatch, workdir) -> Path:
    """DAGSTER_HOME holding docker/dagster.yaml, its connection taken from DAGSTER_POSTGRES_* as in Compose.

    Only the two folders on the image's volume (artifacts, compute logs) move into the test's folder;
    storage, run coordinator, pools and run monitoring are the file's own.
    """
    user, password, host, port, database = postgres_database
    for name, value in {
        "USER": user,
        "PASSWORD": password,
        "HOST": host,
        "PORT": port,
        "DB": database,
    }.items():
        monkeypatch.setenv(f"DAGSTER_POSTGRES_{name}", value)
    config = yaml.safe_load(DOCKER_INSTANCE.read_text())
    config["local_artifact_storage"]["config"]["base_dir"] = str(workdir / "dagster_storage")
    config["compute_logs"]["config"]["base_dir"] = str(workdir / "dagster_storage" / "compute_logs")
    home = Path(env["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


@pytest.fixture
def fast_retries(monkeypatch) -> int:
    """The retry policy of every fetcher, with waits of milliseconds (RAG_RETRY_*, read by Settings)."""
    monkeypatch.setenv("RAG_RETRY_ATTEMPTS", str(RETRY_ATTEMPTS))
    monkeypatch.setenv("RAG_RETRY_BASE_SECONDS", "0.01")
    return RETRY_ATTEMPTS


@pytest.fixture
def settings(env, fast_retries):
    """The settings, read after the retry variables are set (Settings reads RAG_RETRY_* once)."""
    from rag_assets.settings import Settings

    return Settings.from_env()


@pytest.fixture
def github(fast_retries, github):
    """The loopback GitHub server (rag_assets_tests/conftest.py), with fast retries."""
    return github


@pytest.fixture
def postgres_instance(postgres_home):
    """The instance DAGSTER_HOME describes: docker/dagster.yaml on the test's own database."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        yield instance
