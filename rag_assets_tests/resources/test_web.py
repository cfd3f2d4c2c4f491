"""Website sources against a loopback site: sitemap and links, robots.txt, redirects, canonical
duplicates, conditional re-crawls that download nothing unchanged, the page cap, and retries."""

import pytest

from rag_assets.core.html_text import html_to_page
from rag_assets.resources.retry import RetryError
from rag_assets.resources.web import WebResource
from rag_assets.runtime.ingest import run_ingest
from rag_assets.sources import WebSource
from rag_assets_tests.helpers import milvus_rows, write_sources
from rag_assets_tests.web_site import FakeSite


def html(title: str, body: str, links=(), canonical: str | None = None) -> str:
    head = f"<title>{title} - Docs</title>" + (
        f'<link rel="canonical" href="{canonical}">' if canonical else ""
    )
    nav = "".join(f'<a href="{link}">{link}</a>' for link in links)
    return (
        f"<html><head>{head}</head><body><nav>{nav}</nav><main><h1>{title}</h1><p>{body}</p>"
        f"<h2>Details</h2><p>More about {title.lower()}.</p></main><footer>(c) site</footer></body></html>"
    )


@pytest.fixture
def site():
    with FakeSite() as server:
        server.robots_txt = "User-agent: *\nDisallow: /docs/private/\n"
        server.set_page(
            "/docs/",
            html(
                "Home",
                "Welcome to the docs.",
                ["/docs/guide", "/docs/old", "/docs/private/keys", "/docs/guide?from=nav"],
            ),
        )
        server.set_page(
            "/docs/guide", html("Guide", "Install it twice.", ["/docs/"], canonical="/docs/guide")
        )
        server.set_page("/docs/guide-print", html("Guide", "Install it twice.", canonical="/docs/guide"))
        server.redirect("/docs/old", "/docs/moved")
        server.set_page("/docs/moved", html("Moved", "This page moved here."))
        server.set_page("/docs/private/keys", html("Keys", "Never crawled."))
        server.sitemap_paths = [
            "/docs/",
            "/docs/guide",
            "/docs/guide-print",
            "/docs/old",
            "/docs/private/keys",
        ]
        yield server


def web_source(site: FakeSite, **extra) -> dict:
    return {
        "name": "site",
        "kind": "web",
        "sitemap_url": f"{site.url}/sitemap.xml",
        "start_url": f"{site.url}/docs/",
        "requests_per_second": 100,
        "concurrency": 2,
        **extra,
    }


def crawl(settings, site, **extra):
    web = WebResource(cache_dir=str(settings.cache_dir / "web"), retry_base_seconds=0.01)
    return web.reader().crawl(WebSource.model_validate(web_source(site, **extra)))


def test_html_becomes_markdown_with_headings_and_without_page_chrome():
    page = html_to_page(
        html("Guide", "Install <b>it</b>.", ["/x"], canonical="/docs/guide"), "http://h.test/docs/guide?x=1"
    )
    assert page.markdown == "# Guide\n\nInstall **it**.\n\n## Details\n\nMore about guide.\n"
    assert page.canonical == "http://h.test/docs/guide" and page.links == ("http://h.test/x",)


def test_crawl_follows_sitemap_and_links_honours_robots_follows_redirects_and_drops_canonical_duplicates(
    settings, site
):
    result = crawl(settings, site)

    assert {p.path: p.url for p in result.pages} == {
        "/docs/": f"{site.url}/docs/",
        "/docs/guide": f"{site.url}/docs/guide",
        "/docs/moved": f"{site.url}/docs/moved",
    }
    requested = [r.path for r in site.requests]
    assert "/docs/private/keys" not in requested and requested.count("/docs/") == 1
    assert (
        result.stats.robots_disallowed == 1 and result.stats.duplicates == 2 and result.stats.redirected == 1
    )
    assert next(p for p in result.pages if p.path == "/docs/guide").text.startswith(
        "# Guide\n\nInstall it twice."
    )


def test_second_crawl_downloads_nothing_unchanged(settings, site):
    first = crawl(settings, site)
    site.clear_requests()

    second = crawl(settings, site)

    assert site.count(status=200) == 0
    assert {r.status for r in site.requests} == {301, 304}
    assert [(p.url, p.text) for p in second.pages] == [(p.url, p.text) for p in first.pages]
    assert second.stats.downloaded == 0 and second.stats.not_modified == len(site.requests) - 1


def test_changed_page_is_the_only_page_downloaded_again(settings, site):
    crawl(settings, site)
    site.set_page("/docs/moved", html("Moved", "This page moved here, and changed."))
    site.clear_requests()

    result = crawl(settings, site)

    assert [r.path for r in site.requests if r.status == 200] == ["/docs/moved"]
    assert "and changed" in next(p for p in result.pages if p.path == "/docs/moved").text


def test_page_cap_bounds_the_crawl(settings, site):
    result = crawl(settings, site, max_pages=2)

    page_requests = [r for r in site.requests if r.path not in ("/robots.txt", "/sitemap.xml")]
    assert len(page_requests) == 2 and len(result.pages) == 2
    assert result.stats.capped > 0


def test_503_then_429_with_retry_after_then_200_is_fetched(settings, site):
    site.fail_next("/docs/guide", [503, (429, {"retry-after": "1"})])

    result = crawl(settings, site)

    assert [r.status for r in site.requests if r.path == "/docs/guide"][:3] == [503, 429, 200]
    assert "/docs/guide" in {p.path for p in result.pages}


def test_page_that_keeps_failing_fails_the_crawl_naming_the_source_and_the_status(settings, site):
    site.fail_next("/docs/guide", [503] * 10)

    with pytest.raises(
        RetryError,
        match=r"source 'site': fetching .*/docs/guide: gave up after 5 tries; last answer: HTTP 503",
    ):
        crawl(settings, site)


@pytest.mark.slow
def test_website_source_lands_in_milvus_as_markdown_sections_with_canonical_urls(settings, instance, site):
    write_sources(settings.sources_file, [web_source(site)])

    [summary] = run_ingest(settings, instance, ["site"])

    rows = milvus_rows(settings, "site").values()
    assert {(r["path"], r["url"]) for r in rows} == {
        ("/docs/", f"{site.url}/docs/"),
        ("/docs/guide", f"{site.url}/docs/guide"),
        ("/docs/moved", f"{site.url}/docs/moved"),
    }
    assert {"Guide", "Guide › Details"} <= {r["heading"] for r in rows}
    assert summary.counts["pages"] == 3
