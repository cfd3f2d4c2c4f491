"""A website source's scope is a set of origins: scheme, host and port (issue 21).

Before, scope was a set of host names, so a sitemap child at http://docs.example.com:2379/ (another
service of the source's own host) was fetched. Every request now goes to one of the source's own
origins: start-page links, each redirect hop, sitemap children and robots.txt. Real loopback
servers on two ports of 127.0.0.1; the CLI as a process for the end-to-end test.
"""

import json

import pytest

from rag_assets.core.html_text import normalize_url
from rag_assets.core.web_scope import Scope, origin
from rag_assets_tests.helpers import latest_metadata, milvus_rows, rag_assets, write_sources
from rag_assets_tests.web_site import FakeSite

PUBLIC = {"docs.example.com": ["93.184.216.34"]}


def html(title: str, body: str, links=()) -> str:
    anchors = "".join(f'<a href="{link}">{link}</a>' for link in links)
    main = f"<h1>{title}</h1><p>{body}</p>"
    return f"<html><head><title>{title}</title></head><body><nav>{anchors}</nav>{main}</body></html>"


def test_an_origin_is_scheme_host_and_port_with_default_ports_written_out():
    assert origin("http://docs.example.com/a") == ("http", "docs.example.com", 80)
    assert origin("http://docs.example.com:80/a") == origin("HTTP://DOCS.example.com/b")
    assert origin("https://docs.example.com/") == ("https", "docs.example.com", 443)
    assert origin("https://[::1]:8443/") == ("https", "::1", 8443)
    assert origin("ftp://docs.example.com/") is None
    assert origin("http://docs.example.com:99999/") is None  # out of range


def test_scope_refuses_another_port_or_scheme_of_the_sources_own_host():
    scope = Scope(["http://docs.example.com/docs/"], resolver=lambda host: PUBLIC.get(host, []))
    assert scope.refusal("http://docs.example.com/docs/a") == ""
    assert scope.refusal("http://docs.example.com:80/sitemap.xml") == ""  # the default port, written out
    assert scope.refusal("http://docs.example.com:2379/v2/keys") == (
        "origin 'http://docs.example.com:2379' is not one of the source's own (http://docs.example.com)"
    )
    assert "not one of the source's own" in scope.refusal("https://docs.example.com/docs/a")
    assert "not one of the source's own" in scope.refusal("http://docs.example.com:8080/docs/a")
    assert "invalid port" in scope.refusal("http://docs.example.com:x/docs/a")


def test_a_source_with_urls_on_two_origins_may_request_both_and_nothing_else():
    scope = Scope(
        ["https://docs.example.com/guide/", "http://docs.example.com:8080/sitemap.xml"],
        resolver=lambda host: PUBLIC.get(host, []),
    )
    assert scope.refusal("https://docs.example.com:443/guide/a") == ""
    assert scope.refusal("http://docs.example.com:8080/sitemap-2.xml") == ""
    assert "not one of the source's own" in scope.refusal("http://docs.example.com/guide/a")


def test_a_default_port_written_out_is_one_url_with_the_port_left_out():
    assert normalize_url("http://docs.example.com:80/a#b") == "http://docs.example.com/a"
    assert normalize_url("https://docs.example.com:443") == "https://docs.example.com/"
    assert normalize_url("http://docs.example.com:443/a") == "http://docs.example.com:443/a"
    assert normalize_url("http://docs.example.com:8080/a") == "http://docs.example.com:8080/a"


@pytest.mark.slow
def test_a_sitemap_child_a_link_and_a_redirect_to_another_port_of_the_host_are_never_requested(
    workdir, env, settings, instance
):
    with FakeSite() as site, FakeSite() as other:
        assert site.url.split(":")[:2] == other.url.split(":")[:2]  # same scheme and host, another port
        site.set_page(
            "/sitemap-index.xml",
            '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            f"<sitemap><loc>{site.url}/sitemap.xml</loc></sitemap>"
            f"<sitemap><loc>{other.url}/sitemap.xml</loc></sitemap></sitemapindex>",
            "application/xml",
        )
        site.sitemap_paths = ["/docs/"]
        site.set_page(
            "/docs/", html("Home", "Welcome home.", ["/docs/a", f"{other.url}/docs/b", "/docs/hop"])
        )
        site.set_page("/docs/a", html("A", "Text of a."))
        site.redirect("/docs/hop", f"{other.url}/docs/c")
        other.sitemap_paths = ["/docs/b"]
        other.robots_txt = ""
        for path in ("/docs/b", "/docs/c"):
            other.set_page(path, html("Other", "Another service of the same host."))
        notes = workdir / "notes"
        notes.mkdir()
        (notes / "n.md").write_text("# Notes\n\nA healthy source beside the site.\n")
        write_sources(
            settings.sources_file,
            [
                {
                    "name": "site",
                    "kind": "web",
                    "start_url": f"{site.url}/docs/",
                    "sitemap_url": f"{site.url}/sitemap-index.xml",
                    "requests_per_second": 100,
                },
                {"name": "notes", "kind": "local", "path": str(notes)},
            ],
        )

        done, own, foreign = rag_assets("ingest", env=env), site.url, other.url

        assert other.requests == []
    assert done.returncode == 0, done.stderr
    refused = f"origin {foreign!r} is not one of the source's own ({own}), skipped"
    assert [line for line in done.stderr.splitlines() if "not one of the source's own" in line] == [
        f"rag-assets: warning: source 'site': {foreign}/sitemap.xml: {refused}",  # read first
        f"rag-assets: warning: source 'site': {own}/docs/hop: {refused}",
    ]
    site_rows = milvus_rows(settings, "site").values()
    assert sorted((r["path"], r["heading"], r["text"]) for r in site_rows) == [
        ("/docs/", "Home", "Welcome home."),
        ("/docs/a", "A", "Text of a."),
    ]
    assert sorted((r["path"], r["text"]) for r in milvus_rows(settings, "notes").values()) == [
        ("n.md", "A healthy source beside the site.")
    ]
    counts = latest_metadata(instance, "raw_pages", "site")
    assert counts["web_outside_scope"] == 2  # the child sitemap and the redirect hop
    assert counts["web_outside_prefix"] == 1  # the link: not under url_prefix, so never queued
    entries = json.loads((settings.cache_dir / "web" / "site.json").read_text())["entries"]
    assert entries and all(url.startswith(f"{own}/") for url in entries)
