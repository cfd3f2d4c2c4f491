"""What every source reader returns, and the rules all of them share: the page frame (identifiers fit
their Milvus fields, a path offered twice kept once) and the `on_empty` policy."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import pandas as pd

from rag_assets.core.fitting import fit_identifier
from rag_assets.core.hashing import content_hash
from rag_assets.core.pages import PAGE_COLUMNS, NoPagesError, Page, PageStats
from rag_assets.core.progress import Reporter
from rag_assets.resources.milvus import VARCHAR_LIMITS


@dataclass(frozen=True)
class ReadResult:
    """One reading of one source.

    `pages` has PAGE_COLUMNS, one row per page; it is the `previous` frame itself when the reader
    found the source unchanged and downloaded nothing. `version` is "<definition hash>:<commit>"
    (`local` or `web` in place of a commit); `source_time` is when the content was current (a
    GitHub commit's committer date, otherwise when the reading started)."""

    pages: pd.DataFrame
    stats: PageStats
    version: str
    source_time: datetime

    @property
    def commit(self) -> str:
        return self.version.rsplit(":", 1)[-1]


class SourceReader(Protocol):
    """Reads one kind of source; `previous` is the frame the last run read, or None. Each page read
    (or reused) is counted on `progress`, if given."""

    def read(self, source, previous: pd.DataFrame | None, progress: Reporter | None = None) -> ReadResult: ...


def counted(pages: Iterable[Page], progress: Reporter | None) -> Iterator[Page]:
    """The pages as they come, each counted as fetched."""
    for page in pages:
        if progress:
            progress.advance()
        yield page


def definition_hash(source) -> str:
    """A hash of the source's definition: a changed definition is a new version, whatever it read."""
    return content_hash(source.model_dump_json())


def read_result(
    source, rows: list[dict], stats: PageStats, version: str, source_time: datetime
) -> ReadResult:
    """The rows as a ReadResult, after the rules every kind shares (page_frame, check_not_empty)."""
    frame = page_frame(rows, stats)
    check_not_empty(source, frame, stats)
    return ReadResult(frame, stats, version, source_time)


def page_frame(rows: list[dict], stats: PageStats) -> pd.DataFrame:
    """The pages as a frame: a path or URL over its Milvus field is shortened so it still names its
    page (core/fitting.py), and a path seen twice is kept once (counted in `duplicate_skipped`)."""
    frame = pd.DataFrame(rows, columns=PAGE_COLUMNS)
    for name in ("path", "url"):
        frame[name] = [fit_identifier(str(value), VARCHAR_LIMITS[name]) for value in frame[name]]
    repeated = frame["path"].duplicated(keep="first")
    for path in frame.loc[repeated, "path"]:
        stats.skip("duplicate_skipped", path, "offered more than once, the first one kept")
    stats.pages -= int(repeated.sum())
    return frame[~repeated].reset_index(drop=True)


def check_not_empty(source, frame: pd.DataFrame, stats: PageStats) -> None:
    """Raise NoPagesError when a source has no page and its policy is to keep its rows."""
    if len(frame) or source.on_empty == "delete":
        return
    raise NoPagesError(
        f"source {source.name!r} has no pages (include {list(source.include)}, exclude "
        f"{list(source.exclude)}; "
        f"skipped: {stats.binary_skipped} binary, {stats.too_large_skipped} too large, "
        f"{stats.unsafe_skipped} unsafe). "
        "Its rows in Milvus are kept (on_empty: keep): fix the source, or set on_empty: delete to "
        "remove them."
    )
