"""raw_pages: every selected page of one source, as text, with where it came from."""

import functools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from rag_assets.change_detection import forget as forget_unchanged
from rag_assets.core.artifacts import ArtifactStore
from rag_assets.core.pages import PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import PageChanges, SourceStore, SourceStoreDamaged, quarantine
from rag_assets.metadata import COMMIT, SOURCE_FAILED, SOURCE_TIME
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.readers import ReadResult, SourceReader
from rag_assets.resources.readers.local import LocalReader
from rag_assets.resources.readers.protocol import KEEP, check_not_empty
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource

LOGGED_NOTES = 50


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"python", "github", "sqlite"},
)
def raw_pages(
    context: dg.AssetExecutionContext,
    sources: SourcesResource,
    github: GitHubResource,
    web: WebResource,
    artifacts: ArtifactsResource,
) -> dg.MaterializeResult:
    """The text of every file a source selects (include/exclude globs), one row per page in the
    source's store (`pages`, core/source_store.py), read by the reader for the source's kind
    (rag_assets/resources/readers/) and written as it is read, in one transaction per source.

    GitHub sources are read from one tarball pinned to the commit the ref resolved to; when that
    commit and the source's definition are what the store holds, the download is skipped.
    Local sources are walked; a file whose size, times and inode are unchanged is not read again.
    Binary files are skipped and counted. Websites are crawled with conditional requests.
    `source_time` records when the content was current: the commit's committer date for GitHub,
    the fetch time otherwise.

    Reading is bounded by the source's `limits`; a limit that left pages out is logged and
    recorded as `limit_hit`. A source with no page fails (`on_empty: keep`, the default, so its
    stored rows stay) or becomes empty (`on_empty: delete`).

    A source that fails (unreachable, refused, a corrupt archive, no pages) is logged, recorded as
    `source_failed`, and keeps its stored pages as they were; the other sources of the run go on, and
    `milvus_collection` writes them and then fails the run naming the failed ones. When every source
    of the run failed, this step fails with the error. A store SQLite cannot read is moved aside
    (logged, `store_repaired`) and the source read in full into a new one.
    """
    readers: dict[str, SourceReader] = {
        "github": github.reader(),
        "local": LocalReader(),
        "web": web.reader(),
    }
    source_named = sources.lookup()
    failed = {}
    progress = Reporter("raw_pages", "pages fetched", log=context.log.info)
    for key in context.partition_keys:
        started = time.perf_counter()
        forget_unchanged(artifacts.base_dir, key)  # the CLI's next run of it is a full one
        try:
            source = source_named(key)
            read = functools.partial(readers[source.kind].read, source, progress=progress)
            result, changes, access, moved = read_into_store(artifacts.store, source, read)
        except Exception as error:  # one source's failure is its own: the others of the run go on
            failed[key] = error
            context.log.error(f"source {key!r} failed; its rows are kept as they are: {error}")
            context.add_asset_metadata(
                {
                    SOURCE_FAILED: f"{type(error).__name__}: {error}",
                    "dagster/row_count": stored_pages(artifacts, key),
                },
                partition_key=key,
            )
            continue
        if moved:
            context.log.warning(
                f"source {key!r}: its store could not be read, moved to {moved}; read in full"
            )
        log_notes(context, key, result.stats)
        context.add_asset_metadata(
            {
                **read_metadata(result, changes, time.perf_counter() - started),
                "store_repaired": str(moved) if moved else "no",
                **access,
            },
            partition_key=key,
        )
    if failed and len(failed) == len(context.partition_keys):  # nothing left to write: fail as the source did
        raise next(iter(failed.values()))
    progress.finish()
    return dg.MaterializeResult()


def read_into_store(
    artifacts: ArtifactStore, source, read: Callable[[dict], ReadResult]
) -> tuple[ReadResult, PageChanges, dict, Path | None]:
    """Read the source into its store: (the reading, what changed, the store's row counts, where a
    damaged store was moved). A store SQLite cannot read, at open or on any query, is moved aside
    and the source read again in full into a new one."""
    path = artifacts.source_store_path(source.name)
    store, moved = artifacts.open_source(source.name)
    while True:
        try:
            with store:
                result = read(store.known_pages())
                return result, write_pages(store, source, result), store.access_metadata(), moved
        except sqlite3.DatabaseError:
            if moved:  # already a new store: this is not the file's damage
                raise
            moved = quarantine(path)
            store = SourceStore(path)


def stored_pages(artifacts: ArtifactsResource, source: str) -> int:
    """How many pages the source's store holds (0 when it has none, or one that cannot be read)."""
    try:
        with SourceStore(artifacts.store.source_store_path(source)) as store:
            return store.page_count()
    except (sqlite3.Error, SourceStoreDamaged):
        return 0


def write_pages(store: SourceStore, source, result: ReadResult) -> PageChanges:
    """The reading into the store, page by page as it arrives; the pages it did not offer go. None
    pages (nothing downloaded) keeps every stored page. An empty reading of an `on_empty: keep`
    source raises before anything is committed."""
    if result.pages is None:
        return PageChanges(unchanged=store.page_count())
    with store.replacing_pages() as writer:
        for row in result.pages:
            if row.get(KEEP):
                writer.keep(row["path"])
            else:
                writer.add({**row, "stat": row.get("stat", "")})
        writer.flush()
        check_not_empty(source, writer.changes.total, result.stats)
    return writer.changes


def read_metadata(result: ReadResult, changes: PageChanges, seconds: float) -> dict:
    """What one source's reading recorded: its counters, limit, changes, commit and time."""
    return {
        **result.stats.as_metadata(),
        SOURCE_TIME: dg.MetadataValue.timestamp(result.source_time),
        "limit_hit": result.stats.limit_hit or "none",
        **changes.as_metadata("pages"),
        COMMIT: result.commit,
        "download_skipped": result.pages is None,  # the reader found nothing changed
        "dagster/row_count": changes.total,
        "seconds": round(seconds, 3),
    }


def log_notes(context: dg.AssetExecutionContext, key: str, stats: PageStats) -> None:
    """The limit hit and each item left out, one line each (the first LOGGED_NOTES of them)."""
    if stats.limit_hit:
        context.log.warning(f"source {key!r}: {stats.limit_hit}")
    for note in stats.notes[:LOGGED_NOTES]:
        if note != stats.limit_hit:
            context.log.warning(f"source {key!r}: {note}")
    if len(stats.notes) > LOGGED_NOTES:
        context.log.warning(f"source {key!r}: {len(stats.notes) - LOGGED_NOTES} more items left out")
