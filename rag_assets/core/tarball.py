"""Read the pages of a repository tarball as a stream: nothing is extracted, nothing touches disk.

Memory stays bounded whatever the archive holds: gzip is inflated in small blocks, a file over
`max_file_bytes` is skipped without being read (its bytes still pass through the inflater, and
count against `max_total_bytes`), and tar headers that tarfile would read whole (pax and GNU
long-name records) are refused past MAX_HEADER_BYTES.
"""

import gzip
import tarfile
import zlib
from collections.abc import Iterator
from os import PathLike
from typing import IO

from rag_assets.core.names import is_portable, portable_name
from rag_assets.core.pages import (
    DEFAULT_READ_LIMITS,
    Page,
    PageStats,
    ReadLimits,
    decode_page,
    pages_limit_hit,
    path_selected,
    total_bytes_limit_hit,
)

READ_BLOCK_BYTES = 64 * 1024  # how much tarfile asks the inflater for at a time
MAX_HEADER_BYTES = 1024 * 1024  # a pax record or GNU long name; real ones are well under 64 KiB
_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)


class CorruptArchiveError(RuntimeError):
    """The archive ended early, is not a gzipped tar, or has a header no real archive has."""


class _TotalBytesReached(Exception):
    """The inflated archive grew past max_total_bytes."""


class _CountingReader:
    """The inflated archive, counted; reading past `limit` bytes raises _TotalBytesReached."""

    def __init__(self, raw: IO[bytes], limit: int):
        self._raw, self._limit, self.count = raw, limit, 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self.count + len(data) > self._limit:
            raise _TotalBytesReached()
        self.count += len(data)
        return data


class _BoundedTarInfo(tarfile.TarInfo):
    """A TarInfo that refuses a header record tarfile would otherwise read into memory whole."""

    def _proc_member(self, archive):
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            raise tarfile.ReadError(
                f"a {self.size}-byte header record is over the {MAX_HEADER_BYTES}-byte limit"
            )
        return super()._proc_member(archive)


def archive_path(member_name: str) -> str | None:
    """The path inside the repository: the archive's top folder stripped, a name that is not valid
    UTF-8 escaped (core/names.py); None if unsafe or a folder."""
    parts = member_name.replace("\\", "/").split("/")
    if member_name.startswith("/") or ".." in parts:
        return None
    inner = [p for p in parts[1:] if p not in ("", ".")]
    return portable_name("/".join(inner)) or None


def iter_tar_pages(
    stream: IO[bytes],
    *,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    stats: PageStats,
    limits: ReadLimits = DEFAULT_READ_LIMITS,
) -> Iterator[Page]:
    """Yield the selected regular files of a gzipped tar stream as pages; links and devices never are.
    A path the archive holds twice is read once (the first; the later ones counted in
    `duplicate_skipped`).

    After `max_pages` pages the rest of the archive is only counted (`pages_not_read`); past
    `max_total_bytes` inflated bytes reading stops. Either is recorded in `stats.limit_hit`. An
    archive that ends early or is damaged anywhere raises CorruptArchiveError: never a shorter source.
    """
    max_file_bytes, max_pages, max_total_bytes = (
        limits.max_file_bytes,
        limits.max_pages,
        limits.max_total_bytes,
    )
    inflated = _CountingReader(gzip.GzipFile(fileobj=stream, mode="rb"), max_total_bytes)
    seen: set[str] = set()
    try:
        with tarfile.open(
            fileobj=inflated, mode="r|", tarinfo=_BoundedTarInfo, bufsize=READ_BLOCK_BYTES
        ) as archive:
            for member in archive:
                page = _member_page(archive, member, include, exclude, stats, max_file_bytes, max_pages, seen)
                if page is not None:
                    yield page
            _check_ends_cleanly(archive)
    except _TotalBytesReached:
        rest = "the rest of the archive not read"
        stats.limit_hit = total_bytes_limit_hit(max_total_bytes, stats.pages, rest)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        raise CorruptArchiveError(f"archive is truncated or corrupt: {error}") from error
    finally:
        stats.bytes_read += inflated.count
    if stats.pages_not_read and not stats.limit_hit:
        stats.limit_hit = pages_limit_hit(max_pages, stats.pages_not_read)


def _check_ends_cleanly(archive: tarfile.TarFile) -> None:
    """tarfile ends its iteration quietly at a damaged header, which would make a shorter source
    (and delete the rows of the pages after it): after the end-of-archive marker only zeros may
    follow. Reading to the end also makes gzip verify its checksum."""
    while block := archive.fileobj.read(READ_BLOCK_BYTES):
        if block.count(0) != len(block):
            raise CorruptArchiveError(
                "archive is truncated or corrupt: a damaged entry header ended it early"
            )


def _member_page(archive, member, include, exclude, stats, max_file_bytes, max_pages, seen) -> Page | None:
    if member.isdir():
        return None
    path = archive_path(member.name)
    if path is None:
        stats.unsafe_skipped += 1
        return None
    if not path_selected(path, include, exclude):
        return None
    if not member.isreg():  # symlinks, hard links, devices, fifos: never followed
        stats.unsafe_skipped += 1
        return None
    if path in seen:  # one path, one page: the first is kept
        stats.skip("duplicate_skipped", path, "in the archive more than once, the first one kept")
        return None
    seen.add(path)
    if stats.pages >= max_pages:
        stats.pages_not_read += 1
        return None
    if member.size > max_file_bytes:
        stats.skip_too_large(path, member.size, max_file_bytes)
        return None
    data = archive.extractfile(member).read(max_file_bytes + 1)
    page = decode_page(path, data, stats)
    if page is not None and not is_portable(member.name):
        stats.escaped(path)
    return page


def tarball_files(tarball_path: str | PathLike[str]) -> dict[str, bytes | str]:
    """The regular files of an archive with one top folder, by path with that folder stripped."""
    files: dict[str, bytes | str] = {}
    with tarfile.open(tarball_path, mode="r:*") as archive:
        for member in archive:
            parts = [p for p in member.name.split("/") if p not in ("", ".")]
            if member.isreg() and len(parts) > 1:
                files["/".join(parts[1:])] = archive.extractfile(member).read()  # type: ignore[union-attr]
    return files
