"""Secrets: the GitHub and Milvus tokens come from the environment only, and no run, log, event,
cursor, file or error message ever holds them, not even when the run fails after authenticating."""

import json
import logging
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from rag_assets.definitions import build_resources
from rag_assets.sources import SourcesFileError, load_sources
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import rag_assets, write_sources
from rag_assets_tests.sensors.helpers import cursor_of, skip_message, tick

GITHUB_TOKEN = "ghp_SecretTestToken0123456789abcdefABCDEFxyz"
MILVUS_TOKEN = "root:MilvusSecretTestPassword0123456789"
FILES = {"docs/index.md": "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun the installer twice.\n"}


@pytest.fixture
def github(github):
    """The loopback GitHub server, refusing any request without the token."""
    github.required_token = GITHUB_TOKEN
    return github


def github_source(github: FakeGitHub) -> dict:
    return {
        "name": "frob",
        "kind": "github",
        "repo": "acme/frob",
        "ref": "main",
        "include": ["docs/**/*.md"],
        "api_url": github.url,
    }


def instance_records(instance: dg.DagsterInstance) -> list[str]:
    """Every run (config, tags) and every event of every run (messages, metadata, errors with their
    causes), serialized whole."""
    texts = []
    for record in instance.get_run_records():
        texts.append(serialize_value(record.dagster_run))
        texts += [serialize_value(event) for event in instance.all_logs(record.dagster_run.run_id)]
    return texts


def files_holding(secret: str, root: Path) -> list[Path]:
    """Every file under root (instance storage and compute logs, parquet, caches, Milvus) that contains the
    secret."""
    needle = secret.encode()
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


@pytest.mark.slow
@pytest.mark.timeout(300)  # three `rag-assets ingest` processes, one after another
def test_tokens_appear_nowhere_after_a_good_run_and_two_runs_that_fail_after_authenticating(
    env, settings, instance, github, workdir
):
    github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])
    secrets = {
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "MILVUS_TOKEN": MILVUS_TOKEN,
        "RAG_RETRY_ATTEMPTS": "2",
        "RAG_RETRY_BASE_SECONDS": "0",
    }

    def ingest() -> subprocess.CompletedProcess:
        return rag_assets("ingest", "--verbose", env={**env, **secrets})

    good = ingest()  # GitHub and Milvus both opened with their tokens
    github.push("acme/frob", {**FILES, "docs/new.md": "# New\n\nA new page.\n"})
    github.fail_next("/tarball/", [500] * 2)  # every try of the run (RAG_RETRY_ATTEMPTS=2)
    server_errors = ingest()  # the commit lookup authenticates, then the tarball answers 500 every time
    github.serve_corrupt_tarball("acme/frob", "garbage")
    corrupt = ingest()

    assert good.returncode == 0, good.stderr
    assert (
        server_errors.returncode == 1
        and "gave up after 2 tries; last answer: HTTP 500" in server_errors.stderr
    )
    assert corrupt.returncode == 1 and "archive is truncated or corrupt" in corrupt.stderr
    assert {r.headers.get("authorization") for r in github.requests if r.path.startswith("/repos/")} == {
        f"Bearer {GITHUB_TOKEN}"
    }
    statuses = [record.dagster_run.status for record in instance.get_run_records()]
    assert sorted(statuses, key=str) == sorted(
        [dg.DagsterRunStatus.SUCCESS] + [dg.DagsterRunStatus.FAILURE] * 2, key=str
    )
    assert list(
        (workdir / "dagster_home" / "storage").rglob("compute_logs/*.err")
    )  # the scan below reads them too
    searched = [p.stdout + p.stderr for p in (good, server_errors, corrupt)] + instance_records(instance)
    for token in (GITHUB_TOKEN, MILVUS_TOKEN):
        assert not [text for text in searched if token in text]
        assert files_holding(token, workdir) == []


def test_sensor_cursor_skip_reason_and_logs_never_hold_the_token(
    env, settings, instance, github, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)
    sha = github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])
    instance.add_dynamic_partitions("sources", ["frob"])

    first = tick(settings, instance, "github_commits_sensor")
    github.push("acme/frob", {**FILES, "docs/new.md": "# New\n"})
    github.fail_next("/commits/", [500])
    failed = tick(settings, instance, "github_commits_sensor", cursor_of(first))
    github.set_rate_limit(0, 2_000_000_000)
    limited = tick(settings, instance, "github_commits_sensor", cursor_of(first))

    assert json.loads(cursor_of(first)) == {"frob": sha} == json.loads(cursor_of(failed))
    assert "rate limit" in skip_message(limited)
    assert {r.headers["authorization"] for r in github.requests} == {f"Bearer {GITHUB_TOKEN}"} and len(
        github.requests
    ) == 3
    assert [r.status for r in github.requests] == [200, 500, 403]
    printed = capfd.readouterr()
    seen = [str(cursor_of(r)) + str(skip_message(r)) + repr(r) for r in (first, failed, limited)]
    seen += [caplog.text, printed.out, printed.err]
    assert "HTTP 500" in printed.err + caplog.text
    assert not [text for text in seen if GITHUB_TOKEN in text]


@pytest.mark.parametrize(
    ("entry", "field", "words"),
    [
        ({"token": GITHUB_TOKEN}, "token", "secrets never go in the sources file"),
        ({"github_token": GITHUB_TOKEN}, "github_token", "environment variable"),
        ({"token_env": GITHUB_TOKEN}, "token_env", "name of an environment variable"),
        (
            {"api_url": f"https://x-access-token:{GITHUB_TOKEN}@github.example"},
            "api_url",
            "must not carry credentials",
        ),
    ],
)
def test_a_token_written_into_the_sources_file_is_refused_without_being_repeated(
    tmp_path, entry, field, words
):
    source = {"name": "frob", "kind": "github", "repo": "acme/frob", **entry}
    path = write_sources(tmp_path / "sources.yaml", [source])

    with pytest.raises(SourcesFileError) as raised:
        load_sources(path)

    assert f"field '{field}'" in str(raised.value) and words in str(raised.value)
    assert GITHUB_TOKEN not in str(raised.value) and GITHUB_TOKEN not in repr(raised.value.__cause__)


def test_resources_name_the_token_variables_and_never_hold_a_token(env, settings, monkeypatch):
    monkeypatch.setenv("MILVUS_TOKEN", MILVUS_TOKEN)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)

    config = {key: repr(resource) for key, resource in build_resources(settings).items()}

    assert "token_env='MILVUS_TOKEN'" in config["milvus"]
    assert not [key for key, text in config.items() if GITHUB_TOKEN in text or MILVUS_TOKEN in text]
