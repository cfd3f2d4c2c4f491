"""Pages: the text of one documentation file, and the rules that turn file bytes into one.

Reading a source is bounded (`ReadLimits`): a file over `max_file_bytes` is skipped unread, at most
`max_pages` pages are kept, and at most `max_total_bytes` (after decompression) are read. A limit
that stops the reading is recorded in `PageStats.limit_hit`, a sentence the run's metadata shows.
"""

from dataclasses import dataclass, field, fields

from wcmatch import glob as wcglob

from rag_assets.core.hashing import content_hash

BINARY_SNIFF_BYTES = 8192
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024  # 10 MiB: larger "documentation" is generated or binary
DEFAULT_MAX_PAGES = 50_000
DEFAULT_MAX_CHUNKS = 500_000
DEFAULT_MAX_TOTAL_BYTES = 4 * 1024**3  # 4 GiB decompressed: a whole large repository, not a bomb
PAGE_COLUMNS = ["source", "path", "url", "text", "content_hash", "commit", "format", "version"]
GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.BRACE | wcglob.DOTGLOB


class NoPagesError(RuntimeError):
    """A source yielded no page and its `on_empty` policy is `keep`: the run fails, stored rows stay."""


@dataclass(frozen=True)
class Page:
    """One text file of a source, decoded."""

    path: str
    text: str
    content_hash: str
    url: str = ""
    stat: str = ""  # the file's stat_key, where the reader has one (core/local_folder.py)
    reused: bool = False  # unchanged since the stored reading: not read, no text


@dataclass(frozen=True)
class ReadLimits:
    """The caps on reading one source (see module docstring); the sources file sets them per source."""

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_pages: int = DEFAULT_MAX_PAGES
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES


DEFAULT_READ_LIMITS = ReadLimits()


def _crawl_counter():
    """A counter only a website's crawl moves; its metadata key is `web_<name>`."""
    return field(default=0, metadata={"crawl": True})


@dataclass
class PageStats:
    """What happened to the pages a source offered, for metadata and for honest skips: one type for
    every kind of source. The crawl counters are moved by a website's crawl only
    (rag_assets/resources/readers/crawl.py); `crawled` says the reading was one."""

    matched: int = 0
    pages: int = 0
    empty_pages: int = 0
    binary_skipped: int = 0
    decoded_with_replacement: int = 0
    too_large_skipped: int = 0  # over limits.max_file_bytes: a file skipped unread, a web page cut at the cap
    unsafe_skipped: int = 0
    unreadable_skipped: int = 0  # a file that could not be read (a symlink loop, no permission, gone)
    duplicate_skipped: int = 0  # a path offered twice (a tarball may hold one path twice): the first is kept
    # pages whose file name is not valid UTF-8, stored with its invalid bytes as %XX (core/names.py)
    names_escaped: int = 0
    pages_not_read: int = 0  # selected files left unread because a limit was reached
    bytes_read: int = 0  # after decompression: what counts against max_total_bytes
    limit_hit: str = (
        ""  # e.g. "max_pages=1000 reached; 37 pages not read"; empty when no limit stopped reading
    )
    notes: list[str] = field(default_factory=list)
    crawled: bool = False
    requests: int = _crawl_counter()
    downloaded: int = _crawl_counter()
    not_modified: int = _crawl_counter()
    redirected: int = _crawl_counter()
    robots_disallowed: int = _crawl_counter()
    duplicates: int = _crawl_counter()  # the same final URL reached twice, or a canonical duplicate
    gone: int = _crawl_counter()
    not_text: int = _crawl_counter()
    outside_prefix: int = _crawl_counter()
    # URLs left unfetched because of max_pages, max_total_bytes or the deadline
    capped: int = _crawl_counter()
    outside_scope: int = _crawl_counter()  # refused: another host, a non-http(s) scheme, a non-public address
    redirect_loop: int = _crawl_counter()  # redirects that came back to a URL already visited, or went on
    deadline_exceeded: int = _crawl_counter()  # pages not whole within limits.page_deadline_seconds
    fetch_failed: int = _crawl_counter()  # answers that could not be read (e.g. a broken Content-Encoding)
    bad_charset: int = _crawl_counter()  # a charset Python cannot decode with: read as UTF-8
    parsed_as_text: int = _crawl_counter()  # HTML too deep to parse: its text kept without markup
    canonical_ignored: int = _crawl_counter()  # <link rel=canonical> outside url_prefix: not trusted
    # 1 when robots.txt asked for a longer Crawl-delay than allowed
    crawl_delay_capped: int = _crawl_counter()

    def as_metadata(self) -> dict[str, int]:
        """The counters by name; a crawl's also as `web_<name>` (with its size and bytes read as
        `web_too_large` and `web_bytes_read`)."""
        counts = {f.name: getattr(self, f.name) for f in _counters() if not f.metadata.get("crawl")}
        if not self.crawled:
            return counts
        crawl = {f"web_{f.name}": getattr(self, f.name) for f in _counters() if f.metadata.get("crawl")}
        return {**counts, **crawl, "web_too_large": self.too_large_skipped, "web_bytes_read": self.bytes_read}

    def add(self, more: "PageStats") -> None:
        """Fold another reading's counts, notes and limit into these."""
        for counter in _counters():
            setattr(self, counter.name, getattr(self, counter.name) + getattr(more, counter.name))
        self.notes.extend(more.notes)
        self.limit_hit = self.limit_hit or more.limit_hit

    def skip(self, counter: str, path: str, why: str) -> None:
        """Count one file left out under `counter`, with a note naming it."""
        setattr(self, counter, getattr(self, counter) + 1)
        self.notes.append(f"{path}: {why}")

    def escaped(self, stored: str) -> None:
        """Count a name that is not valid UTF-8, stored (and selected by the globs) as `stored`."""
        self.names_escaped += 1
        self.notes.append(f"{stored}: the name is not valid UTF-8; stored with each invalid byte as %XX")

    def skip_too_large(self, path: str, size: int, limit: int) -> None:
        self.too_large_skipped += 1
        self.notes.append(f"{path}: {size} bytes is over the max_file_bytes={limit} limit, not read")


def _counters():
    return [f for f in fields(PageStats) if f.type is int]


def pages_limit_hit(max_pages: int, not_read: int) -> str:
    return f"max_pages={max_pages} reached; {not_read} pages not read"


def total_bytes_limit_hit(max_total_bytes: int, pages: int, rest: str) -> str:
    return f"max_total_bytes={max_total_bytes} reached after {pages} pages; {rest}"


def path_selected(path: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a relative POSIX path matches the include globs and none of the exclude globs."""
    return wcglob.globmatch(path, list(include), exclude=list(exclude) or None, flags=GLOB_FLAGS)


def decode_page(path: str, data: bytes, stats: PageStats) -> Page | None:
    """Turn file bytes into a Page, or count why not: binary files are skipped, bad UTF-8 is replaced.

    A file of 0 bytes is a page (its later edits are tracked like any other) that makes no chunk.
    """
    stats.matched += 1
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        stats.binary_skipped += 1
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        stats.decoded_with_replacement += 1
    text = text.removeprefix("\ufeff")
    stats.pages += 1
    stats.empty_pages += not text.strip()
    return Page(path=path, text=text, content_hash=content_hash(data))
