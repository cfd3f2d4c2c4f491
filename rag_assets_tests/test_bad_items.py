"""No single page, link or file can stop a source (issue 10), in four classes:

- rows that always fit their Milvus field (sized by UTF-8 bytes, tried with multi-byte text);
- isolation per item: a page that cannot be fetched, decoded, parsed or chunked is skipped (or
  chunked as plain text) and counted, and one failed source never stops the others of its run;
- deadlines: a web page, a crawl, a tarball download, a robots.txt Crawl-delay;
- scope: every request of a web source stays on its own hosts, pages under url_prefix.

Real parts only: loopback web and GitHub servers, real folders and tarballs, real Milvus Lite, the
bundled model. End-to-end tests assert the exact rows of every source of the run.
"""

import json
import os
import tarfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from rag_assets.core.chunking import MAX_HEADING_CHARS, Chunker
from rag_assets.core.fitting import fit_identifier, fit_rows, utf8_size
from rag_assets.core.model_files import load_tokenizer, max_seq_length, resolve_model_dir
from rag_assets.core.sections import detect_format
from rag_assets.core.web_scope import Scope
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.milvus import ROW_FIELDS, VARCHAR_LIMITS, MilvusStore
from rag_assets.resources.readers.github import GitHubError
from rag_assets.resources.retry import RetryError
from rag_assets.resources.web import WebResource
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.sources import GitHubSource, WebSource
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import milvus_rows, write_sources
from rag_assets_tests.resources.github_shapes import GitHubShapes
from rag_assets_tests.web_site import FakeSite

OK_PAGE = "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun the installer twice.\n"
OTHER_PAGE = "# Other\n\nAnother source, ingested beside the bad one.\n"


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    return Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))


def expected(chunker: Chunker, source: str, pages: dict[str, str], fmt: dict[str, str] | None = None) -> dict:
    """chunk id -> (path, heading, text) for these pages, as the chunker makes them."""
    return {
        c.id: (path, c.heading, c.text)
        for path, text in pages.items()
        for c in chunker.split_page(source, path, text, (fmt or {}).get(path) or detect_format(path, text))
    }


def stored(settings, source: str) -> dict:
    return {i: (r["path"], r["heading"], r["text"]) for i, r in milvus_rows(settings, source).items()}


def metadata(instance, asset: str, source: str) -> dict:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[source]), limit=1
    ).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def local(name: str, path: Path, **extra) -> dict:
    return {"name": name, "kind": "local", "path": str(path), "include": ["**/*.md", "**/*.rst"], **extra}


def html(title: str, body: str, links=(), canonical: str | None = None) -> str:
    head = f"<title>{title}</title>" + (f'<link rel="canonical" href="{canonical}">' if canonical else "")
    anchors = "".join(f'<a href="{link}">{link}</a>' for link in links)
    main = f"<main><h1>{title}</h1><p>{body}</p></main>"
    return f"<html><head>{head}</head><body><nav>{anchors}</nav>{main}</body></html>"


def web(site: FakeSite, **extra) -> dict:
    return {
        "name": "site",
        "kind": "web",
        "start_url": f"{site.url}/docs/",
        "requests_per_second": 100,
        **extra,
    }


def crawl(tmp_path: Path, source: dict, attempts: int = 2):
    resource = WebResource(cache_dir=str(tmp_path / "web"), retry_attempts=attempts, retry_base_seconds=0.01)
    return resource.reader().crawl(WebSource.model_validate(source))


# -- Rows that always fit --------------------------------------------------------------------------


def test_values_over_their_field_are_fitted_by_utf8_bytes_and_what_cannot_fit_is_left_out_and_counted(
    tmp_path,
):
    row = {
        "id": "a" * 32,
        "source": "s",
        "path": "p/" + "€" * 1000,  # 3,002 bytes, 1,002 characters: over 2,048 bytes only
        "url": "u",
        "heading": "𝄞" * 2000,  # 8,000 bytes
        "text": "€" * 21_000,  # 63,000 bytes: fits
        "content_hash": "c",
        "commit": "é" * 40,  # 80 bytes
        "model": "m",
        "vector": [1.0, 0.0, 0.0, 0.0],
    }
    too_long = {**row, "id": "b" * 32, "path": "q", "text": "€" * 22_000}  # 66,000 bytes
    repeated = {**row, "path": "r"}
    result = fit_rows(pd.DataFrame([row, too_long, repeated]), VARCHAR_LIMITS)

    assert dict(result.skipped) == {"text over 65535 bytes": 1, "duplicate id": 1}
    assert result.notes == ["q: row not stored (text over 65535 bytes)", "r: row not stored (duplicate id)"]
    [fitted] = result.rows.to_dict("records")
    for name, limit in VARCHAR_LIMITS.items():
        assert utf8_size(fitted[name]) <= limit, name
    assert fitted["path"] == fit_identifier(row["path"], 2048) and fitted["path"].startswith("p/€€€")
    assert fitted["path"] != fit_identifier(row["path"] + "x", 2048)  # a longer path is another page
    assert fitted["heading"].endswith("…") and fitted["text"] == row["text"]
    # Milvus Lite counts characters: the fitted row goes in with a schema at the same limits.
    store = MilvusStore(str(tmp_path / "fit.db"), "fit_test")
    try:
        store.ensure_collection(4)
        store.upsert_rows([{k: fitted[k] for k in ROW_FIELDS}])
        [back] = store.query_rows(limit=5, fields=["path", "heading"])
        assert (back["path"], back["heading"]) == (fitted["path"], fitted["heading"])
    finally:
        store.close()


@pytest.mark.slow
def test_a_70000_character_line_a_5000_character_heading_and_a_2500_byte_path_all_land(
    settings, instance, workdir, chunker
):
    hex_dump = "0123456789abcdef" * 4375  # 70,000 characters, no space: one [UNK] token
    long_folder = "/".join(["d" * 200] * 12)  # 2,411 bytes with the file name
    pages = {
        "hex.md": f"# Dump\n\n{hex_dump}\n",
        "heading.md": "# " + "€" * 5000 + "\n\nUnder a long heading.\n",
        f"{long_folder}/deep.md": "# Deep\n\nA page in a deep folder.\n",
        "ok.md": OK_PAGE,
    }
    write_sources(
        settings.sources_file,
        [
            local("big", folder(workdir / "big", pages)),
            local("other", folder(workdir / "o", {"o.md": OTHER_PAGE})),
        ],
    )

    run_ingest(settings, instance, ["big", "other"])

    rows = milvus_rows(settings, "big").values()
    for row in rows:
        for name, limit in VARCHAR_LIMITS.items():
            assert utf8_size(row[name]) <= limit, (name, row["path"][:40])
    dump = [r for r in rows if r["path"] == "hex.md"]
    assert len(dump) >= 70_000 // chunker.max_chars and max(len(r["text"]) for r in dump) <= chunker.max_chars
    assert sum(len(r["text"]) for r in dump) == len(hex_dump)
    [heading] = [r["heading"] for r in rows if r["path"] == "heading.md"]
    assert heading.endswith("…") and len(heading) <= MAX_HEADING_CHARS and heading.startswith("€€€")
    deep_path = f"{long_folder}/deep.md"
    assert {r["path"] for r in rows} == {"hex.md", "heading.md", "ok.md", fit_identifier(deep_path, 2048)}
    assert metadata(instance, "chunks", "big")["rows_skipped"] == 0
    assert stored(settings, "other") == expected(chunker, "other", {"o.md": OTHER_PAGE})


# -- Isolation per item ----------------------------------------------------------------------------

DEEP_RST = "Title\n=====\n\n" + "".join(" " * i + f"level {i}\n\n" for i in range(400))
DEEP_HTML = "<html><head><title>Deep</title></head><body>" + "<div>" * 50_000 + "deep words</body></html>"


@pytest.fixture
def site():
    with FakeSite() as server:
        yield server


@pytest.mark.slow
def test_bad_pages_links_and_files_are_skipped_and_counted_and_every_source_lands_exactly(
    settings, instance, workdir, site, chunker
):
    other_host = site.url.replace("127.0.0.1", "localhost")
    bad = ["loop", "charset", "ftp", "offsite", "deep", "canon-evil", "canon-out", "ok"]
    site.set_page("/docs/", html("Home", "Welcome.", [f"/docs/{b}" for b in bad]))
    site.set_page("/docs/ok", html("Ok", "The real text of ok."))
    site.redirect("/docs/loop", "/docs/loop2")
    site.redirect("/docs/loop2", "/docs/loop")
    site.set_page("/docs/charset", html("Charset", "Declared base64."), "text/html; charset=base64")
    site.redirect("/docs/ftp", "ftp://127.0.0.1/file")
    site.redirect("/docs/offsite", f"{other_host}/docs/ok")
    site.set_page("/docs/deep", DEEP_HTML)
    site.set_page("/docs/canon-evil", html("Evil", "Text that must not replace ok.", canonical="/docs/ok"))
    site.set_page("/docs/canon-out", html("Out", "Names another host.", canonical=f"{other_host}/x"))
    site.set_page(
        "/sitemap-index.xml",
        '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        f"<sitemap><loc>{site.url}/sitemap.xml</loc></sitemap>"
        f"<sitemap><loc>{other_host}/sitemap.xml</loc></sitemap>"
        "<sitemap><loc>http://169.254.169.254/latest/meta-data/</loc></sitemap></sitemapindex>",
        "application/xml",
    )
    site.sitemap_paths = ["/docs/ok"]
    notes = folder(workdir / "notes", {"ok.md": OK_PAGE, "deep.rst": DEEP_RST})
    os.symlink("loop-b.md", notes / "loop-a.md")
    os.symlink("loop-a.md", notes / "loop-b.md")
    write_sources(
        settings.sources_file,
        [
            web(site, sitemap_url=f"{site.url}/sitemap-index.xml"),
            local("notes", notes),
            local("other", folder(workdir / "o", {"o.md": OTHER_PAGE})),
        ],
    )

    run_ingest(settings, instance, ["site", "notes", "other"])

    site_rows = milvus_rows(settings, "site").values()
    assert {r["path"] for r in site_rows} == {
        "/docs/",
        "/docs/ok",
        "/docs/charset",
        "/docs/deep",
        "/docs/canon-out",
    }
    assert {r["text"] for r in site_rows if r["path"] == "/docs/ok"} == {"The real text of ok."}
    assert {r["url"] for r in site_rows if r["path"] == "/docs/canon-out"} == {f"{site.url}/docs/canon-out"}
    assert "deep words" in {r["text"] for r in site_rows if r["path"] == "/docs/deep"}
    counts = metadata(instance, "raw_pages", "site")
    assert {
        k: counts[f"web_{k}"] for k in ("redirect_loop", "bad_charset", "parsed_as_text", "canonical_ignored")
    } == {
        "redirect_loop": 1,
        "bad_charset": 1,
        "parsed_as_text": 1,
        "canonical_ignored": 1,
    }
    assert counts["web_outside_scope"] == 4  # ftp, offsite, and two child sitemaps
    assert all(r.headers.get("host", "").startswith("127.0.0.1") for r in site.requests)
    entries = json.loads((settings.cache_dir / "web" / "site.json").read_text())["entries"]
    assert all(
        u.startswith(f"{site.url}/") and e["final_url"].startswith(site.url) for u, e in entries.items()
    )

    assert metadata(instance, "raw_pages", "notes")["unreadable_skipped"] == 2
    assert metadata(instance, "chunks", "notes")["pages_parsed_as_text"] == 1
    assert stored(settings, "notes") == expected(
        chunker, "notes", {"ok.md": OK_PAGE, "deep.rst": DEEP_RST}, {"deep.rst": "text"}
    )
    assert stored(settings, "other") == expected(chunker, "other", {"o.md": OTHER_PAGE})


@pytest.fixture
def github(monkeypatch):
    monkeypatch.setenv("RAG_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("RAG_RETRY_BASE_SECONDS", "0.01")
    with FakeGitHub() as server:
        yield server


def repo_source(github: FakeGitHub, name: str, repo: str, **extra) -> dict:
    return {
        "name": name,
        "kind": "github",
        "repo": repo,
        "include": ["**/*.md"],
        "api_url": github.url,
        **extra,
    }


@pytest.mark.slow
def test_a_failed_source_keeps_its_rows_and_never_stops_the_others_of_its_run(
    settings, instance, github, chunker
):
    twice = tarfile.TarInfo("docs/index.md"), b"# Second\n\nThe same path again.\n"
    github.add_repo("acme/dup", {"docs/index.md": OK_PAGE}, extra_members=[twice])
    github.add_repo("acme/broken", {"docs/index.md": OK_PAGE})
    github.add_repo("acme/good", {"docs/a.md": OK_PAGE})
    write_sources(
        settings.sources_file,
        [repo_source(github, n, f"acme/{n}") for n in ("broken", "dup", "good")],
    )
    run_ingest(settings, instance, ["broken", "dup", "good"])
    broken_before = stored(settings, "broken")
    assert broken_before == expected(chunker, "broken", {"docs/index.md": OK_PAGE})
    assert stored(settings, "dup") == expected(chunker, "dup", {"docs/index.md": OK_PAGE})
    assert metadata(instance, "raw_pages", "dup")["duplicate_skipped"] == 1

    github.push("acme/broken", {"docs/index.md": OTHER_PAGE})
    github.serve_corrupt_tarball("acme/broken", "truncated")
    github.push("acme/good", {"docs/a.md": OK_PAGE, "docs/b.md": OTHER_PAGE})
    with pytest.raises(
        IngestFailed, match=r"^source 'broken': step raw_pages failed: archive is truncated or corrupt[^\n]*$"
    ):
        run_ingest(settings, instance, ["broken", "dup", "good"])

    assert stored(settings, "broken") == broken_before
    assert stored(settings, "good") == expected(
        chunker, "good", {"docs/a.md": OK_PAGE, "docs/b.md": OTHER_PAGE}
    )
    assert stored(settings, "dup") == expected(chunker, "dup", {"docs/index.md": OK_PAGE})
    assert metadata(instance, "milvus_collection", "broken")["written"] is False


# -- Deadlines -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_slow_loris_page_is_skipped_at_its_deadline_and_the_run_ends_in_bounded_time(
    settings, instance, workdir, site, chunker
):
    site.set_page("/docs/", html("Home", "Welcome.", ["/docs/slow", "/docs/ok"]))
    site.set_page("/docs/ok", html("Ok", "Fast enough."))
    site.set_page("/docs/slow", html("Slow", "x" * 2000))
    site.trickle("/docs/slow", 0.2)  # one byte every 0.2 s: over 400 s for the whole page
    site.robots_txt = "User-agent: *\nCrawl-delay: 86400\n"
    write_sources(
        settings.sources_file,
        [
            web(site, limits={"page_deadline_seconds": 1.5, "max_crawl_delay_seconds": 0.1}),
            local("other", folder(workdir / "o", {"o.md": OTHER_PAGE})),
        ],
    )

    started = time.monotonic()
    run_ingest(settings, instance, ["site", "other"])
    elapsed = time.monotonic() - started

    assert elapsed < 60, elapsed  # model load included; the slow page alone would take 400 s
    assert {r["path"] for r in milvus_rows(settings, "site").values()} == {"/docs/", "/docs/ok"}
    counts = metadata(instance, "raw_pages", "site")
    assert counts["web_deadline_exceeded"] == 1 and counts["web_crawl_delay_capped"] == 1
    assert stored(settings, "other") == expected(chunker, "other", {"o.md": OTHER_PAGE})


def test_a_slow_page_is_given_up_within_its_deadline(tmp_path, site):
    site.set_page("/docs/", html("Home", "Welcome.", ["/docs/slow"]))
    site.set_page("/docs/slow", html("Slow", "x" * 2000))
    site.trickle("/docs/slow", 0.1)

    started = time.monotonic()
    result = crawl(tmp_path, web(site, limits={"page_deadline_seconds": 1.0}))

    assert time.monotonic() - started < 2.5
    assert [p.path for p in result.pages] == ["/docs/"] and result.stats.deadline_exceeded == 1
    assert result.stats.notes == [f"{site.url}/docs/slow: not whole within 1 s, skipped"]


def test_a_crawl_stops_at_its_deadline_and_says_so(tmp_path, site):
    site.set_page("/docs/", html("Home", "Welcome.", [f"/docs/p{i}" for i in range(20)]))
    for i in range(20):
        site.set_page(f"/docs/p{i}", html(f"P{i}", "Words."))
        site.trickle(f"/docs/p{i}", 0.002)  # about 0.3 s a page

    started = time.monotonic()
    result = crawl(tmp_path, web(site, concurrency=1, limits={"crawl_deadline_seconds": 1.0}))

    assert time.monotonic() - started < 2.5
    assert 1 <= len(result.pages) < 21 and result.stats.capped > 0
    assert result.stats.limit_hit.startswith("crawl_deadline_seconds=1 reached;")


def read_tarball(github: FakeGitHub, source: dict) -> dict[str, str]:
    reader = GitHubResource(retry_attempts=2, retry_base_seconds=0.01).reader()
    pages = reader.read(GitHubSource.model_validate(source), {}).frame()
    return dict(zip(pages["path"], pages["text"], strict=True))


def test_a_stalled_tarball_download_is_retried_then_fails_within_its_stall_timeout(github):
    github.add_repo("acme/stall", {"docs/a.md": OK_PAGE, "docs/b.bin": os.urandom(50_000)})
    github.trickle_tarballs(1000, 5.0)  # 1 KB, then five seconds of nothing

    started = time.monotonic()
    with pytest.raises(RetryError, match=r"gave up after 2 tries; last answer: ReadTimeout"):
        read_tarball(
            github, repo_source(github, "stall", "acme/stall", limits={"download_stall_seconds": 0.5})
        )
    assert time.monotonic() - started < 3


def test_a_trickling_tarball_download_fails_at_its_overall_deadline():
    shapes = GitHubShapes("acme/slow", {"docs/a.md": OK_PAGE, "docs/b.bin": os.urandom(200_000)})
    shapes.archive_body = lambda archive: trickle(archive, 2000, 0.05)  # never stalls, but takes about 5 s
    definition = {
        "name": "slow",
        "kind": "github",
        "repo": "acme/slow",
        "limits": {"download_deadline_seconds": 1},
    }
    reader = GitHubResource(retry_attempts=2, retry_base_seconds=0.01).reader(transport=shapes.transport)

    started = time.monotonic()
    with pytest.raises(GitHubError, match=r"not finished within download_deadline_seconds=1"):
        reader.read(GitHubSource.model_validate(definition), {})
    assert time.monotonic() - started < 2.5


def trickle(data: bytes, size: int, pause: float):
    for start in range(0, len(data), size):
        time.sleep(pause)
        yield data[start : start + size]


# -- Scope -----------------------------------------------------------------------------------------


def test_scope_refuses_other_hosts_other_schemes_and_non_public_addresses_unless_the_source_is_on_one():
    answers = {"docs.example": ["93.184.216.34"], "intranet.corp": ["10.1.2.3"]}
    scope = Scope(["https://docs.example/guide/"], resolver=lambda host: answers.get(host, []))

    assert scope.refusal("https://docs.example/guide/a") == ""
    assert "not one of the source's own" in scope.refusal("http://169.254.169.254/latest/meta-data/")
    assert "not one of the source's own" in scope.refusal("http://[fe80::1]/")
    assert "not http(s)" in scope.refusal("ftp://docs.example/file")
    answers["docs.example"] = ["169.254.169.254"]  # the name now points at the metadata service
    assert "non-public address 169.254.169.254" in scope.refusal("https://docs.example/guide/a")
    answers["docs.example"] = ["fe80::1"]
    assert "non-public address fe80::1" in scope.refusal("https://docs.example/guide/a")

    intranet = Scope(["http://intranet.corp/docs/"], resolver=lambda host: answers.get(host, []))
    assert intranet.refusal("http://intranet.corp/docs/a") == ""  # the source's own address is private
    assert Scope(["http://127.0.0.1:8000/docs/"]).refusal("http://127.0.0.1:8000/docs/a") == ""


def test_a_redirect_hop_out_of_scope_is_never_requested_and_a_canonical_never_moves_text(tmp_path, site):
    other_host = site.url.replace("127.0.0.1", "localhost")
    site.set_page("/docs/", html("Home", "Welcome.", ["/docs/a", "/docs/b", "/docs/out", "/docs/up"]))
    site.set_page("/docs/a", html("A", "Text of a.", canonical="/docs/b"))
    site.set_page("/docs/b", html("B", "Text of b.", canonical="/docs/a"))  # they name each other
    site.redirect("/docs/out", f"{other_host}/docs/a")
    site.redirect("/docs/up", "/secret")  # same host, outside url_prefix
    site.set_page("/secret", html("Secret", "Outside the prefix."))

    result = crawl(tmp_path, web(site))

    assert {p.path: p.text.split("\n\n")[1].strip() for p in result.pages} == {
        "/docs/": "Welcome.",
        "/docs/a": "Text of a.",
        "/docs/b": "Text of b.",
    }
    assert "/secret" not in [r.path for r in site.requests]
    assert result.stats.outside_scope == 2
    entries = json.loads((tmp_path / "web" / "site.json").read_text())["entries"]
    assert all(url.startswith(f"{site.url}/") for url in entries)
