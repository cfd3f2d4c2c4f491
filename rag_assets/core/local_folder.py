"""Read the pages of a folder on this machine."""

import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from rag_assets.core.names import portable_name
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


def iter_folder_pages(
    root: Path,
    *,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    stats: PageStats,
    limits: ReadLimits = DEFAULT_READ_LIMITS,
    unchanged: Callable[[str, str], bool] | None = None,
) -> Iterator[Page]:
    """Yield the selected regular files under root, in path order; symlinks leaving root, devices and
    fifos are skipped. Past `max_pages` pages or `max_total_bytes` read, the remaining selected files
    are counted, not read, and the limit is recorded in `stats.limit_hit`.

    Each page carries its file's `stat_key`. A file for which `unchanged(path, stat_key)` is true is
    not read: it is yielded as a `reused` page with no text (it counts against the limits as before).

    A name that is not valid UTF-8 is selected and stored in its escaped form (core/names.py), and
    its page's `url` is the file's own `file:` URL (which keeps the raw bytes); two files whose names
    are the same once escaped are one path: the first is read, the other counted in `duplicate_skipped`."""
    max_file_bytes, max_pages, max_total_bytes = (
        limits.max_file_bytes,
        limits.max_pages,
        limits.max_total_bytes,
    )
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"local source folder {root} does not exist or is not a folder")
    seen: set[str] = set()
    for path in sorted(_walk(root)):
        raw = path.relative_to(root).as_posix()
        relative = portable_name(raw)
        if not path_selected(relative, include, exclude):
            continue
        if relative in seen:
            stats.skip(
                "duplicate_skipped", relative, "another file has this name once escaped, the first kept"
            )
            continue
        seen.add(relative)
        try:
            if path.is_symlink() and not path.resolve().is_relative_to(root) or not path.resolve().is_file():
                stats.unsafe_skipped += 1
                continue
            if stats.pages >= max_pages or stats.limit_hit:
                stats.pages_not_read += 1
                continue
            stat = stat_key(path)
            if unchanged is not None and unchanged(relative, stat):
                size = path.stat().st_size
                if stats.bytes_read + size <= max_total_bytes:
                    stats.matched, stats.pages, stats.bytes_read = (
                        stats.matched + 1,
                        stats.pages + 1,
                        stats.bytes_read + size,
                    )
                    yield Page(path=relative, text="", content_hash="", stat=stat, reused=True)
                    continue
            data = _read_bounded(path, relative, stats, max_file_bytes, max_total_bytes)
        except (OSError, RuntimeError) as error:  # RuntimeError: "Symlink loop" from Path.resolve
            stats.skip(
                "unreadable_skipped", relative, f"not readable ({type(error).__name__}: {error}), skipped"
            )
            continue
        page = decode_page(relative, data, stats) if data is not None else None
        if page is not None and relative != raw:
            stats.escaped(relative)
            page = replace(page, url=path.as_uri())
        if page is not None:
            yield replace(page, stat=stat)
    if stats.pages_not_read and not stats.limit_hit:
        stats.limit_hit = pages_limit_hit(max_pages, stats.pages_not_read)
    elif stats.limit_hit:
        stats.limit_hit += f"; {stats.pages_not_read} pages not read"


def stat_key(path: Path) -> str:
    """What says a file is as it was without reading it: size, modification and change times (ns) and
    inode. The change time moves on every write, even one that puts the modification time back."""
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _read_bounded(
    path: Path, relative: str, stats: PageStats, max_file_bytes: int, max_total_bytes: int
) -> bytes | None:
    """The file's bytes, or None when it is over a limit (counted and noted). Reads at most the cap,
    even if the file grows between the size check and the read."""
    size = path.stat().st_size
    if size > max_file_bytes:
        stats.skip_too_large(relative, size, max_file_bytes)
        return None
    if stats.bytes_read + size > max_total_bytes:
        stats.limit_hit = total_bytes_limit_hit(max_total_bytes, stats.pages, f"stopped at {relative}")
        stats.pages_not_read += 1
        return None
    with path.open("rb") as file:
        data = file.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        stats.skip_too_large(relative, len(data), max_file_bytes)
        return None
    stats.bytes_read += len(data)
    return data


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        for name in files:
            yield Path(folder, name)
