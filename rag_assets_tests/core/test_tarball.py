"""Tarballs are read as a stream: only regular files inside the archive's top folder become pages."""

import io
import tarfile

import pytest

from rag_assets.core.pages import PageStats, ReadLimits
from rag_assets.core.tarball import CorruptArchiveError, archive_path, iter_tar_pages


def make_tarball(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def entry(
    name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info, data


def read(archive: bytes, **limits) -> tuple[dict[str, str], PageStats]:
    stats, limits = PageStats(), ReadLimits(**limits)
    pages = iter_tar_pages(io.BytesIO(archive), include=("**/*.md",), exclude=(), stats=stats, limits=limits)
    return {p.path: p.text for p in pages}, stats


def test_hostile_entries_are_skipped_and_counted():
    archive = make_tarball(
        [
            entry("top/docs/ok.md", b"# ok"),
            entry("top/../../evil.md", b"# escape"),
            entry("/etc/abs.md", b"# absolute"),
            entry("top/docs/link.md", kind=tarfile.SYMTYPE, link="/etc/passwd"),
            entry("top/docs/hard.md", kind=tarfile.LNKTYPE, link="top/docs/ok.md"),
            entry("top/docs/dev.md", kind=tarfile.CHRTYPE),
            entry("top/docs/fifo.md", kind=tarfile.FIFOTYPE),
        ]
    )
    pages, stats = read(archive)
    assert pages == {"docs/ok.md": "# ok"}
    assert stats.unsafe_skipped == 6


def test_binary_oversized_and_bad_utf8_files_are_counted():
    archive = make_tarball(
        [
            entry("top/a.md", b"\x00\x01binary"),
            entry("top/b.md", b"x" * 2000),
            entry("top/c.md", "caf\u00e9".encode("latin-1")),
            entry("top/d.md", b""),
        ]
    )
    pages, stats = read(archive, max_file_bytes=1000)
    assert pages == {"c.md": "caf\ufffd", "d.md": ""}
    assert (stats.binary_skipped, stats.too_large_skipped, stats.decoded_with_replacement) == (1, 1, 1)


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a tarball at all"])
def test_truncated_or_garbage_archive_raises_a_clear_error(damage):
    archive = make_tarball([entry("top/a.md", b"# a" * 5000), entry("top/b.md", b"# b")])
    with pytest.raises(CorruptArchiveError, match="truncated or corrupt"):
        read(damage(archive))


def test_archive_path_strips_the_top_folder_only():
    assert archive_path("acme-frob-1234567/docs/a.txt") == "docs/a.txt"
    assert archive_path("acme-frob-1234567/") is None
    assert archive_path("x/../y") is None
