"""milvus_collection: the rows retrieval reads, written to Milvus by the Milvus IO manager."""

from collections.abc import Iterator

import dagster as dg

from rag_assets.assets.chunks import chunks
from rag_assets.assets.embeddings import embeddings
from rag_assets.io_managers import SourceChanges
from rag_assets.metadata import SOURCE_FAILED, latest_record, plain_metadata
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.sources import SourcesResource


class MilvusWriteConfig(dg.Config):
    """`reconcile: true` compares every row of the run's sources with Milvus (a full reconciliation),
    instead of sending only the recorded changes."""

    reconcile: bool = False


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"milvus"},
    pool="milvus",
    io_manager_key="milvus_io_manager",
    deps=[chunks, embeddings],
)
def milvus_collection(
    context: dg.AssetExecutionContext,
    sources: SourcesResource,
    artifacts: ArtifactsResource,
    config: MilvusWriteConfig,
) -> Iterator[dg.Output[dict[str, SourceChanges]]]:
    """One row per chunk (id, source, path, url, heading, text, content hash, commit, model, vector).

    The Milvus IO manager makes the source's rows exactly the source store's chunks: the changes the
    store recorded are upserted and deleted in batches; a source whose record and Milvus may
    disagree is reconciled page by page (`reconcile: true` in the run config asks for it).
    Other sources are untouched. In pool `milvus` (limit 1), because a Milvus Lite file admits
    one process at a time.

    A source removed from the sources file while its run was on its way here is not written: its
    cleanup run (same pool) has deleted, or will delete, its rows, and must not be undone.

    A source whose reading failed in this run (`source_failed` on its raw_pages) is not written
    either: its rows stay as they are. The others are written, then the step fails naming it.
    """
    configured = {source.name for source in sources.load()}  # an invalid file fails here, before any write
    failed = failed_sources(context, context.partition_keys)
    changes = {}
    for key in context.partition_keys:
        if key in failed:
            context.add_asset_metadata({SOURCE_FAILED: failed[key], "written": False}, partition_key=key)
            continue
        if key not in configured:
            context.log.warning(f"source {key!r} is no longer in {sources.path}: its rows are not written")
            continue
        path = artifacts.store.source_store_path(key)
        changes[key] = SourceChanges(key, str(path), reconcile=config.reconcile)
    yield dg.Output(changes)  # the IO manager writes the healthy sources now
    if failed:
        raise SourcesFailedError(
            f"{len(failed)} of {len(context.partition_keys)} sources failed and were not written "
            "(their rows are kept): "
            + "; ".join(f"{key!r}: {why}" for key, why in failed.items())
            + (f". Written: {', '.join(repr(k) for k in changes)}" if changes else "")
        )


class SourcesFailedError(RuntimeError):
    """Some sources of a run failed to be read; the others were written."""


def failed_sources(context: dg.AssetExecutionContext, keys: list[str]) -> dict[str, str]:
    """The sources whose raw_pages recorded `source_failed` in this run, with the error."""
    failed = {}
    for key in keys:
        record = latest_record(context.instance, "raw_pages", key)
        if record is not None and record.run_id == context.run_id:
            value = plain_metadata(record.asset_materialization).get(SOURCE_FAILED)
            if value is not None:
                failed[key] = str(value)
    return failed
