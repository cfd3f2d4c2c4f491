"""Sitemaps (sitemaps.org protocol): the page URLs of a `<urlset>`, the child sitemaps of a
`<sitemapindex>`.
"""

import xml.etree.ElementTree as ElementTree
import zlib
from dataclasses import dataclass

GZIP_MAGIC = b"\x1f\x8b"
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the protocol's own limit for one (uncompressed) file


class SitemapError(ValueError):
    """The document is not a sitemap we can read."""


@dataclass(frozen=True)
class Sitemap:
    pages: tuple[str, ...]  # <urlset><url><loc>, in document order
    sitemaps: tuple[str, ...]  # <sitemapindex><sitemap><loc>


def parse_sitemap(data: bytes) -> Sitemap:
    """Read a sitemap or sitemap index, gzipped or not; namespaces are ignored, order is kept."""
    data = gunzip_bounded(data)
    if len(data) > MAX_SITEMAP_BYTES:
        raise SitemapError(f"sitemap is over {MAX_SITEMAP_BYTES} bytes")
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        raise SitemapError(f"not a sitemap: {error}") from None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise SitemapError(f"not a sitemap: root element is <{kind}>")
    locations = tuple(
        loc.text.strip()
        for entry in root
        for loc in entry
        if _local(loc.tag) == "loc" and loc.text and loc.text.strip()
    )
    return (
        Sitemap(pages=locations, sitemaps=()) if kind == "urlset" else Sitemap(pages=(), sitemaps=locations)
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def gunzip_bounded(data: bytes, limit: int = MAX_SITEMAP_BYTES) -> bytes:
    """Gunzip `data` when it is gzip, stopping after `limit` + 1 bytes (a bomb cannot fill memory)."""
    if data[:2] != GZIP_MAGIC:
        return data
    try:
        return zlib.decompressobj(wbits=31).decompress(data, limit + 1)
    except zlib.error as error:
        raise SitemapError(f"corrupt gzip: {error}") from None
