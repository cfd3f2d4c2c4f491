"""Local sources: a folder on this machine, read as it is now, file by file."""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.pages import PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.sections import detect_format
from rag_assets.core.source_store import KnownPage
from rag_assets.resources.readers.protocol import KEEP, ReadResult, counted, definition_hash, read_result
from rag_assets.sources import LocalSource


class LocalReader:
    """Reads the selected files of a folder (core/local_folder.py) as they are walked. A file whose
    stat (size, times, inode) and source definition are what the store holds is not read again: an
    update reads what changed, whatever the folder's size. A page's `commit` is its file's
    modification time; the source's time is when the reading started."""

    def read(
        self, source: LocalSource, known: Mapping[str, KnownPage], progress: Reporter | None = None
    ) -> ReadResult:
        stats, started = PageStats(), datetime.now(UTC)
        version = f"{definition_hash(source)}:local"

        def unchanged(path: str, stat: str) -> bool:
            page = known.get(path)
            return page is not None and page.stat == stat and page.version == version

        pages = iter_folder_pages(
            source.path,
            include=source.include,
            exclude=source.exclude,
            stats=stats,
            limits=source.limits.read_limits(),
            unchanged=unchanged if known else None,
        )
        return read_result(_rows(source, counted(pages, progress), version), stats, version, started)


def _rows(source: LocalSource, pages, version: str) -> Iterator[dict]:
    for p in pages:
        if p.reused:
            yield {"path": p.path, KEEP: True}
            continue
        yield {
            "source": source.name,
            "path": p.path,
            "url": p.url or (source.path / p.path).as_uri(),
            "text": p.text,
            "content_hash": p.content_hash,
            "commit": _mtime(p.stat),
            "format": detect_format(p.path, p.text, source.format),
            "version": version,
            "stat": p.stat,
        }


def _mtime(stat: str) -> str:
    """The modification time in a stat_key, as an ISO timestamp."""
    mtime_ns = int(stat.split(":")[1]) if stat else 0
    return datetime.fromtimestamp(mtime_ns / 1e9, UTC).isoformat()
