"""Websites: crawl a sitemap and/or links from a start page, politely, re-downloading only what changed.

Polite: robots.txt is honoured (and its Crawl-delay), requests to a host are spaced to
`requests_per_second` with at most `concurrency` in flight, and the page cap bounds every crawl.
Incremental: every URL is fetched with the ETag / Last-Modified the previous crawl saw, and a
304 answer reuses the text converted last time (core/web_cache.py). Every request goes through
the shared retry policy; a page that still fails transiently fails the crawl (so the source's
stored rows stay), while a page that is gone (404, 410) is dropped.
Bounded: bodies are streamed and a page over `limits.max_file_bytes` is dropped once that many
bytes arrived (counted as `too_large`); the crawl stops at `max_pages` (the smaller of the web
source's own and `limits.max_pages`) or once `limits.max_total_bytes` were downloaded.
"""

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import dagster as dg
import httpx

from rag_assets.core.hashing import content_hash
from rag_assets.core.html_text import html_to_page, normalize_url
from rag_assets.core.pages import pages_limit_hit, path_selected
from rag_assets.core.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BASE_SECONDS,
    DEFAULT_MAX_WAIT_SECONDS,
    RetryPolicy,
    TransientResponse,
    is_transient,
)
from rag_assets.core.sitemap import MAX_SITEMAP_BYTES, SitemapError, gunzip_bounded, parse_sitemap
from rag_assets.core.web_cache import CacheEntry, WebCache
from rag_assets.sources import WebSource

DEFAULT_TIMEOUT_SECONDS = 30.0
USER_AGENT = "rag-assets"
MAX_SITEMAPS = 50  # sitemap index fan-out bound
HTML_TYPES = ("text/html", "application/xhtml+xml")
TEXT_TYPES = ("text/markdown", "text/plain")


class WebError(RuntimeError):
    """A website answered something we cannot use; the message names the source."""


@dataclass(frozen=True)
class WebPage:
    """One page of a website, as Markdown, identified by its canonical URL."""

    path: str  # the canonical URL's path (and query)
    url: str  # canonical URL
    text: str
    content_hash: str
    version: str  # the page's validator (ETag, else Last-Modified, else content hash): stable while unchanged


@dataclass
class CrawlStats:
    """What a crawl did, for metadata and for tests."""

    requests: int = 0
    downloaded: int = 0
    not_modified: int = 0
    redirected: int = 0
    robots_disallowed: int = 0
    duplicates: int = 0
    gone: int = 0
    not_text: int = 0
    outside_prefix: int = 0
    capped: int = 0  # URLs left unfetched because of max_pages or max_total_bytes
    too_large: int = 0  # pages over limits.max_file_bytes, dropped unread past the cap
    bytes_read: int = 0  # response bodies downloaded (after content decoding)
    limit_hit: str = ""
    notes: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, int]:
        return {f"web_{k}": v for k, v in vars(self).items() if isinstance(v, int)}


def read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """A streamed body, or None once it is over `limit` bytes (the rest is never downloaded)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class CrawlResult:
    pages: list[WebPage]
    stats: CrawlStats
    fetched_at: datetime  # when this crawl started: the source's time for freshness


@dataclass(frozen=True)
class _Fetched:
    url: str  # as requested
    status: int  # 200, 304, or the error status
    entry: CacheEntry | None  # fresh or reused; None when the URL gave nothing usable


class HostRateLimiter:
    """Spaces requests to each host at least 1/rate seconds apart, across threads."""

    def __init__(self, requests_per_second: float):
        self.interval = 1.0 / requests_per_second
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        host = urlsplit(url).netloc
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next.get(host, now))
            self._next[host] = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


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
            headers=headers, timeout=self.timeout_seconds, follow_redirects=True, transport=transport
        ) as client:
            crawler = _Crawl(source, client, cache, policy, self.user_agent)
            pages = crawler.run()
        cache.save(crawler.seen_entries)
        return CrawlResult(pages, crawler.stats, started)


class _Crawl:
    """One crawl of one source: frontier, robots, politeness, de-duplication. Deterministic order."""

    def __init__(
        self, source: WebSource, client: httpx.Client, cache: WebCache, policy: RetryPolicy, user_agent: str
    ):
        self.source, self.client, self.cache, self.policy, self.user_agent = (
            source,
            client,
            cache,
            policy,
            user_agent,
        )
        self.stats = CrawlStats()
        self.seen_entries: dict[str, CacheEntry] = {}
        self.limiter = HostRateLimiter(source.requests_per_second)
        self.robots = RobotFileParser()
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def run(self) -> list[WebPage]:
        prefix = normalize_url(self.source.prefix)
        self._load_robots(prefix)
        seeds = self._sitemap_pages() + (
            [normalize_url(self.source.start_url)] if self.source.start_url else []
        )
        queue = deque(dict.fromkeys(seeds))
        queued = set(queue)
        pages: dict[str, WebPage] = {}
        fetched, max_pages = 0, min(self.source.max_pages, self.source.limits.max_pages)
        with ThreadPoolExecutor(max_workers=self.source.concurrency) as pool:
            while (
                queue and fetched < max_pages and self.stats.bytes_read <= self.source.limits.max_total_bytes
            ):
                batch = []
                while queue and len(batch) < min(self.source.concurrency, max_pages - fetched):
                    url = queue.popleft()
                    if self._allowed(url, prefix):
                        batch.append(url)
                fetched += len(batch)
                for result in pool.map(self._fetch, batch):
                    for link in self._take(result, prefix, pages, queued):
                        if link not in queued:
                            queued.add(link)
                            queue.append(link)
        self.stats.capped = sum(1 for url in queue if self._in_scope(url, prefix))
        if self.stats.capped:
            self.stats.limit_hit = (
                f"max_total_bytes={self.source.limits.max_total_bytes} reached; {self.stats.capped} "
                "pages not read"
                if self.stats.bytes_read > self.source.limits.max_total_bytes
                else pages_limit_hit(max_pages, self.stats.capped)
            )
            self.stats.notes.append(self.stats.limit_hit)
        return list(pages.values())

    def _take(
        self, result: _Fetched, prefix: str, pages: dict[str, WebPage], queued: set[str]
    ) -> tuple[str, ...]:
        """Record one fetched URL; returns the links to follow."""
        entry = result.entry
        if entry is None or entry.page is None:
            return ()
        final = normalize_url(entry.final_url)
        if not self._in_scope(final, prefix):
            self.stats.outside_prefix += 1
            return ()
        canonical = entry.page["canonical"] or final
        queued.update((final, canonical))  # a redirect target or a named canonical is not fetched again
        follow = tuple(entry.page["links"]) if self.source.start_url else ()
        if canonical in pages or (final != result.url and final in pages):
            self.stats.duplicates += 1
            return follow
        split = urlsplit(canonical)
        path = split.path + (f"?{split.query}" if split.query else "")
        if path_selected(path.lstrip("/") or "index", self.source.include, self.source.exclude):
            text = entry.page["markdown"]
            version = (entry.etag or entry.last_modified or content_hash(text)).strip('"')[:64]
            pages[canonical] = WebPage(path, canonical, text, content_hash(text), version)
        return follow

    def _allowed(self, url: str, prefix: str) -> bool:
        if not self._in_scope(url, prefix):
            self._count("outside_prefix")
            return False
        if not self.robots.can_fetch(self.user_agent, url):
            self._count("robots_disallowed")
            return False
        return True

    def _in_scope(self, url: str, prefix: str) -> bool:
        if not url.startswith(prefix):
            return False
        path = urlsplit(url).path.lstrip("/")
        return not self.source.exclude or path_selected(path or "index", ("**",), self.source.exclude)

    def _fetch(self, url: str) -> _Fetched:
        """GET one page, conditionally; 304 reuses the cached conversion."""
        response, body, previous = self._get(url, self.source.limits.max_file_bytes)
        if response.status_code == 304 and previous is not None:
            return _Fetched(url, 304, previous)
        if response.status_code >= 400:
            self._count("gone")
            with self._lock:
                self.stats.notes.append(f"{url}: HTTP {response.status_code}, dropped")
            return _Fetched(url, response.status_code, None)
        if body is None:
            self._count("too_large")
            with self._lock:
                self.stats.notes.append(
                    f"{url}: over the max_file_bytes={self.source.limits.max_file_bytes} limit, not read"
                )
            return _Fetched(url, response.status_code, None)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        entry = self._entry(url, response, content_type)
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if content_type in HTML_TYPES:
            page = html_to_page(text, str(response.url))
            entry.page = {
                "title": page.title,
                "canonical": page.canonical,
                "markdown": page.markdown,
                "links": list(page.links),
            }
        elif content_type in TEXT_TYPES:
            entry.page = {"title": "", "canonical": None, "markdown": text, "links": []}
        else:
            self._count("not_text")
        self.seen_entries[url] = entry
        return _Fetched(url, 200, entry)

    def _get(self, url: str, limit: int) -> tuple[httpx.Response, bytes | None, CacheEntry | None]:
        """The answer, its body when a 200 (None when over `limit` bytes), and the cached entry."""
        previous = self.cache.entries.get(url)
        headers = previous.validators() if previous else {}

        def attempt() -> tuple[httpx.Response, bytes | None]:
            self.limiter.wait(url)
            self._count("requests")
            with self.client.stream("GET", url, headers=headers) as response:
                if is_transient(response):
                    raise TransientResponse(response)
                body = read_capped(response, limit) if response.status_code == 200 else b""
            with self._lock:
                self.stats.bytes_read += len(body or b"")
            return response, body

        response, body = self.policy.call(attempt, what=f"source {self.source.name!r}: fetching {url}")
        if response.history:
            self._count("redirected")
        if response.status_code == 304 and previous is not None:
            self._count("not_modified")
            self.seen_entries[url] = previous
        elif response.status_code == 200:
            self._count("downloaded")
        return response, body, previous

    def _entry(self, url: str, response: httpx.Response, content_type: str) -> CacheEntry:
        return CacheEntry(
            final_url=str(response.url),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            content_type=content_type,
        )

    def _text(self, url: str) -> str | None:
        """The body of a robots.txt or sitemap (gunzipped), conditionally fetched; None when absent (4xx)."""
        limit = max(MAX_SITEMAP_BYTES, self.source.limits.max_file_bytes)
        response, body, previous = self._get(url, limit)
        if response.status_code == 304 and previous is not None:
            return previous.body
        if response.status_code >= 400:
            return None
        if body is None:
            raise WebError(f"source {self.source.name!r}: {url} is over {limit} bytes")
        data = gunzip_bounded(body)
        entry = self._entry(url, response, response.headers.get("content-type", ""))
        entry.body = data.decode("utf-8", errors="replace")
        self.seen_entries[url] = entry
        return entry.body

    def _load_robots(self, prefix: str) -> None:
        split = urlsplit(prefix)
        robots_url = f"{split.scheme}://{split.netloc}/robots.txt"
        body = self._text(robots_url)
        self.robots.parse((body or "").splitlines())  # none (4xx) means everything is allowed
        delay = self.robots.crawl_delay(self.user_agent)
        if delay:
            self.limiter.interval = max(self.limiter.interval, float(delay))

    def _sitemap_pages(self) -> list[str]:
        if not self.source.sitemap_url:
            return []
        pending, pages, visited = deque([self.source.sitemap_url]), [], 0
        while pending and visited < MAX_SITEMAPS:
            url = pending.popleft()
            visited += 1
            body = self._text(url)
            if body is None:
                raise WebError(f"source {self.source.name!r}: sitemap {url} is missing")
            try:
                sitemap = parse_sitemap(body.encode("utf-8"))
            except SitemapError as error:
                raise WebError(f"source {self.source.name!r}: {url}: {error}") from None
            pending.extend(urljoin(url, child) for child in sitemap.sitemaps)
            pages.extend(normalize_url(urljoin(url, page)) for page in sitemap.pages)
        return list(dict.fromkeys(pages))
