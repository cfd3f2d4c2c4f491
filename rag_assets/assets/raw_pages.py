"""raw_pages: every selected page of one source, as text, with where it came from."""

import time

import dagster as dg
import pandas as pd

from rag_assets.change_detection import forget as forget_unchanged
from rag_assets.core.diffing import diff_pages
from rag_assets.core.pages import PAGE_COLUMNS, PageStats
from rag_assets.core.progress import Reporter
from rag_assets.metadata import COMMIT, SOURCE_FAILED, SOURCE_TIME
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.readers import ReadResult, SourceReader
from rag_assets.resources.readers.local import LocalReader
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource

LOGGED_NOTES = 50


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"python", "github"},
    io_manager_key="parquet_io_manager",
)
def raw_pages(
    context: dg.AssetExecutionContext,
    sources: SourcesResource,
    github: GitHubResource,
    web: WebResource,
    artifacts: ArtifactsResource,
) -> dict[str, pd.DataFrame]:
    """The text of every file a source selects (include/exclude globs), one row per page, read by
    the reader for the source's kind (rag_assets/resources/readers/).

    GitHub sources are read from one tarball pinned to the commit the ref resolved to; when that
    commit and the source's definition are what the last run read, the download is skipped.
    Local sources are read from their folder. Binary files are skipped and counted. Websites are
    crawled with conditional requests. `source_time` records when the content was current: the
    commit's committer date for GitHub, the fetch time otherwise.

    Reading is bounded by the source's `limits`; a limit that left pages out is logged and
    recorded as `limit_hit`. A source with no page fails (`on_empty: keep`, the default, so its
    stored rows stay) or becomes empty (`on_empty: delete`).

    A source that fails (unreachable, refused, a corrupt archive, no pages) is logged, recorded as
    `source_failed`, and passed on as it was read last time; the other sources of the run go on, and
    `milvus_collection` writes them and then fails the run naming the failed ones. When every source
    of the run failed, this step fails with the error.
    """
    readers: dict[str, SourceReader] = {
        "github": github.reader(),
        "local": LocalReader(),
        "web": web.reader(),
    }
    source_named = sources.lookup()
    frames, failed = {}, {}
    progress = Reporter("raw_pages", "pages fetched", log=context.log.info)
    for key in context.partition_keys:
        started = time.perf_counter()
        forget_unchanged(artifacts.base_dir, key)  # the CLI's next run of it is a full one
        previous = artifacts.store.load(context.asset_key.to_user_string(), key)
        try:
            source = source_named(key)
            result = readers[source.kind].read(source, previous, progress)
        except Exception as error:  # one source's failure is its own: the others of the run go on
            failed[key] = error
            frames[key] = previous if previous is not None else pd.DataFrame(columns=PAGE_COLUMNS)
            context.log.error(f"source {key!r} failed; its rows are kept as they are: {error}")
            context.add_asset_metadata(
                {SOURCE_FAILED: f"{type(error).__name__}: {error}", "dagster/row_count": len(frames[key])},
                partition_key=key,
            )
            continue
        log_notes(context, key, result.stats)
        frames[key] = result.pages
        context.add_asset_metadata(
            read_metadata(result, previous, time.perf_counter() - started), partition_key=key
        )
    if failed and len(failed) == len(frames):  # nothing left to write: the step fails as the source did
        raise next(iter(failed.values()))
    progress.finish()
    return frames


def read_metadata(result: ReadResult, previous: pd.DataFrame | None, seconds: float) -> dict:
    """What one source's reading recorded: its counters, limit, changes, commit and time."""
    return {
        **result.stats.as_metadata(),
        SOURCE_TIME: dg.MetadataValue.timestamp(result.source_time),
        "limit_hit": result.stats.limit_hit or "none",
        **diff_pages(previous, result.pages).as_metadata("pages"),
        COMMIT: result.commit,
        "download_skipped": result.pages is previous,  # the reader found nothing changed
        "dagster/row_count": len(result.pages),
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
