"""GitHub sources: resolve a ref to a commit with one call, then stream one tarball pinned to that
commit; skip the download when that commit and the source's definition are what the last run read."""

import io
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from rag_assets.core.pages import Page, PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.sections import detect_format
from rag_assets.core.source_store import KnownPage
from rag_assets.core.tarball import iter_tar_pages
from rag_assets.resources.readers.protocol import ReadResult, counted, definition_hash, read_result
from rag_assets.resources.retry import (
    RateLimitedError,
    RetryPolicy,
    TransientResponse,
    is_rate_limited,
    is_transient,
    rate_limit_reset,
)
from rag_assets.sources import GitHubSource

DEFAULT_TIMEOUT_SECONDS = 60.0
API_VERSION = "2022-11-28"
USER_AGENT = "rag-assets"
SHA_MEDIA_TYPE = "application/vnd.github.sha"


class GitHubError(RuntimeError):
    """GitHub answered something we cannot use; the message never contains the token."""


@dataclass(frozen=True)
class CommitCheck:
    """The answer to "has this ref moved since `known_sha`?"."""

    sha: str | None  # None when unchanged (304)
    changed: bool
    remaining: int | None = None  # x-ratelimit-remaining after this request, when the server said
    reset_at: datetime | None = None  # when the rate-limit window refills (UTC)


@dataclass(frozen=True)
class CommitInfo:
    """A commit a ref resolved to, and when it was committed (the source's time for freshness)."""

    sha: str
    committed_at: datetime


@dataclass(frozen=True)
class GitHubReader:
    """GitHub's REST API (or a server that speaks it). Tokens come from the env var a source names.

    Each call opens its own client; `transport` replaces the network (httpx.MockTransport in tests).
    Every request of a read goes through the retry policy (resources/retry.py); the sensor's commit check
    makes exactly one request, because the next tick is its retry.
    """

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    transport: httpx.BaseTransport | None = None

    def read(
        self, source: GitHubSource, known: Mapping[str, KnownPage], progress: Reporter | None = None
    ) -> ReadResult:
        """The selected files at the commit source.ref points to now; no pages (None) when that
        commit and the source's definition are what the store holds (nothing is downloaded)."""
        stats = PageStats()
        with self._client(source) as client:
            info = self._commit_info(source, client)
            version = f"{definition_hash(source)}:{info.sha}"
            if known and all(page.version == version for page in known.values()):
                if progress:
                    progress.advance(len(known), reused=True)
                return ReadResult(None, stats, version, info.committed_at)
            pages = list(counted(self._tarball_pages(source, info.sha, client, stats), progress))
        rows = [
            {
                "source": source.name,
                "path": p.path,
                "url": p.url,
                "text": p.text,
                "content_hash": p.content_hash,
                "commit": info.sha,
                "format": detect_format(p.path, p.text, source.format),
                "version": version,
            }
            for p in pages
        ]
        return read_result(rows, stats, version, info.committed_at)

    def _client(self, source: GitHubSource) -> httpx.Client:
        """A client for the source's API, with GitHub's headers and the source's token, if set."""
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": USER_AGENT,
        }
        token = os.environ.get(source.token_env)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=source.api_url,
            headers=headers,
            timeout=self.timeout_seconds,
            follow_redirects=True,
            transport=self.transport,
        )

    def resolve_commit(self, source: GitHubSource) -> str:
        """The 40-hex commit SHA that source.ref points to now (one request, under the retry policy)."""
        owner, name = source.owner_and_name
        what = f"source {source.name!r}: resolving {source.repo}@{source.ref}"
        with self._client(source) as client:
            response = self.policy.send(
                lambda: client.get(
                    f"/repos/{owner}/{name}/commits/{source.ref}", headers={"Accept": SHA_MEDIA_TYPE}
                ),
                what=what,
            )
        _raise_for_status(response, what)
        return _checked_sha(response.text.strip(), what)

    def _commit_info(self, source: GitHubSource, client: httpx.Client) -> CommitInfo:
        """The commit source.ref points to now and its committer date (one request, JSON media type)."""
        owner, name = source.owner_and_name
        what = f"source {source.name!r}: resolving {source.repo}@{source.ref}"
        response = self.policy.send(
            lambda: client.get(f"/repos/{owner}/{name}/commits/{source.ref}"), what=what
        )
        _raise_for_status(response, what)
        try:
            body = response.json()
            sha, date = body["sha"], body["commit"]["committer"]["date"]
            committed_at = datetime.fromisoformat(date.replace("Z", "+00:00")).astimezone(UTC)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise GitHubError(f"{what}: expected a commit object, got {response.text[:60]!r}") from None
        return CommitInfo(_checked_sha(sha, what), committed_at)

    def check_commit(self, source: GitHubSource, known_sha: str | None) -> CommitCheck:
        """Has source.ref moved from `known_sha`? One conditional request: 304 means no (and is free with
        a token).

        Raises RateLimitedError (with `until`) when GitHub refuses for the rate limit, GitHubError otherwise.
        """
        owner, name = source.owner_and_name
        what = f"source {source.name!r}: checking {source.repo}@{source.ref}"
        headers = {"Accept": SHA_MEDIA_TYPE}
        if known_sha:
            headers["If-None-Match"] = f'"{known_sha}"'
        try:
            with self._client(source) as client:
                response = client.get(f"/repos/{owner}/{name}/commits/{source.ref}", headers=headers)
        except httpx.HTTPError as error:
            raise GitHubError(f"{what}: {type(error).__name__}: {error}") from None
        remaining, reset_at = _rate_budget(response)
        if is_rate_limited(response):
            until = rate_limit_reset(response) or datetime.now(UTC) + timedelta(seconds=60)
            raise RateLimitedError(
                f"{what}: rate limited (HTTP {response.status_code}) until "
                f"{until.isoformat(timespec='seconds')}",
                last=f"HTTP {response.status_code}",
                until=until,
            )
        if response.status_code == 304:
            return CommitCheck(sha=None, changed=False, remaining=remaining, reset_at=reset_at)
        _raise_for_status(response, what)
        sha = _checked_sha(response.text.strip(), what)
        return CommitCheck(sha=sha, changed=sha != known_sha, remaining=remaining, reset_at=reset_at)

    def _tarball_pages(
        self, source: GitHubSource, sha: str, client: httpx.Client, stats: PageStats
    ) -> list[Page]:
        """The selected files of the repository at `sha`, from one tarball.

        A download that fails part-way (connection reset, 5xx, rate limit) is started again from
        the beginning, under the retry policy; pages are handed out only once one download is whole.
        The source's limits bound the reading (core/tarball.py); a limit reached is in `stats.limit_hit`.
        """
        limits = source.limits.read_limits()
        owner, name = source.owner_and_name
        what = f"source {source.name!r}: downloading the tarball of {source.repo}@{sha[:12]}"
        deadline = time.monotonic() + source.limits.download_deadline_seconds
        # A stall (no byte for download_stall_seconds) is a read timeout: transient, so retried.
        timeout = httpx.Timeout(self.timeout_seconds, read=source.limits.download_stall_seconds)

        def attempt() -> tuple[list[Page], PageStats]:
            attempt_stats = PageStats()
            blocks = _until(iter([b""]), deadline, what, source.limits.download_deadline_seconds)
            next(blocks)  # a retry that would start past the deadline is not made
            with client.stream("GET", f"/repos/{owner}/{name}/tarball/{sha}", timeout=timeout) as response:
                if is_transient(response):  # the status and headers say enough; the body is not read
                    raise TransientResponse(response)
                _raise_for_status(response, what)
                blocks = _until(
                    response.iter_bytes(), deadline, what, source.limits.download_deadline_seconds
                )
                stream = io.BufferedReader(_ResponseStream(blocks), buffer_size=1 << 20)
                pages = [
                    Page(page.path, page.text, page.content_hash, source.page_url(sha, page.path))
                    for page in iter_tar_pages(
                        stream,
                        include=source.include,
                        exclude=source.exclude,
                        stats=attempt_stats,
                        limits=limits,
                    )
                ]
            return pages, attempt_stats

        pages, got = self.policy.call(attempt, what=what)
        stats.add(got)
        return pages


def _until(blocks: Iterator[bytes], deadline: float, what: str, seconds: float) -> Iterator[bytes]:
    """The blocks, until the download's overall deadline (monotonic) has passed: then GitHubError,
    which is not retried (a download that took this long would take as long again)."""
    for block in blocks:
        if time.monotonic() > deadline:
            raise GitHubError(f"{what}: not finished within download_deadline_seconds={seconds:g}")
        yield block


def _checked_sha(sha: str, what: str) -> str:
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        raise GitHubError(f"{what}: expected a commit SHA, got {sha[:60]!r}")
    return sha


def _rate_budget(response: httpx.Response) -> tuple[int | None, datetime | None]:
    remaining, reset = (
        response.headers.get("x-ratelimit-remaining"),
        response.headers.get("x-ratelimit-reset"),
    )
    return (
        int(remaining) if remaining and remaining.isdigit() else None,
        datetime.fromtimestamp(int(reset), UTC) if reset and reset.isdigit() else None,
    )


def _raise_for_status(response: httpx.Response, doing: str) -> None:
    if response.status_code >= 400:  # a streamed error body is left unread (closing the stream drops it)
        raise GitHubError(
            f"{doing}: HTTP {response.status_code} from {response.request.url.copy_with(query=None)}"
        )


class _ResponseStream(io.RawIOBase):
    """A file-like view of an iterator of byte blocks, so tarfile can read a response as it arrives."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            self._pending = next(self._blocks, b"")
            if not self._pending:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
