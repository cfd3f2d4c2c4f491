"""The commit sensor against a loopback GitHub: 304 when unchanged, one run per moved source, skips
when out of rate-limit budget, and the token nowhere but in the Authorization header."""

import json
import logging
from datetime import UTC, datetime

import pytest

from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import github_source, milvus_rows, write_sources
from rag_assets_tests.sensors.helpers import (
    apply_partition_requests,
    cursor_of,
    execute,
    runs,
    skip_message,
    tick,
)

TOKEN = "ghp_sensorTestToken0123456789abcdefABCDEF"
PAGE = "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun it twice.\n"


def register(settings, instance, github, *repos: tuple[str, str]):
    """Both repositories exist and are in the sources file; the registry sensor's first tick applied."""
    for name, repo in repos:
        github.add_repo(repo, {"docs/index.md": PAGE.replace("Frob", name)})
    write_sources(settings.sources_file, [github_source(github, name, repo) for name, repo in repos])
    result = tick(settings, instance, "sources_sensor")
    apply_partition_requests(instance, result)
    return result


def commit_checks(github: FakeGitHub) -> list:
    return [r for r in github.requests if r.path.startswith("/repos/") and "/commits/" in r.path]


def test_first_tick_registers_github_sources_as_partitions_and_requests_their_first_runs(
    settings, instance, github
):
    result = register(settings, instance, github, ("frob", "acme/frob"), ("other", "acme/other"))

    assert set(instance.get_dynamic_partitions("sources")) == {"frob", "other"}
    assert sorted(r.partition_key for r in runs(result)) == ["frob", "other"]

    first = tick(settings, instance, "github_commits_sensor")
    assert runs(first) == []  # the registration runs cover a new source; the sensor records its commit
    assert set(json.loads(cursor_of(first))) == {"frob", "other"}


def test_unchanged_repository_answers_304_and_requests_no_run(settings, instance, github):
    register(settings, instance, github, ("frob", "acme/frob"))
    cursor = cursor_of(tick(settings, instance, "github_commits_sensor"))

    again = tick(settings, instance, "github_commits_sensor", cursor)

    last = commit_checks(github)[-1]
    assert last.status == 304 and last.headers["if-none-match"] == f'"{json.loads(cursor)["frob"]}"'
    assert last.headers["accept"] == "application/vnd.github.sha"
    assert runs(again) == [] and cursor_of(again) == cursor


def test_new_commit_requests_exactly_one_run_for_that_source(settings, instance, github):
    register(settings, instance, github, ("frob", "acme/frob"), ("other", "acme/other"))
    cursor = cursor_of(tick(settings, instance, "github_commits_sensor"))

    sha = github.push("acme/frob", {"docs/index.md": PAGE + "\n## Upgrade\n\nRun it three times.\n"})
    moved = tick(settings, instance, "github_commits_sensor", cursor)

    [request] = runs(moved)
    assert (request.partition_key, request.run_key) == ("frob", f"frob:{sha}")
    assert json.loads(cursor_of(moved)) == {**json.loads(cursor), "frob": sha}
    assert runs(tick(settings, instance, "github_commits_sensor", cursor_of(moved))) == []


def test_exhausted_rate_limit_is_a_skip_that_says_until_when(settings, instance, github):
    register(settings, instance, github, ("frob", "acme/frob"))
    cursor = cursor_of(tick(settings, instance, "github_commits_sensor"))
    reset = int(datetime.now(UTC).timestamp()) + 1800
    github.set_rate_limit(0, reset)

    limited = tick(settings, instance, "github_commits_sensor", cursor)

    message = skip_message(limited)
    assert "rate limit" in message
    assert datetime.fromtimestamp(reset, UTC).isoformat(timespec="seconds") in message
    assert runs(limited) == [] and cursor_of(limited) == cursor


@pytest.mark.slow
def test_token_never_appears_in_logs_cursors_run_requests_or_metadata(
    settings, instance, github, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    github.required_token = TOKEN
    seen: list[str] = []

    registered = register(settings, instance, github, ("frob", "acme/frob"))
    [first_run] = runs(registered)
    assert execute(settings, instance, first_run).success
    baseline = tick(settings, instance, "github_commits_sensor")
    github.push("acme/frob", {"docs/index.md": PAGE + "\n## Upgrade\n\nAgain.\n"})
    moved = tick(settings, instance, "github_commits_sensor", cursor_of(baseline))
    [request] = runs(moved)
    assert execute(settings, instance, request).success
    github.fail_next("/commits/", [401])  # an error path, too
    failed = tick(settings, instance, "github_commits_sensor", cursor_of(moved))

    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in commit_checks(github))
    assert {r["text"] for r in milvus_rows(settings, "frob").values()} >= {"Again."}
    for result in (registered, baseline, moved, failed):
        seen += [repr(result), str(cursor_of(result)), str(skip_message(result))]
    for record in instance.get_run_records():
        seen += [repr(record.dagster_run.tags), repr(record.dagster_run.run_config)]
        seen += [repr(event) for event in instance.all_logs(record.dagster_run.run_id)]
    seen.append(caplog.text)
    assert TOKEN not in "\n".join(seen)
