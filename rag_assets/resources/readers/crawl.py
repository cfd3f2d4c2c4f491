"""One crawl of a website: a sitemap and/or links from a start page, politely, re-downloading only
what changed.

Polite: robots.txt is honoured (and its Crawl-delay), requests to a host are spaced to
`requests_per_second` with at most `concurrency` in flight, and the page cap bounds every crawl.
Incremental: every URL is fetched with the ETag / Last-Modified the previous crawl saw, and a
304 answer reuses the text converted last time (core/web_cache.py). Every request goes through
the shared retry policy; a page that still fails transiently fails the crawl (so the source's
stored rows stay), while a page that is gone (404, 410) is dropped.
In scope: redirects are followed hop by hop and every request (pages, hops, robots.txt, sitemaps)
must go to the source's own origins (scheme, host and port: core/web_scope.py), pages under
`url_prefix`; what is not is skipped and counted, never requested, never cached. Timed: each page
has a total deadline and the crawl an overall one (`limits`); one page's failure (a redirect loop,
an unknown charset, markup too deep to parse) is counted and the crawl goes on.
Bounded: bodies are streamed and a page over `limits.max_file_bytes` is dropped once that many
bytes arrived (counted as `too_large_skipped`); the crawl stops at `max_pages` (the smaller of the web
source's own and `limits.max_pages`) or once `limits.max_total_bytes` were downloaded.
"""

import contextlib
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit
from urllib.robotparser import RobotFileParser

import httpx

from rag_assets.core.hashing import content_hash
from rag_assets.core.html_text import html_to_page, html_to_plain_page, normalize_url
from rag_assets.core.pages import PageStats, pages_limit_hit, path_selected
from rag_assets.core.sitemap import MAX_SITEMAP_BYTES, SitemapError, gunzip_bounded, parse_sitemap
from rag_assets.core.web_cache import CacheEntry, WebCache
from rag_assets.core.web_scope import Scope
from rag_assets.resources.retry import RetryPolicy, TransientResponse, is_transient
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


def read_capped(response: httpx.Response, limit: int, deadline: "Deadline | None" = None) -> bytes | None:
    """A streamed body, or None once it is over `limit` bytes (the rest is never downloaded).
    Past `deadline` the read stops with DeadlineExceeded."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        if deadline is not None and deadline.expired:
            raise DeadlineExceeded()
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class DeadlineExceeded(Exception):
    """A page did not arrive whole within its deadline."""


class Deadline:
    """A point in time; `watch(response)` cuts the response's connection when it passes, so a server
    sending one byte every few seconds cannot hold a read open past it."""

    def __init__(self, seconds: float, *, started: bool = True):
        self.seconds = seconds
        self.at = time.monotonic() + seconds if started else None

    def start(self) -> None:
        """Start counting now, if not started yet (a page's clock starts at its first request, not
        while it waits for its turn under the host's request rate)."""
        if self.at is None:
            self.at = time.monotonic() + self.seconds

    @property
    def remaining(self) -> float:
        return self.seconds if self.at is None else max(self.at - time.monotonic(), 0.0)

    @property
    def expired(self) -> bool:
        return self.at is not None and time.monotonic() >= self.at

    def watch(self, response: httpx.Response) -> threading.Timer | None:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return None
        timer = threading.Timer(self.remaining, _cut, (sock,))
        timer.daemon = True
        timer.start()
        return timer


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read, which then fails


@dataclass(frozen=True)
class CrawlResult:
    pages: list[WebPage]
    stats: PageStats  # crawled: its crawl counters are set
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


MAX_REDIRECTS = 10


class _Skipped(Exception):
    """One URL left out: `counter` is the PageStats field that counts it, the message says why."""

    def __init__(self, counter: str, message: str):
        super().__init__(message)
        self.counter = counter


@dataclass(frozen=True)
class _Answer:
    response: httpx.Response
    body: bytes | None  # the body of a 200 (None when over the size cap); b"" otherwise
    previous: CacheEntry | None
    final_url: str  # after the redirects


class Crawl:
    """One crawl of one source: frontier, robots, politeness, scope, de-duplication. Deterministic order."""

    def __init__(
        self,
        source: WebSource,
        client: httpx.Client,
        cache: WebCache,
        policy: RetryPolicy,
        user_agent: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ):
        self.source, self.client, self.cache, self.policy = source, client, cache, policy
        self.user_agent, self.timeout_seconds = user_agent, timeout_seconds
        self.limits = source.limits
        self.stats = PageStats(crawled=True)
        self.seen_entries: dict[str, CacheEntry] = {}
        self.limiter = HostRateLimiter(source.requests_per_second)
        self.robots = RobotFileParser()
        self.scope = Scope([source.prefix, source.start_url or "", source.sitemap_url or ""])
        self.deadline = Deadline(self.limits.crawl_deadline_seconds)
        self.prefix = normalize_url(source.prefix)
        self._lock = threading.Lock()

    def _count(self, name: str, note: str = "") -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
            if note:
                self.stats.notes.append(note)

    def run(self) -> list[WebPage]:
        self._load_robots()
        seeds = self._sitemap_pages() + (
            [normalize_url(self.source.start_url)] if self.source.start_url else []
        )
        queue = deque(dict.fromkeys(seeds))
        queued = set(queue)
        pages: dict[str, tuple[WebPage, str | None]] = {}
        fetched, max_pages = 0, min(self.source.max_pages, self.limits.max_pages)
        with ThreadPoolExecutor(max_workers=self.source.concurrency) as pool:
            while (
                queue
                and fetched < max_pages
                and self.stats.bytes_read <= self.limits.max_total_bytes
                and not self.deadline.expired
            ):
                batch = []
                while queue and len(batch) < min(self.source.concurrency, max_pages - fetched):
                    url = queue.popleft()
                    if self._allowed(url):
                        batch.append(url)
                fetched += len(batch)
                for result in pool.map(self._fetch, batch):
                    for link in self._take(result, pages, queued):
                        if link not in queued:
                            queued.add(link)
                            queue.append(link)
        self._record_cap(queue, max_pages)
        kept = self._without_canonical_duplicates(pages)
        self.stats.pages = len(kept)
        self.stats.matched = len(kept) + self.stats.too_large_skipped
        return kept

    def _record_cap(self, queue: deque, max_pages: int) -> None:
        self.stats.capped = sum(1 for url in queue if self._in_scope(url))
        if not self.stats.capped:
            return
        if self.stats.bytes_read > self.limits.max_total_bytes:
            self.stats.limit_hit = (
                f"max_total_bytes={self.limits.max_total_bytes} reached; {self.stats.capped} pages not read"
            )
        elif self.deadline.expired:
            self.stats.limit_hit = (
                f"crawl_deadline_seconds={self.limits.crawl_deadline_seconds:g} reached; "
                f"{self.stats.capped} pages not read"
            )
        else:
            self.stats.limit_hit = pages_limit_hit(max_pages, self.stats.capped)
        self.stats.notes.append(self.stats.limit_hit)

    def _take(
        self, result: _Fetched, pages: dict[str, tuple[WebPage, str | None]], queued: set[str]
    ) -> tuple[str, ...]:
        """Record one fetched URL under its own (final) URL; returns the links to follow."""
        entry = result.entry
        if entry is None or entry.page is None:
            return ()
        final = normalize_url(entry.final_url)
        if not self._in_scope(final):
            self.stats.outside_prefix += 1
            return ()
        queued.add(final)  # a redirect target is not fetched again
        follow = tuple(entry.page["links"]) if self.source.start_url else ()
        canonical = entry.page["canonical"]
        if canonical and not self._in_scope(canonical):
            self._count(
                "canonical_ignored", f"{final}: canonical {canonical} is outside {self.prefix}, ignored"
            )
            canonical = None
        if canonical and canonical != final:
            follow += (canonical,)  # fetched in its own right; its own text is what it stores
        if final in pages:
            self.stats.duplicates += 1
            return follow
        split = urlsplit(final)
        path = split.path + (f"?{split.query}" if split.query else "")
        if path_selected(path.lstrip("/") or "index", self.source.include, self.source.exclude):
            text = entry.page["markdown"]
            version = (entry.etag or entry.last_modified or content_hash(text)).strip('"')[:64]
            pages[final] = (WebPage(path, final, text, content_hash(text), version), canonical)
        return follow

    def _without_canonical_duplicates(self, pages: dict[str, tuple[WebPage, str | None]]) -> list[WebPage]:
        """Every page under its own URL, except one whose canonical URL is another stored page that
        names itself (or nothing) as canonical: a duplicate. A canonical link never moves one page's
        text to another page's URL, and two pages naming each other both stay."""
        kept = []
        for final, (page, canonical) in pages.items():
            target = pages.get(canonical) if canonical and canonical != final else None
            if target is not None and target[1] in (None, canonical):
                self.stats.duplicates += 1
                continue
            kept.append(page)
        return kept

    def _allowed(self, url: str) -> bool:
        if not self._in_scope(url):
            self._count("outside_prefix")
            return False
        if not self.robots.can_fetch(self.user_agent, url):
            self._count("robots_disallowed")
            return False
        return True

    def _in_scope(self, url: str) -> bool:
        if not url.startswith(self.prefix):
            return False
        path = urlsplit(url).path.lstrip("/")
        return not self.source.exclude or path_selected(path or "index", ("**",), self.source.exclude)

    def _fetch(self, url: str) -> _Fetched:
        """GET one page, conditionally; 304 reuses the cached conversion. Its own failures skip it."""
        try:
            return self._fetch_page(url)
        except _Skipped as skipped:
            self._count(skipped.counter, f"{url}: {skipped}, skipped")
        except (
            httpx.HTTPError,
            httpx.InvalidURL,
            ValueError,
        ) as error:  # not transient: the page is at fault
            self._count("fetch_failed", f"{url}: {type(error).__name__}: {error}, skipped")
        return _Fetched(url, 0, None)

    def _fetch_page(self, url: str) -> _Fetched:
        answer = self._get(url, self.limits.max_file_bytes, page=True)
        response, body, previous = answer.response, answer.body, answer.previous
        if response.status_code == 304 and previous is not None:
            return _Fetched(url, 304, previous)
        if response.status_code != 200:
            self._count("gone", f"{url}: HTTP {response.status_code}, dropped")
            return _Fetched(url, response.status_code, None)
        if body is None:
            self._count(
                "too_large_skipped",
                f"{url}: over the max_file_bytes={self.limits.max_file_bytes} limit, not read",
            )
            return _Fetched(url, response.status_code, None)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        entry = self._entry(answer.final_url, response, content_type)
        text = self._decode(url, body, response)
        if content_type in HTML_TYPES:
            entry.page = self._parse(url, text, answer.final_url)
        elif content_type in TEXT_TYPES:
            entry.page = {"title": "", "canonical": None, "markdown": text, "links": []}
        else:
            self._count("not_text")
        self.seen_entries[url] = entry
        return _Fetched(url, 200, entry)

    def _decode(self, url: str, body: bytes, response: httpx.Response) -> str:
        try:
            return body.decode(response.encoding or "utf-8", errors="replace")
        except LookupError as error:  # e.g. charset=base64: a codec Python knows, but not a text encoding
            self._count("bad_charset", f"{url}: charset {response.encoding!r} ({error}), read as UTF-8")
            return body.decode("utf-8", errors="replace")

    def _parse(self, url: str, text: str, base_url: str) -> dict:
        try:
            page = html_to_page(text, base_url)
        except RecursionError:  # nested too deep for the converter: keep the words, drop the markup
            self._count("parsed_as_text", f"{url}: HTML nested too deeply to convert, kept as plain text")
            page = html_to_plain_page(text)
        return {
            "title": page.title,
            "canonical": page.canonical,
            "markdown": page.markdown,
            "links": list(page.links),
        }

    def _get(self, url: str, limit: int, *, page: bool) -> _Answer:
        """The answer after following redirects hop by hop, every hop checked before it is requested;
        its body when a 200 (None when over `limit` bytes); the cached entry. Raises _Skipped."""
        previous = self.cache.entries.get(url)
        headers = previous.validators() if previous else {}
        deadline = Deadline(min(self.limits.page_deadline_seconds, self.deadline.remaining), started=False)
        chain = [url]
        while True:
            current = chain[-1]
            refusal = self.scope.refusal(current)
            if not refusal and page and not self._in_scope(current):
                refusal = f"{current} is outside {self.prefix}"
            if refusal:
                raise _Skipped("outside_scope", refusal)
            response, body = self._request(current, headers, limit, deadline)
            location = response.headers.get("location")
            if not (response.is_redirect and location):
                break
            target = normalize_url(urljoin(current, location))
            if target in chain or len(chain) > MAX_REDIRECTS:
                raise _Skipped("redirect_loop", f"redirects {' -> '.join(chain)} -> {target} go round or on")
            chain.append(target)
        if len(chain) > 1:
            self._count("redirected")
        if response.status_code == 304 and previous is not None:
            self._count("not_modified")
            self.seen_entries[url] = previous
        elif response.status_code == 200:
            self._count("downloaded")
        return _Answer(response, body, previous, chain[-1])

    def _request(
        self, url: str, headers: dict[str, str], limit: int, deadline: Deadline
    ) -> tuple[httpx.Response, bytes | None]:
        """One request (no redirect followed), retried while transient, all within `deadline`."""

        def attempt() -> tuple[httpx.Response, bytes | None]:
            self.limiter.wait(url)
            deadline.start()
            if deadline.expired or self.deadline.expired:
                raise _Skipped(
                    "deadline_exceeded", f"not whole within {self.limits.page_deadline_seconds:g} s"
                )
            self._count("requests")
            timeout = httpx.Timeout(min(self.timeout_seconds, max(deadline.remaining, 0.001)))
            try:
                with self.client.stream("GET", url, headers=headers, timeout=timeout) as response:
                    if is_transient(response):
                        raise TransientResponse(response)
                    watchdog = deadline.watch(response) if response.status_code == 200 else None
                    try:
                        body = read_capped(response, limit, deadline) if response.status_code == 200 else b""
                    finally:
                        if watchdog is not None:
                            watchdog.cancel()
            except (httpx.HTTPError, DeadlineExceeded):
                if deadline.expired:
                    raise _Skipped(
                        "deadline_exceeded", f"not whole within {self.limits.page_deadline_seconds:g} s"
                    ) from None
                raise
            with self._lock:
                self.stats.bytes_read += len(body or b"")
            return response, body

        return self.policy.call(attempt, what=f"source {self.source.name!r}: fetching {url}")

    def _entry(self, final_url: str, response: httpx.Response, content_type: str) -> CacheEntry:
        return CacheEntry(
            final_url=final_url,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            content_type=content_type,
        )

    def _text(self, url: str) -> str | None:
        """The body of a robots.txt or sitemap (gunzipped), conditionally fetched; None when absent (4xx).
        Raises _Skipped when the URL (or a redirect hop) is out of scope or loops."""
        limit = max(MAX_SITEMAP_BYTES, self.limits.max_file_bytes)
        answer = self._get(url, limit, page=False)
        response, body, previous = answer.response, answer.body, answer.previous
        if response.status_code == 304 and previous is not None:
            return previous.body
        if response.status_code >= 300:
            return None
        if body is None:
            raise WebError(f"source {self.source.name!r}: {url} is over {limit} bytes")
        data = gunzip_bounded(body)
        entry = self._entry(answer.final_url, response, response.headers.get("content-type", ""))
        entry.body = data.decode("utf-8", errors="replace")
        self.seen_entries[url] = entry
        return entry.body

    def _load_robots(self) -> None:
        split = urlsplit(self.prefix)
        robots_url = f"{split.scheme}://{split.netloc}/robots.txt"
        try:
            body = self._text(robots_url)
        except _Skipped as skipped:
            self._count(skipped.counter, f"{robots_url}: {skipped}; crawled as if there were none")
            body = None
        self.robots.parse((body or "").splitlines())  # none (4xx) means everything is allowed
        delay = self.robots.crawl_delay(self.user_agent)
        if delay:
            cap = self.limits.max_crawl_delay_seconds
            if float(delay) > cap:
                self.stats.crawl_delay_capped = 1
                self.stats.notes.append(
                    f"{robots_url}: Crawl-delay {delay} s capped to max_crawl_delay_seconds={cap:g}"
                )
            self.limiter.interval = max(self.limiter.interval, min(float(delay), cap))

    def _sitemap_pages(self) -> list[str]:
        if not self.source.sitemap_url:
            return []
        pending, pages, visited = deque([self.source.sitemap_url]), [], 0
        while pending and visited < MAX_SITEMAPS:
            url = pending.popleft()
            visited += 1
            try:
                body = self._text(url)
            except _Skipped as skipped:
                if url == self.source.sitemap_url:
                    raise WebError(f"source {self.source.name!r}: sitemap {url}: {skipped}") from None
                self._count(skipped.counter, f"{url}: {skipped}, skipped")
                continue
            if body is None:
                raise WebError(f"source {self.source.name!r}: sitemap {url} is missing")
            try:
                sitemap = parse_sitemap(body.encode("utf-8"))
            except SitemapError as error:
                raise WebError(f"source {self.source.name!r}: {url}: {error}") from None
            pending.extend(urljoin(url, child) for child in sitemap.sitemaps)
            pages.extend(normalize_url(urljoin(url, page)) for page in sitemap.pages)
        return list(dict.fromkeys(pages))
