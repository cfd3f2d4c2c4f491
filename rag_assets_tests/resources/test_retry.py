"""The shared retry policy, on its own and in GitHub ingestion against the loopback server:
transient answers are retried (honouring retry-after), a reset mid-tarball restarts the download,
and a source that keeps failing fails its run by name, without the token, losing no stored rows."""

import time

import httpx
import pytest

from rag_assets.resources.retry import RateLimitedError, RetryPolicy
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.settings import Settings
from rag_assets_tests.helpers import milvus_rows, write_sources

TOKEN = "ghp_retryTestToken0123456789abcdefABCDEF"
FILES = {"docs/index.md": "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun it twice.\n"}


@pytest.fixture
def github(github, monkeypatch):
    """The loopback GitHub server with acme/frob behind a token, and fast retries."""
    monkeypatch.setenv("RAG_RETRY_BASE_SECONDS", "0.01")
    monkeypatch.setenv("RAG_RETRY_ATTEMPTS", "4")
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    github.required_token = TOKEN
    github.add_repo("acme/frob", FILES)
    return github


@pytest.fixture
def settings(env, github) -> Settings:
    """Read after `github` set RAG_RETRY_* (Settings reads the environment once)."""
    return Settings.from_env()


def configure(settings, github):
    write_sources(
        settings.sources_file,
        [
            {
                "name": "frob",
                "kind": "github",
                "repo": "acme/frob",
                "ref": "main",
                "include": ["**/*.md"],
                "api_url": github.url,
            },
        ],
    )


def answers(statuses: list[int | tuple[int, dict]]):
    """A transport whose answers are `statuses` in order, then 200; records when each request came."""
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        status, headers = (statuses.pop(0) if statuses else 200), {}
        if isinstance(status, tuple):
            status, headers = status
        return httpx.Response(status, headers=headers, text="ok")

    return httpx.MockTransport(handler), times


def send(policy: RetryPolicy, transport) -> httpx.Response:
    with httpx.Client(transport=transport) as client:
        return policy.send(lambda: client.get("http://h.test/x?secret=1"), what="source 'x': fetching")


def test_backoff_doubles_and_is_capped():
    policy = RetryPolicy(attempts=6, base_seconds=1.0, max_wait_seconds=5.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_after_is_honoured_and_403_without_rate_limit_headers_is_final():
    transport, times = answers([503, (429, {"retry-after": "1"})])
    assert send(RetryPolicy(attempts=3, base_seconds=0.01), transport).status_code == 200
    assert times[2] - times[1] >= 0.95 and times[1] - times[0] < 0.5

    transport, times = answers([403])
    assert send(RetryPolicy(attempts=3, base_seconds=0.01), transport).status_code == 403 and len(times) == 1


def test_rate_limit_reset_beyond_the_cap_gives_up_at_once_saying_until_when():
    reset = int(time.time()) + 3600
    transport, times = answers([(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})])
    with pytest.raises(RateLimitedError) as raised:
        send(RetryPolicy(attempts=5, base_seconds=0.01, max_wait_seconds=2), transport)
    assert len(times) == 1 and abs(raised.value.until.timestamp() - reset) < 2
    assert "secret" not in str(raised.value)


def test_503_then_429_with_retry_after_then_200_is_ingested(settings, instance, github):
    configure(settings, github)
    github.fail_next("/commits/", [503, (429, {"retry-after": "1"})])

    run_ingest(settings, instance, ["frob"])

    assert [r.status for r in github.requests if "/commits/" in r.path] == [503, 429, 200]
    assert {r["heading"] for r in milvus_rows(settings, "frob").values()} == {"Frob", "Frob › Install"}


def test_connection_reset_mid_tarball_restarts_the_download(settings, instance, github):
    configure(settings, github)
    github.reset_connection_mid_tarball(times=1)

    run_ingest(settings, instance, ["frob"])

    assert github.count("/_codeload/") == 2
    assert len(milvus_rows(settings, "frob")) == 2


@pytest.mark.slow
def test_source_that_keeps_failing_keeps_its_rows_and_the_error_names_it_without_the_token(
    settings, instance, github
):
    configure(settings, github)
    run_ingest(settings, instance, ["frob"])
    before = milvus_rows(settings, "frob")
    github.push("acme/frob", {"docs/index.md": "# Frob\n\nRewritten.\n"})
    github.fail_next("/tarball/", [503] * 10)

    with pytest.raises(IngestFailed) as raised:
        run_ingest(settings, instance, ["frob"])

    message = str(raised.value)
    assert "source 'frob'" in message and "gave up after 4 tries; last answer: HTTP 503" in message
    assert TOKEN not in message
    assert milvus_rows(settings, "frob") == before
