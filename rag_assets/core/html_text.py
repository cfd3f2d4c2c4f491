"""Reduce an HTML page to clean Markdown (headings kept as `#` headings), its canonical URL and its links.

Why markdownify + BeautifulSoup: the chunker splits Markdown along its headings, so the converter
must turn `<h1>`..`<h6>` into ATX headings and keep lists, code blocks and tables readable.
markdownify (MIT, maintained, a small pure-Python layer over BeautifulSoup) does exactly that and
lets us drop boilerplate elements before converting; BeautifulSoup with the stdlib `html.parser`
gives the `<link rel=canonical>` and `<a href>` with no compiled dependency. html2text does the same
conversion but is GPL-3.0; trafilatura's boilerplate detection is heavier than docs sites need
(they mark content with `<main>`/`<article>`) and pulls in lxml and several other packages.
"""

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from bs4 import BeautifulSoup
from markdownify import ATX, MarkdownConverter

# Page chrome, not content: navigation, scripts, forms, the site header and footer.
BOILERPLATE_TAGS = (
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "iframe",
    "svg",
    "button",
)
CONTENT_SELECTORS = ("main", "article", "[role=main]", "body")


@dataclass(frozen=True)
class HtmlPage:
    """What a crawler needs from one HTML document."""

    title: str
    canonical: str | None  # absolute, without fragment; None when the page names none
    markdown: str
    links: tuple[str, ...]  # absolute, without fragments, in document order, de-duplicated


def html_to_page(html: str, base_url: str) -> HtmlPage:
    """Parse `html` fetched from `base_url` (after redirects): Markdown of the main content, canonical,
    links.
    """
    soup = BeautifulSoup(html, "html.parser")
    base = _base_href(soup, base_url)
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    canonical = _canonical(soup, base)
    links = _links(soup, base)
    for tag in soup(BOILERPLATE_TAGS):
        tag.decompose()
    content = next((found for selector in CONTENT_SELECTORS if (found := soup.select_one(selector))), soup)
    markdown = _tidy(
        MarkdownConverter(heading_style=ATX, bullets="-", code_language_callback=_code_language).convert_soup(
            content
        )
    )
    if title and not re.match(r"^#\s", markdown):  # a page without an <h1> still gets a top heading
        markdown = f"# {title}\n\n{markdown}"
    return HtmlPage(title=title, canonical=canonical, markdown=markdown, links=links)


def html_to_plain_page(html: str) -> HtmlPage:
    """The words of a page without its markup, read by a flat tokenizer that has no nesting limit:
    for a page nested too deeply for `html_to_page`. No canonical, no links (nothing is followed)."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    text = _tidy("\n".join(" ".join(line.split()) for line in "".join(parser.parts).splitlines()))
    title = " ".join("".join(parser.title).split())
    return HtmlPage(title=title, canonical=None, markdown=f"# {title}\n\n{text}" if title else text, links=())


class _TextParser(HTMLParser):
    _SKIPPED = frozenset(BOILERPLATE_TAGS)
    _BREAKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skipping = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1
        self._in_title = tag == "title" or self._in_title
        if tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag) -> None:
        if tag in self._SKIPPED:
            self._skipping = max(self._skipping - 1, 0)
        if tag == "title":
            self._in_title = False

    def handle_data(self, data) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skipping:
            self.parts.append(data)


DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def normalize_url(url: str) -> str:
    """The URL without its fragment (the same document), with an empty path written as '/' and a
    default port left out (http://h:80/ is http://h/: one origin, one URL)."""
    url, _ = urldefrag(url)
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if "/" not in rest:
        rest += "/"
    netloc, slash, path = rest.partition("/")
    default = DEFAULT_PORTS.get(scheme)
    if default and netloc.endswith(default):
        netloc = netloc.removesuffix(default)
    return f"{scheme}://{netloc}{slash}{path}"


def _base_href(soup: BeautifulSoup, url: str) -> str:
    base = soup.find("base", href=True)
    return urljoin(url, base["href"]) if base else url


def _canonical(soup: BeautifulSoup, base: str) -> str | None:
    for link in soup.find_all("link", href=True):
        if "canonical" in [r.lower() for r in (link.get("rel") or [])]:
            return normalize_url(urljoin(base, link["href"].strip()))
    return None


def _links(soup: BeautifulSoup, base: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for anchor in soup.find_all("a", href=True):
        href = anchor["href"].strip()
        if (
            href
            and not href.startswith(("#", "mailto:", "javascript:", "tel:"))
            and "nofollow" not in (anchor.get("rel") or [])
        ):
            target = urljoin(base, href)
            if target.startswith(("http://", "https://")):
                seen.setdefault(normalize_url(target), None)
    return tuple(seen)


def _code_language(element) -> str | None:
    code = element.find("code")
    for name in [*(element.get("class") or []), *((code.get("class") or []) if code else [])]:
        if name.startswith(("language-", "lang-")):
            return name.split("-", 1)[1]
    return None


def _tidy(markdown: str) -> str:
    lines = [line.rstrip() for line in markdown.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
