"""Websites as a Dagster resource: crawls a web source (rag_assets/resources/crawl.py) and keeps the
validators of each crawl under `cache_dir`, one file per source, for the next one."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import httpx

from rag_assets.core.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BASE_SECONDS,
    DEFAULT_MAX_WAIT_SECONDS,
    RetryPolicy,
)
from rag_assets.core.web_cache import WebCache
from rag_assets.resources.crawl import (
    DEFAULT_TIMEOUT_SECONDS,
    USER_AGENT,
    Crawl,
    CrawlResult,
    WebError,
    WebPage,
    read_capped,
)
from rag_assets.sources import WebSource

__all__ = ["CrawlResult", "WebError", "WebPage", "WebResource", "read_capped"]


class WebResource(dg.ConfigurableResource):
    """Fetches website sources; remembers validators per source under `cache_dir`."""

    cache_dir: str
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    user_agent: str = USER_AGENT
    retry_attempts: int = DEFAULT_ATTEMPTS
    retry_base_seconds: float = DEFAULT_BASE_SECONDS
    retry_max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS

    def cache_path(self, source_name: str) -> Path:
        return Path(self.cache_dir) / f"{source_name}.json"

    def forget(self, source_name: str) -> bool:
        """Drop a source's cache (its source was removed); whether there was one."""
        path = self.cache_path(source_name)
        existed = path.exists()
        path.unlink(missing_ok=True)
        return existed

    def crawl(self, source: WebSource, *, transport: httpx.BaseTransport | None = None) -> CrawlResult:
        started = datetime.now(UTC)
        cache = WebCache.load(self.cache_path(source.name))
        policy = RetryPolicy(self.retry_attempts, self.retry_base_seconds, self.retry_max_wait_seconds)
        headers = {"User-Agent": self.user_agent}
        with httpx.Client(
            headers=headers, timeout=self.timeout_seconds, follow_redirects=False, transport=transport
        ) as client:  # redirects are followed hop by hop, each hop checked (rag_assets/resources/crawl.py)
            crawler = Crawl(source, client, cache, policy, self.user_agent, self.timeout_seconds)
            pages = crawler.run()
        cache.save(crawler.seen_entries)
        return CrawlResult(pages, crawler.stats, started)
