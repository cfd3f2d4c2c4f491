"""What a crawl remembers between runs, per source: validators (ETag, Last-Modified) and the result.

One JSON file per source under the data dir's cache. An entry is keyed by the URL as requested and
holds the final URL after redirects, the validators, and either the converted page or the raw body
(robots.txt, sitemaps), so a 304 answer can be served from here without downloading anything.
"""

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

CACHE_FORMAT = 1


@dataclass
class CacheEntry:
    final_url: str
    etag: str | None = None
    last_modified: str | None = None
    content_type: str = ""
    body: str | None = None  # raw text (robots.txt, sitemaps)
    page: dict | None = None  # the converted page: title, canonical, markdown, links

    def validators(self) -> dict[str, str]:
        """The conditional-request headers that let the server answer 304."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass
class WebCache:
    path: Path
    entries: dict[str, CacheEntry] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "WebCache":
        """The cache at `path`; an absent, unreadable or older-format file is an empty cache."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            if document.get("format") != CACHE_FORMAT:
                return cls(Path(path))
            return cls(Path(path), {url: CacheEntry(**entry) for url, entry in document["entries"].items()})
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return cls(Path(path))

    def save(self, entries: dict[str, CacheEntry]) -> None:
        """Replace the file with exactly `entries` (what this crawl saw), atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        document = {"format": CACHE_FORMAT, "entries": {url: asdict(entry) for url, entry in entries.items()}}
        partial.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, self.path)
        self.entries = dict(entries)
