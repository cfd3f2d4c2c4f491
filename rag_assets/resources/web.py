"""Websites as a Dagster resource: its configuration (cache folder, timeout, user agent, retries)
builds the web reader (rag_assets/resources/readers/web.py) that raw_pages uses."""

from pathlib import Path

import dagster as dg
import httpx

from rag_assets.resources.readers.crawl import DEFAULT_TIMEOUT_SECONDS, USER_AGENT
from rag_assets.resources.readers.web import WebReader, cache_path
from rag_assets.resources.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BASE_SECONDS,
    DEFAULT_MAX_WAIT_SECONDS,
    RetryPolicy,
)


class WebResource(dg.ConfigurableResource):
    """Fetches website sources; remembers validators per source under `cache_dir`."""

    cache_dir: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    user_agent: str = USER_AGENT
    retry_attempts: int = DEFAULT_ATTEMPTS
    retry_base_seconds: float = DEFAULT_BASE_SECONDS
    retry_max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def reader(self, *, transport: httpx.BaseTransport | None = None) -> WebReader:
        policy = RetryPolicy(self.retry_attempts, self.retry_base_seconds, self.retry_max_wait_seconds)
        return WebReader(
            cache_dir=self.cache_dir,
            timeout_seconds=self.timeout_seconds,
            user_agent=self.user_agent,
            policy=policy,
            transport=transport,
        )

    def cache_path(self, source_name: str) -> Path:
        return cache_path(self.cache_dir, source_name)

    def forget(self, source_name: str) -> bool:
        """Drop a source's cache (its source was removed); whether there was one."""
        path = self.cache_path(source_name)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed
