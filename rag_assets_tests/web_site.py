"""A small website on 127.0.0.1 for the web tests: pages, redirects, robots.txt, a sitemap, ETags.

It answers like an ordinary static web server: `ETag` and `Last-Modified` on every page, `304 Not
Modified` for a matching `If-None-Match` (or `If-Modified-Since` when no ETag is sent), `301` for
redirects, `404` for anything else. Faults can be queued per path (`fail_next`), and every request
is recorded with the status it got, so tests can count what a crawler downloaded.
"""

import contextlib
import hashlib
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from rag_assets.testing.loopback import LoopbackHandler, LoopbackServer

HTML = "text/html; charset=utf-8"

Fault = int | tuple[int, dict[str, str]]


@dataclass(frozen=True)
class RecordedRequest:
    path: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    status: int


@dataclass
class _Page:
    body: bytes
    content_type: str
    modified: float  # epoch seconds; changes whenever the body does

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha1(self.body).hexdigest()[:16] + '"'


class FakeSite(LoopbackServer):
    """A website whose pages, redirects, robots.txt and sitemap a test sets up and changes."""

    def __init__(self) -> None:
        super().__init__()
        self._pages: dict[str, _Page] = {}
        self._redirects: dict[str, str] = {}
        self._faults: list[tuple[str, deque[Fault]]] = []
        self._requests: list[RecordedRequest] = []
        self.robots_txt: str | None = None
        self._trickles: dict[str, float] = {}
        self.sitemap_paths: list[str] | None = None  # None: no /sitemap.xml

    def set_page(self, path: str, body: str | bytes, content_type: str = HTML) -> None:
        """Serve `body` at `path`; a changed body gets a new ETag and Last-Modified."""
        data = body.encode() if isinstance(body, str) else body
        with self._lock:
            old = self._pages.get(path)
            if old is None or old.body != data or old.content_type != content_type:
                modified = max(time.time(), (old.modified + 1) if old else 0)
                self._pages[path] = _Page(data, content_type, modified)

    def remove_page(self, path: str) -> None:
        with self._lock:
            self._pages.pop(path, None)

    def redirect(self, path: str, location: str) -> None:
        with self._lock:
            self._redirects[path] = location

    def trickle(self, path: str, pause_seconds: float) -> None:
        """Send the page at `path` one byte at a time, `pause_seconds` apart (a slow-loris server)."""
        with self._lock:
            self._trickles[path] = pause_seconds

    def fail_next(self, path_contains: str, statuses: list[Fault]) -> None:
        """The next matching requests get these answers (status, or (status, headers)), in order."""
        with self._lock:
            self._faults.append((path_contains, deque(statuses)))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def count(self, *, status: int | None = None, path: str | None = None) -> int:
        return sum(
            (status is None or r.status == status) and (path is None or r.path == path) for r in self.requests
        )

    def handle_get(self, handler: LoopbackHandler) -> None:
        status, headers, body = self._answer(handler.path, handler.lower_headers)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if status != 304:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        pause = self._trickles.get(urlsplit(handler.path).path) if status == 200 else None
        if status != 304 and pause is None:
            handler.wfile.write(body)
        for index in range(len(body) if pause is not None else 0):
            handler.wfile.write(body[index : index + 1])
            handler.wfile.flush()
            time.sleep(pause)

    def _answer(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        path = urlsplit(target).path
        with self._lock:
            answer = self._fault(target) or self._route(path, headers)
            self._requests.append(RecordedRequest(target, headers, answer[0]))
        return answer

    def _fault(self, target: str) -> tuple[int, dict[str, str], bytes] | None:
        for path_contains, queue in self._faults:
            if queue and path_contains in target:
                fault = queue.popleft()
                status, extra = (fault, {}) if isinstance(fault, int) else fault
                return status, {"Content-Type": "text/plain", **extra}, f"{status}\n".encode()
        return None

    def _route(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        if path in self._redirects:
            return 301, {"Location": self._redirects[path]}, b""
        page = self._pages.get(path) or self._generated(path)
        if page is None:
            return 404, {"Content-Type": "text/plain"}, b"not found\n"
        validators = {"ETag": page.etag, "Last-Modified": formatdate(page.modified, usegmt=True)}
        if _not_modified(page, headers):
            return 304, validators, b""
        return 200, {"Content-Type": page.content_type, **validators}, page.body

    def _generated(self, path: str) -> _Page | None:
        if path == "/robots.txt" and self.robots_txt is not None:
            return _Page(self.robots_txt.encode(), "text/plain; charset=utf-8", 0.0)
        if path == "/sitemap.xml" and self.sitemap_paths is not None:
            urls = "".join(f"<url><loc>{escape(self.url + p)}</loc></url>" for p in self.sitemap_paths)
            body = f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>\n'
            return _Page(body.encode(), "application/xml", 0.0)
        return None


def _not_modified(page: _Page, headers: dict[str, str]) -> bool:
    if "if-none-match" in headers:
        tags = [t.strip() for t in headers["if-none-match"].split(",")]
        return page.etag in tags or f"W/{page.etag}" in tags or "*" in tags
    if "if-modified-since" in headers:
        with contextlib.suppress(TypeError, ValueError):
            return int(page.modified) <= parsedate_to_datetime(headers["if-modified-since"]).timestamp()
    return False
