"""Web sources: one crawl of a website (crawl.py), re-downloading only what changed since the last
one, whose validators are kept under `cache_dir`, one file per source."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import KnownPage
from rag_assets.core.web_cache import WebCache
from rag_assets.resources.readers.crawl import DEFAULT_TIMEOUT_SECONDS, USER_AGENT, Crawl, CrawlResult
from rag_assets.resources.readers.protocol import ReadResult, definition_hash, read_result
from rag_assets.resources.retry import RetryPolicy
from rag_assets.sources import WebSource


def cache_path(cache_dir: str | Path, source_name: str) -> Path:
    """Where a web source's validators are kept between crawls."""
    return Path(cache_dir) / f"{source_name}.json"


@dataclass(frozen=True)
class WebReader:
    """Crawls website sources; `transport` replaces the network (a mock or a local server) in tests."""

    cache_dir: str | Path
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    user_agent: str = USER_AGENT
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    transport: httpx.BaseTransport | None = None

    def read(
        self, source: WebSource, known: Mapping[str, KnownPage], progress: Reporter | None = None
    ) -> ReadResult:
        """Every page of the website as Markdown; a page's `commit` is its validator."""
        result = self.crawl(source)
        version = f"{definition_hash(source)}:web"
        rows = [
            {
                "source": source.name,
                "path": p.path,
                "url": p.url,
                "text": p.text,
                "content_hash": p.content_hash,
                "commit": p.version,
                "format": "markdown",
                "version": version,
            }
            for p in result.pages
        ]
        if progress:
            progress.advance(len(rows))
        return read_result(rows, result.stats, version, result.fetched_at)

    def crawl(self, source: WebSource) -> CrawlResult:
        """One crawl of the website, with the validators the last one saw; saves this one's."""
        started = datetime.now(UTC)
        cache = WebCache.load(cache_path(self.cache_dir, source.name))
        with httpx.Client(
            headers={"User-Agent": self.user_agent},
            timeout=self.timeout_seconds,
            follow_redirects=False,  # followed hop by hop, each hop checked (crawl.py)
            transport=self.transport,
        ) as client:
            crawler = Crawl(source, client, cache, self.policy, self.user_agent, self.timeout_seconds)
            pages = crawler.run()
        cache.save(crawler.seen_entries)
        return CrawlResult(pages, crawler.stats, started)
