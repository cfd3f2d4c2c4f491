"""source_cleanup_job: what removing a source from the sources file deletes, done in a run.

The registry sensor may not open Milvus (Milvus Lite admits one process per file, and the sensor
daemon is another process), so it requests this job instead. Its one op sits in pool `milvus`,
serialized with every write step, and deletes only rows whose `source` is a removed name.
"""

import dagster as dg

from rag_assets.change_detection import forget as forget_unchanged
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.milvus import MilvusResource
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource
from rag_assets.sources import SOURCE_NAME_PATTERN

SOURCE_CLEANUP_JOB = "source_cleanup_job"


class CleanupConfig(dg.Config):
    sources: list[str]


@dg.op(
    pool="milvus",
    description="Delete the rows, parquet artifacts and web cache of sources removed from the sources file.",
)
def remove_sources(
    context: dg.OpExecutionContext,
    config: CleanupConfig,
    sources: SourcesResource,
    milvus: MilvusResource,
    web: WebResource,
    artifacts: ArtifactsResource,
) -> None:
    """A source that is back in the sources file by the time this runs is left alone: re-adding
    it must never race a queued cleanup into deleting its fresh rows. An invalid sources file
    fails the op before anything is deleted."""
    configured = {source.name for source in sources.load()}
    bad = [name for name in config.sources if not SOURCE_NAME_PATTERN.match(name)]
    if bad:
        raise ValueError(f"not source names: {bad}")
    store = milvus.open()
    try:
        for name in config.sources:
            if name in configured:
                context.log.info(f"{name}: back in the sources file; nothing deleted")
                continue
            rows = store.delete_source(name)
            files = _remove_artifacts(artifacts, name) + int(web.forget(name))
            context.log.info(f"{name}: deleted {rows} rows and {files} cached files")
            context.add_output_metadata({f"{name}_rows_deleted": rows, f"{name}_files_deleted": files})
    finally:
        store.close()


def _remove_artifacts(artifacts: ArtifactsResource, name: str) -> int:
    return artifacts.store.remove(name) + int(forget_unchanged(artifacts.base_dir, name))


@dg.job(
    name=SOURCE_CLEANUP_JOB, description="Remove what a source deleted from the sources file left behind."
)
def source_cleanup_job():
    remove_sources()


def cleanup_run_request(names: list[str], run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        job_name=SOURCE_CLEANUP_JOB,
        run_key=run_key,
        run_config={"ops": {"remove_sources": {"config": {"sources": names}}}},
        tags={"rag_assets/removed_sources": ",".join(names)},
    )
