"""Local sources: a folder on this machine, read as it is now."""

import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote_to_bytes, urlsplit

import pandas as pd

from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.pages import PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.sections import detect_format
from rag_assets.resources.readers.protocol import ReadResult, counted, definition_hash, read_result
from rag_assets.sources import LocalSource


class LocalReader:
    """Reads the selected files of a folder (core/local_folder.py); a page's `commit` is its file's
    modification time, the source's time is when the reading started."""

    def read(
        self, source: LocalSource, previous: pd.DataFrame | None, progress: Reporter | None = None
    ) -> ReadResult:
        stats, started = PageStats(), datetime.now(UTC)
        version = f"{definition_hash(source)}:local"
        pages = iter_folder_pages(
            source.path,
            include=source.include,
            exclude=source.exclude,
            stats=stats,
            limits=source.limits.read_limits(),
        )
        pages = list(counted(pages, progress))
        rows = [
            {
                "source": source.name,
                "path": p.path,
                "url": p.url or (source.path / p.path).as_uri(),
                "text": p.text,
                "content_hash": p.content_hash,
                "commit": _mtime(_file(source, p)),
                "format": detect_format(p.path, p.text, source.format),
                "version": version,
            }
            for p in pages
        ]
        return read_result(source, rows, stats, version, started)


def _file(source: LocalSource, page) -> Path:
    """The file a page was read from: its `file:` URL when the reader set one (a name that is not
    valid UTF-8 is stored escaped, core/names.py; the URL keeps its bytes), else the source's path."""
    if page.url.startswith("file:"):
        return Path(os.fsdecode(unquote_to_bytes(urlsplit(page.url).path)))
    return source.path / page.path


def _mtime(file: Path) -> str:
    try:
        return pd.Timestamp(file.stat().st_mtime, unit="s", tz="UTC").isoformat()
    except OSError:  # gone since it was read: its text is what counts
        return ""
