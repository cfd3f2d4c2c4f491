"""raw_pages: every selected page of one source, as text, with where it came from."""

import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from rag_assets.core.diffing import diff_pages
from rag_assets.core.fitting import fit_identifier
from rag_assets.core.hashing import content_hash
from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.pages import PAGE_COLUMNS, NoPagesError, PageStats
from rag_assets.core.sections import detect_format
from rag_assets.io_managers.parquet import PartitionedParquetIOManager
from rag_assets.partitions import source_partitions
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.milvus import VARCHAR_LIMITS
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource
from rag_assets.sources import GitHubSource, LocalSource, WebSource

SOURCE_FAILED = "source_failed"  # raw_pages metadata of a source whose reading failed in this run
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
    parquet_io_manager: dg.ResourceParam[PartitionedParquetIOManager],
) -> dict[str, pd.DataFrame]:
    """The text of every file a source selects (include/exclude globs), one row per page.

    GitHub sources are read from one tarball pinned to the commit the ref resolved to; when that
    commit and the source's definition are what the last run read, the download is skipped.
    Local sources are read from their folder. Binary files are skipped and counted. Websites are
    crawled with conditional requests (resources/web.py). `source_time` records when the content
    was current: the commit's committer date for GitHub, the fetch time otherwise.

    Reading is bounded by the source's `limits`; a limit that left pages out is logged and
    recorded as `limit_hit`. A source with no page fails (`on_empty: keep`, the default, so its
    stored rows stay) or becomes empty (`on_empty: delete`).

    A source that fails (unreachable, refused, a corrupt archive, no pages) is logged, recorded as
    `source_failed`, and passed on as it was read last time; the other sources of the run go on, and
    `milvus_collection` writes them and then fails the run naming the failed ones. When every source
    of the run failed, this step fails with the error.
    """
    frames, failed = {}, {}
    for key in context.partition_keys:
        started = time.perf_counter()
        previous = parquet_io_manager.load_previous(context.asset_key, key)
        try:
            source = sources.get(key)
            frame, stats, version, extra = fetch_pages(source, github, previous, web)
            check_not_empty(source, frame, stats)
        except Exception as error:  # one source's failure is its own: the others of the run go on
            failed[key] = error
            frames[key] = previous if previous is not None else pd.DataFrame(columns=PAGE_COLUMNS)
            context.log.error(f"source {key!r} failed; its rows are kept as they are: {error}")
            context.add_asset_metadata(
                {SOURCE_FAILED: f"{type(error).__name__}: {error}", "dagster/row_count": len(frames[key])},
                partition_key=key,
            )
            continue
        log_notes(context, key, stats)
        frames[key] = frame
        context.add_asset_metadata(
            {
                **stats.as_metadata(),
                **extra,
                "limit_hit": stats.limit_hit or "none",
                **diff_pages(previous, frame).as_metadata("pages"),
                "commit": version.rsplit(":", 1)[-1],
                "download_skipped": previous is not None and frame is previous,
                "dagster/row_count": len(frame),
                "seconds": round(time.perf_counter() - started, 3),
            },
            partition_key=key,
        )
    if failed and len(failed) == len(frames):  # nothing left to write: the step fails as the source did
        raise next(iter(failed.values()))
    return frames


def log_notes(context: dg.AssetExecutionContext, key: str, stats: PageStats) -> None:
    """The limit hit and each item left out, one line each (the first LOGGED_NOTES of them)."""
    if stats.limit_hit:
        context.log.warning(f"source {key!r}: {stats.limit_hit}")
    for note in stats.notes[:LOGGED_NOTES]:
        if note != stats.limit_hit:
            context.log.warning(f"source {key!r}: {note}")
    if len(stats.notes) > LOGGED_NOTES:
        context.log.warning(f"source {key!r}: {len(stats.notes) - LOGGED_NOTES} more items left out")


def fetch_pages(
    source, github: GitHubResource, previous: pd.DataFrame | None, web: WebResource | None = None
) -> tuple[pd.DataFrame, PageStats, str, dict]:
    """All pages of one source as a frame, the counts of what was skipped, the version read, and extra
    metadata."""
    stats = PageStats()
    definition = content_hash(source.model_dump_json())
    fetched_at = datetime.now(UTC)
    if isinstance(source, GitHubSource):
        with github.client(source) as client:
            info = github.resolve_commit_info(source, client)
            commit, extra = info.sha, {"source_time": dg.MetadataValue.timestamp(info.committed_at)}
            version = f"{definition}:{commit}"
            if previous is not None and (previous["version"] == version).all() and len(previous):
                return previous, stats, version, extra
            pages = list(github.iter_pages(source, commit, client, stats))
        page_commit = {p.path: commit for p in pages}
    elif isinstance(source, LocalSource):
        limits = source.limits.read_limits()
        pages = list(
            iter_folder_pages(
                source.path,
                include=source.include,
                exclude=source.exclude,
                stats=stats,
                max_file_bytes=limits.max_file_bytes,
                max_pages=limits.max_pages,
                max_total_bytes=limits.max_total_bytes,
            )
        )
        page_commit = {p.path: _mtime(source, p.path) for p in pages}
        version, extra = f"{definition}:local", {"source_time": dg.MetadataValue.timestamp(fetched_at)}
    elif isinstance(source, WebSource):
        return _web_pages(source, web, definition)
    else:  # pragma: no cover - the sources file admits no other kind
        raise TypeError(f"unsupported source kind {source.kind!r}")
    rows = [
        {
            "source": source.name,
            "path": p.path,
            "url": p.url or (source.path / p.path).as_uri(),
            "text": p.text,
            "content_hash": p.content_hash,
            "commit": page_commit[p.path],
            "format": detect_format(p.path, p.text, source.format),
            "version": version,
        }
        for p in pages
    ]
    return page_frame(rows, stats), stats, version, extra


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


def _mtime(source: LocalSource, path: str) -> str:
    try:
        return pd.Timestamp((source.path / path).stat().st_mtime, unit="s", tz="UTC").isoformat()
    except OSError:  # gone since it was read: its text is what counts
        return ""


def _web_pages(
    source: WebSource, web: WebResource | None, definition: str
) -> tuple[pd.DataFrame, PageStats, str, dict]:
    if web is None:
        raise TypeError(f"source {source.name!r} is a website but no web resource was given")
    result = web.crawl(source)
    version = f"{definition}:web"
    rows = [
        {
            "source": source.name,
            "path": p.path,
            "url": p.url,
            "text": p.text,
            "content_hash": p.content_hash,
            "commit": p.version,
            "format": "markdown",
            "version": version,
        }
        for p in result.pages
    ]
    frame = page_frame(rows, result.stats)
    extra = {"source_time": dg.MetadataValue.timestamp(result.fetched_at)}
    return frame, result.stats, version, extra
