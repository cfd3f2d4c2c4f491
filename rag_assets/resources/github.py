"""GitHub as a Dagster resource: its configuration (timeout, retries) builds the GitHub reader
(rag_assets/resources/readers/github.py) that raw_pages and the commit sensor use."""

import dagster as dg
import httpx

from rag_assets.resources.readers.github import DEFAULT_TIMEOUT_SECONDS, GitHubReader
from rag_assets.resources.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BASE_SECONDS,
    DEFAULT_MAX_WAIT_SECONDS,
    RetryPolicy,
)


class GitHubResource(dg.ConfigurableResource):
    """GitHub's REST API (or a server that speaks it). Tokens come from the env var a source names."""

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    retry_attempts: int = DEFAULT_ATTEMPTS
    retry_base_seconds: float = DEFAULT_BASE_SECONDS
    retry_max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def reader(self, *, transport: httpx.BaseTransport | None = None) -> GitHubReader:
        policy = RetryPolicy(self.retry_attempts, self.retry_base_seconds, self.retry_max_wait_seconds)
        return GitHubReader(timeout_seconds=self.timeout_seconds, policy=policy, transport=transport)
