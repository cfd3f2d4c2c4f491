"""raw_pages: every selected page of one source, as text, with where it came from."""

import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from rag_assets.core.diffing import diff_pages
from rag_assets.core.hashing import content_hash
from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.pages import PAGE_COLUMNS, NoPagesError, PageStats
from rag_assets.core.progress import Reporter
from rag_assets.core.sections import detect_format
from rag_assets.io_managers.parquet import PartitionedParquetIOManager
from rag_assets.partitions import source_partitions
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource
from rag_assets.sources import GitHubSource, LocalSource, WebSource


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
    recorded as `limit_hit`. A source with no page fails the step (`on_empty: keep`, the default,
    so its stored rows stay) or becomes empty (`on_empty: delete`).
    """
    frames = {}
    progress = Reporter("raw_pages", "pages fetched", log=context.log.info)
    for key in context.partition_keys:
        started = time.perf_counter()
        previous = parquet_io_manager.load_previous(context.asset_key, key)
        source = sources.get(key)
        frame, stats, version, extra = fetch_pages(source, github, previous, web, progress)
        check_not_empty(source, frame, stats)
        if stats.limit_hit:
            context.log.warning(f"source {key!r}: {stats.limit_hit}")
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
    progress.finish()
    return frames


def fetch_pages(
    source,
    github: GitHubResource,
    previous: pd.DataFrame | None,
    web: WebResource | None = None,
    progress: Reporter | None = None,
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
                if progress:
                    progress.advance(len(previous), reused=True)
                return previous, stats, version, extra
            pages = list(_counted(github.iter_pages(source, commit, client, stats), progress))
        page_commit = {p.path: commit for p in pages}
    elif isinstance(source, LocalSource):
        limits = source.limits.read_limits()
        pages = list(
            _counted(
                iter_folder_pages(
                    source.path,
                    include=source.include,
                    exclude=source.exclude,
                    stats=stats,
                    max_file_bytes=limits.max_file_bytes,
                    max_pages=limits.max_pages,
                    max_total_bytes=limits.max_total_bytes,
                ),
                progress,
            )
        )
        page_commit = {p.path: _mtime(source, p.path) for p in pages}
        version, extra = f"{definition}:local", {"source_time": dg.MetadataValue.timestamp(fetched_at)}
    elif isinstance(source, WebSource):
        frame, stats, version, extra = _web_pages(source, web, definition)
        if progress:
            progress.advance(len(frame))
        return frame, stats, version, extra
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
    return pd.DataFrame(rows, columns=PAGE_COLUMNS), stats, version, extra


def _counted(pages, progress: Reporter | None):
    """The pages as they come, each counted as fetched."""
    for page in pages:
        if progress:
            progress.advance()
        yield page


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
    return pd.Timestamp((source.path / path).stat().st_mtime, unit="s", tz="UTC").isoformat()


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
    stats = PageStats(
        matched=len(rows) + result.stats.too_large,
        pages=len(rows),
        too_large_skipped=result.stats.too_large,
        bytes_read=result.stats.bytes_read,
        limit_hit=result.stats.limit_hit,
        notes=result.stats.notes,
    )
    extra = {**result.stats.as_metadata(), "source_time": dg.MetadataValue.timestamp(result.fetched_at)}
    return pd.DataFrame(rows, columns=PAGE_COLUMNS), stats, version, extra
