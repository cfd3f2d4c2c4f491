"""What every source reader returns, and the rules all of them share: the page rows (identifiers fit
their Milvus fields, a path offered twice kept once) and the `on_empty` policy."""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from rag_assets.core.fitting import fit_identifier
from rag_assets.core.hashing import content_hash
from rag_assets.core.pages import PAGE_COLUMNS, NoPagesError, Page, PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import KnownPage
from rag_assets.resources.milvus import VARCHAR_LIMITS

KEEP = "keep"  # a row {"path": ..., KEEP: True}: a page the reader knows is unchanged without reading it


@dataclass(frozen=True)
class ReadResult:
    """One reading of one source.

    `pages` yields one dict per page (PAGE_COLUMNS and `stat`), or `{"path", "keep": True}` for a page
    the reader found unchanged without reading it; it is consumed once, as the store writes it, so a
    source is never held whole in memory (the local reader reads file by file). `stats` are complete
    once `pages` is consumed. `pages` is None when the reader found the whole source unchanged and
    downloaded nothing. `version` is "<definition hash>:<commit>" (`local` or `web` in place of a
    commit); `source_time` is when the content was current (a GitHub commit's committer date,
    otherwise when the reading started)."""

    pages: Iterable[dict] | None
    stats: PageStats
    version: str
    source_time: datetime

    @property
    def commit(self) -> str:
        return self.version.rsplit(":", 1)[-1]

    def frame(self):
        """The rows read as a DataFrame (PAGE_COLUMNS): for small sources and tests; consumes `pages`."""
        import pandas as pd

        return pd.DataFrame([r for r in (self.pages or []) if not r.get(KEEP)], columns=PAGE_COLUMNS)


class SourceReader(Protocol):
    """Reads one kind of source; `known` is what the store holds of each page (path -> hash, stat,
    version), empty on a first run. Each page read (or reused) is counted on `progress`, if given."""

    def read(
        self, source, known: Mapping[str, KnownPage], progress: Reporter | None = None
    ) -> ReadResult: ...


def counted(pages: Iterable[Page], progress: Reporter | None) -> Iterator[Page]:
    """The pages as they come, each counted as fetched."""
    for page in pages:
        if progress:
            progress.advance()
        yield page


def definition_hash(source) -> str:
    """A hash of the source's definition: a changed definition is a new version, whatever it read."""
    return content_hash(source.model_dump_json())


def fitted_rows(rows: Iterable[dict], stats: PageStats) -> Iterator[dict]:
    """The rows with a path or URL over its Milvus field shortened so it still names its page
    (core/fitting.py), and a path seen twice kept once (counted in `duplicate_skipped`)."""
    seen: set[str] = set()
    for row in rows:
        if not row.get(KEEP):
            row = {**row, **{n: fit_identifier(str(row[n]), VARCHAR_LIMITS[n]) for n in ("path", "url")}}
        if row["path"] in seen:
            stats.skip("duplicate_skipped", row["path"], "offered more than once, the first one kept")
            stats.pages -= 1
            continue
        seen.add(row["path"])
        yield row


def read_result(rows: Iterable[dict], stats: PageStats, version: str, source_time: datetime) -> ReadResult:
    """The rows as a ReadResult, after the rules every kind shares (fitted_rows)."""
    return ReadResult(fitted_rows(rows, stats), stats, version, source_time)


def check_not_empty(source, pages: int, stats: PageStats) -> None:
    """Raise NoPagesError when a source has no page and its policy is to keep its rows."""
    if pages or source.on_empty == "delete":
        return
    raise NoPagesError(
        f"source {source.name!r} has no pages (include {list(source.include)}, exclude "
        f"{list(source.exclude)}; "
        f"skipped: {stats.binary_skipped} binary, {stats.too_large_skipped} too large, "
        f"{stats.unsafe_skipped} unsafe). "
        "Its rows in Milvus are kept (on_empty: keep): fix the source, or set on_empty: delete to "
        "remove them."
    )
