"""Limits per source (`limits:` in the sources file): file size, pages, chunks and bytes read. What a
limit leaves out is never read whole into memory, and the run's metadata says which limit was hit
and what it left out (`limit_hit`)."""

from pathlib import Path

import httpx
import pandas as pd
import pytest

from rag_assets.assets.chunks import cap_chunks
from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.pages import PageStats, ReadLimits
from rag_assets.resources.web import WebResource
from rag_assets.runtime.ingest import run_ingest
from rag_assets.sources import SourceLimits, SourcesFileError, WebSource, load_sources
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import latest_metadata, milvus_rows, write_sources

MiB, GiB = 1024 * 1024, 1024**3
SOURCES_DOC = Path(__file__).parents[1] / "docs" / "sources.md"  # "Limits and empty sources"


def folder(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def section_page(title: str, sections: int = 1) -> str:
    return f"# {title}\n\nAbout {title}.\n" + "".join(
        f"\n## Part {i}\n\nPart {i} of {title}.\n" for i in range(1, sections)
    )


# -- The field ---------------------------------------------------------------------------------------


def test_limits_default_to_the_documented_values(tmp_path):
    [source] = load_sources(
        write_sources(tmp_path / "sources.yaml", [{"name": "a", "kind": "local", "path": "."}])
    )

    assert source.limits == SourceLimits(
        max_file_bytes=10 * MiB, max_pages=50_000, max_chunks=500_000, max_total_bytes=4 * GiB
    )
    assert source.on_empty == "keep"
    documented = SOURCES_DOC.read_text()
    for default in ("`10485760` (10 MiB)", "`50000`", "`500000`", "`4294967296` (4 GiB)", "`keep`"):
        assert default in documented


@pytest.mark.parametrize(
    ("limits", "field", "words"),
    [
        ({"max_pages": 0}, "limits.max_pages", "greater than or equal to 1"),
        ({"max_file_bytes": "10MB"}, "limits.max_file_bytes", "valid integer"),
        ({"max_files": 3}, "limits.max_files", "Extra inputs"),
    ],
)
def test_invalid_limit_is_named_with_its_field(tmp_path, limits, field, words):
    path = write_sources(
        tmp_path / "sources.yaml", [{"name": "a", "kind": "local", "path": ".", "limits": limits}]
    )
    with pytest.raises(SourcesFileError, match=rf"source #1 \('a'\): field '{field}': .*{words}"):
        load_sources(path)


# -- max_file_bytes ------------------------------------------------------------------------------------


def test_max_file_bytes_skips_a_larger_local_file_unread_and_counts_it(tmp_path):
    root = folder(tmp_path, {"a.md": "# A\n", "big.md": "x" * 2000, "c.md": "# C\n"})
    stats = PageStats()

    pages = [
        p.path
        for p in iter_folder_pages(
            root, include=("**/*.md",), exclude=(), stats=stats, limits=ReadLimits(max_file_bytes=1000)
        )
    ]

    assert pages == ["a.md", "c.md"]
    assert stats.too_large_skipped == 1 and stats.notes == [
        "big.md: 2000 bytes is over the max_file_bytes=1000 limit, not read"
    ]
    assert stats.limit_hit == ""  # a skipped file is counted, not a limit that stopped the reading


class Body(httpx.SyncByteStream):
    """A response body that never ends; counts what the client pulled."""

    def __init__(self, chunk: bytes):
        self.chunk, self.served, self.closed = chunk, 0, False

    def __iter__(self):
        while not self.closed:
            self.served += len(self.chunk)
            yield self.chunk

    def close(self) -> None:
        self.closed = True


def site_transport(
    pages: dict[str, bytes | Body], headers: dict[str, dict] | None = None
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        body = pages.get(request.url.path)
        if body is None:
            return httpx.Response(404, text="not found")
        extra = (headers or {}).get(request.url.path, {})
        if isinstance(body, Body):
            return httpx.Response(200, headers={"content-type": "text/html", **extra}, stream=body)
        return httpx.Response(200, headers={"content-type": "text/html", **extra}, content=body)

    return httpx.MockTransport(handle)


def html(title: str, links: tuple[str, ...] = (), filler: int = 0) -> bytes:
    anchors = "".join(f'<a href="{link}">{link}</a>' for link in links)
    body = f"<nav>{anchors}</nav><main><h1>{title}</h1><p>{'word ' * filler}About {title}.</p></main>"
    return f"<html><body>{body}</body></html>".encode()


def crawl(tmp_path: Path, transport: httpx.MockTransport, **source):
    web = WebResource(cache_dir=str(tmp_path / "web"), retry_attempts=1)
    definition = {
        "name": "site",
        "kind": "web",
        "start_url": "http://site.test/docs/",
        "requests_per_second": 100,
        "concurrency": 1,
    }
    return web.reader(transport=transport).crawl(WebSource.model_validate({**definition, **source}))


@pytest.mark.parametrize(
    "declared", [None, str(GiB)], ids=["endless_body_without_a_length", "length_over_the_cap"]
)
def test_web_page_over_max_file_bytes_is_dropped_once_that_many_bytes_arrived(tmp_path, declared):
    endless = Body(b"<p>" + b"spam " * 3000 + b"</p>")
    pages = {"/docs/": html("Home", ("/docs/big", "/docs/ok")), "/docs/big": endless, "/docs/ok": html("Ok")}
    transport = site_transport(pages, {"/docs/big": {"content-length": declared}} if declared else None)

    result = crawl(tmp_path, transport, limits={"max_file_bytes": 64 * 1024})

    assert sorted(p.path for p in result.pages) == ["/docs/", "/docs/ok"]
    assert (
        result.stats.too_large_skipped == 1
        and "/docs/big: over the max_file_bytes=65536 limit" in result.stats.notes[0]
    )
    assert endless.served <= (0 if declared else 64 * 1024 + 2 * len(endless.chunk)) and endless.closed


# -- max_pages -------------------------------------------------------------------------------------------


def test_max_pages_keeps_the_first_pages_and_records_how_many_were_not_read(settings, instance, workdir):
    root = folder(workdir / "docs", {f"p{i}.md": section_page(f"Page {i}") for i in range(1, 6)})
    write_sources(
        settings.sources_file,
        [{"name": "notes", "kind": "local", "path": str(root), "limits": {"max_pages": 3}}],
    )

    run_ingest(settings, instance, ["notes"])

    assert {r["path"] for r in milvus_rows(settings, "notes").values()} == {"p1.md", "p2.md", "p3.md"}
    recorded = latest_metadata(instance, "raw_pages", "notes")
    assert (
        recorded["limit_hit"] == "max_pages=3 reached; 2 pages not read" and recorded["pages_not_read"] == 2
    )


def test_web_crawl_stops_at_limits_max_pages_and_records_how_many_were_not_read(tmp_path):
    links = tuple(f"/docs/p{i}" for i in range(1, 6))
    transport = site_transport({"/docs/": html("Home", links), **{link: html(link) for link in links}})

    result = crawl(tmp_path, transport, max_pages=100, limits={"max_pages": 2})

    assert [p.path for p in result.pages] == ["/docs/", "/docs/p1"]
    assert result.stats.limit_hit == "max_pages=2 reached; 4 pages not read"


# -- max_chunks -------------------------------------------------------------------------------------------


def test_cap_chunks_keeps_whole_pages_in_order_and_says_what_it_left_out():
    frame = pd.DataFrame({"path": ["a", "a", "b", "b", "b", "c"], "position": [0, 1, 0, 1, 2, 0]})

    kept, reason = cap_chunks(frame, 4)

    assert list(kept["path"]) == ["a", "a"]  # b would make 5: it is left out whole, and so is c after it
    assert reason == "max_chunks=4 reached; 4 chunks of 2 pages not kept"
    unchanged, no_reason = cap_chunks(frame, 6)
    assert unchanged is frame and no_reason == ""


@pytest.mark.slow
def test_max_chunks_keeps_whole_pages_and_records_the_cut(settings, instance, workdir):
    root = folder(
        workdir / "docs",
        {"a.md": section_page("A", 2), "b.md": section_page("B", 2), "c.md": section_page("C")},
    )
    write_sources(
        settings.sources_file,
        [{"name": "notes", "kind": "local", "path": str(root), "limits": {"max_chunks": 3}}],
    )

    run_ingest(settings, instance, ["notes"])

    assert sorted(r["heading"] for r in milvus_rows(settings, "notes").values()) == ["A", "A › Part 1"]
    recorded = latest_metadata(instance, "chunks", "notes")
    assert (
        recorded["limit_hit"] == "max_chunks=3 reached; 3 chunks of 2 pages not kept"
        and recorded["dagster/row_count"] == 2
    )


# -- max_total_bytes --------------------------------------------------------------------------------------


def test_max_total_bytes_stops_reading_a_local_folder_and_records_where(tmp_path):
    root = folder(tmp_path, {"a.md": "a" * 400, "b.md": "b" * 400, "c.md": "c" * 400, "d.md": "d" * 400})
    stats = PageStats()

    pages = [
        p.path
        for p in iter_folder_pages(
            root, include=("**/*.md",), exclude=(), stats=stats, limits=ReadLimits(max_total_bytes=1000)
        )
    ]

    assert pages == ["a.md", "b.md"] and stats.bytes_read == 800
    assert stats.limit_hit == "max_total_bytes=1000 reached after 2 pages; stopped at c.md; 2 pages not read"


def test_max_total_bytes_stops_a_github_archive_and_the_run_records_why(settings, instance):
    with FakeGitHub() as github:
        github.add_repo(
            "acme/bomb", {"a.md": section_page("A"), "b/bomb.bin": bytes(32 * MiB), "c.md": section_page("C")}
        )
        write_sources(
            settings.sources_file,
            [
                {
                    "name": "bomb",
                    "kind": "github",
                    "repo": "acme/bomb",
                    "include": ["**/*.md"],
                    "api_url": github.url,
                    "limits": {"max_total_bytes": 4 * MiB},
                }
            ],
        )
        run_ingest(settings, instance, ["bomb"])

    assert {r["path"] for r in milvus_rows(settings, "bomb").values()} == {"a.md"}
    recorded = latest_metadata(instance, "raw_pages", "bomb")
    assert (
        recorded["limit_hit"]
        == f"max_total_bytes={4 * MiB} reached after 1 pages; the rest of the archive not read"
    )
    assert recorded["bytes_read"] <= 4 * MiB


def test_web_crawl_stops_once_max_total_bytes_were_downloaded(tmp_path):
    links = tuple(f"/docs/p{i}" for i in range(1, 6))
    transport = site_transport(
        {"/docs/": html("Home", links), **{link: html(link, filler=2000) for link in links}}
    )

    result = crawl(tmp_path, transport, limits={"max_total_bytes": 15_000})

    assert [p.path for p in result.pages] == ["/docs/", "/docs/p1", "/docs/p2"]
    assert result.stats.limit_hit == "max_total_bytes=15000 reached; 3 pages not read"
