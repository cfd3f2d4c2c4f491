"""The GitHub reader against GitHub's HTTP shapes (httpx.MockTransport): one ref lookup and one
tarball pinned to its commit, no download when nothing changed, the sensor's conditional check,
retries, and the token only ever in the Authorization header."""

import time
from datetime import UTC, datetime

import httpx
import pytest

from rag_assets.core.source_store import KnownPage
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.readers.github import GitHubError, GitHubReader
from rag_assets.resources.retry import RateLimitedError, RetryPolicy
from rag_assets.sources import GitHubSource
from rag_assets_tests.resources.github_shapes import GitHubShapes, json_error

TOKEN = "ghp_shapesTestToken0123456789abcdefABCDEF"
FILES = {
    "docs/index.md": "# Frob\n\nIt frobs.\n",
    "docs/api.rst": "API\n===\n\nCalls.\n",
    "logo.png": b"\x89PNG",
}


def source(**extra) -> GitHubSource:
    fields = {"name": "frob", "kind": "github", "repo": "acme/frob", "ref": "main", "include": ["docs/**"]}
    return GitHubSource.model_validate({**fields, **extra})


def reader(github: GitHubShapes, attempts: int = 3) -> GitHubReader:
    return GitHubResource(retry_attempts=attempts, retry_base_seconds=0.01).reader(transport=github.transport)


def test_read_resolves_the_ref_once_and_reads_the_tarball_of_that_commit():
    github = GitHubShapes("acme/frob", FILES)

    result = reader(github).read(source(), {})

    assert github.paths() == [
        "/repos/acme/frob/commits/main",
        f"/repos/acme/frob/tarball/{github.sha}",
        f"/acme/frob/{github.sha}",
    ]
    lookup = github.requests[0].headers
    assert (lookup["accept"], lookup["x-github-api-version"], lookup["user-agent"]) == (
        "application/vnd.github+json",
        "2022-11-28",
        "rag-assets",
    )
    pages = result.frame().set_index("path")
    assert sorted(pages.index) == ["docs/api.rst", "docs/index.md"]
    assert (
        pages.loc["docs/index.md", "url"] == f"https://github.com/acme/frob/blob/{github.sha}/docs/index.md"
    )
    assert list(pages["format"]) == ["rst", "markdown"] and set(pages["commit"]) == {github.sha}
    assert result.commit == github.sha and set(pages["version"]) == {result.version}
    assert result.source_time == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert result.stats.pages == 2 and result.stats.as_metadata()["matched"] == 2


def test_unchanged_commit_and_definition_return_no_pages_and_make_no_download():
    github = GitHubShapes("acme/frob", FILES)
    first = reader(github).read(source(), {})
    known = {row["path"]: KnownPage(row["content_hash"], "", row["version"]) for row in first.pages}
    github.requests.clear()

    again = reader(github).read(source(), known)
    redefined = reader(github).read(source(exclude=["docs/api.rst"]), known)

    assert again.pages is None and again.version == first.version
    assert (
        github.paths()[0] == "/repos/acme/frob/commits/main"
        and github.paths().count("/acme/frob/" + github.sha) == 1
    )
    assert list(redefined.frame()["path"]) == ["docs/index.md"] and redefined.version != first.version


def test_token_is_sent_as_a_bearer_header_and_never_in_an_error(monkeypatch):
    monkeypatch.setenv("FROB_TOKEN", TOKEN)
    github = GitHubShapes("acme/frob", FILES)
    github.fail_next("/commits/", json_error(401))

    with pytest.raises(GitHubError) as raised:
        reader(github).read(source(token_env="FROB_TOKEN"), {})

    assert github.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert "HTTP 401" in str(raised.value) and "source 'frob'" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_an_answer_that_is_not_a_commit_is_a_clear_error():
    github = GitHubShapes("acme/frob", FILES)
    github.fail_next("/commits/", httpx.Response(200, text="<html>a captive portal</html>"))

    with pytest.raises(GitHubError, match="expected a commit object, got '<html>a captive"):
        reader(github).read(source(), {})


def test_a_5xx_on_the_tarball_is_retried_and_the_read_completes():
    github = GitHubShapes("acme/frob", FILES)
    github.fail_next("/tarball/", json_error(503))

    result = reader(github).read(source(), {})

    assert github.paths().count(f"/repos/acme/frob/tarball/{github.sha}") == 2
    assert sorted(result.frame()["path"]) == ["docs/api.rst", "docs/index.md"]


def test_check_commit_is_one_conditional_request_304_when_unchanged():
    github = GitHubShapes("acme/frob", FILES)
    check = reader(github)

    first = check.check_commit(source(), None)
    same = check.check_commit(source(), github.sha)
    moved = check.check_commit(source(), "0" * 40)

    assert (first.sha, first.changed) == (github.sha, True)
    assert (same.sha, same.changed) == (None, False)
    assert (moved.sha, moved.changed) == (github.sha, True)
    assert [r.headers.get("if-none-match") for r in github.requests] == [
        None,
        f'"{github.sha}"',
        f'"{"0" * 40}"',
    ]
    assert {r.headers["accept"] for r in github.requests} == {"application/vnd.github.sha"}


def test_check_commit_out_of_rate_limit_says_until_when_without_retrying():
    reset = int(time.time()) + 1800
    github = GitHubShapes("acme/frob", FILES)
    github.fail_next(
        "/commits/", json_error(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)})
    )

    with pytest.raises(RateLimitedError) as raised:
        reader(github).check_commit(source(), github.sha)

    assert abs(raised.value.until.timestamp() - reset) < 1 and len(github.requests) == 1


def test_the_resource_builds_its_reader_from_its_configuration():
    built = GitHubResource(timeout_seconds=5, retry_attempts=2, retry_base_seconds=0.5).reader()

    assert built == GitHubReader(timeout_seconds=5, policy=RetryPolicy(2, 0.5), transport=None)


def test_resolve_commit_is_one_request_for_the_bare_sha():
    github = GitHubShapes("acme/frob", FILES)

    assert reader(github).resolve_commit(source()) == github.sha
    [request] = github.requests
    assert request.headers["accept"] == "application/vnd.github.sha"
