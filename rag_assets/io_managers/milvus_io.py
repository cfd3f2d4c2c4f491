"""The Milvus IO manager: a source's stored chunks become its rows in the collection, in batches.

The collection is the current model's own one behind the serving alias (resources/milvus/aliases.py):
a new model's vectors never mix with the served ones. The first collection of a deployment is
served (the alias created) as soon as it is written; later ones wait for `serving_collection`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from rag_assets.core.freshness import freshness_metadata
from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import SourceStore, damage_named
from rag_assets.io_managers.milvus_sync import Writer, stored_model, sync_source
from rag_assets.metadata import ROWS_DELETED, ROWS_UPSERTED, SOURCE_TIME, latest_metadata
from rag_assets.resources.milvus import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    MilvusResource,
)


@dataclass(frozen=True)
class SourceChanges:
    """What milvus_collection hands its IO manager for one source: the store whose recorded changes
    (or, with `reconcile`, whose every chunk) Milvus must take. A handle, not the rows: the IO
    manager streams them in batches."""

    source: str
    store_path: str
    reconcile: bool = False


class MilvusIOManager(dg.ConfigurableIOManager):
    """Writes `{source: SourceChanges}`: upserts the new and changed rows in batches, deletes the gone
    ones, and reconciles a source whose record and Milvus disagree (io_managers/milvus_sync.py)."""

    milvus: dg.ResourceDependency[MilvusResource]
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES

    def handle_output(self, context: dg.OutputContext, obj: dict[str, SourceChanges]) -> None:
        milvus = self.milvus.open()
        identity = self.milvus.model_identity
        properties = self.milvus.collection_properties()
        progress = Reporter("milvus_collection", "rows written", log=context.log.info)
        try:
            for source, changes in obj.items():
                with (
                    damage_named(Path(changes.store_path), source),
                    SourceStore(Path(changes.store_path)) as store,
                ):
                    model = stored_model(store, identity)
                    dimension = store.vector_dimension(model) or milvus.dimension()
                    if dimension:
                        milvus.ensure_collection(dimension, properties)
                    writer = Writer(milvus, store, source, model, self.batch_rows, self.batch_bytes, progress)
                    result = sync_source(writer, reconcile=changes.reconcile)
                    rows = store.chunk_count()
                    access = store.access_metadata()
                searchable_at = time.time()  # the sync flushed: the rows are searchable from now on
                context.log.info(
                    f"{source}: {result.upserted} upserted, {result.deleted} deleted, "
                    f"{result.unchanged} unchanged"
                    + (f" (reconciled: {result.reconciled})" if result.reconciled else "")
                )
                _add_partition_metadata(
                    context,
                    source,
                    {
                        **freshness_metadata(_source_time(context, source), searchable_at),
                        ROWS_UPSERTED: result.upserted,
                        ROWS_DELETED: result.deleted,
                        "rows_unchanged": result.unchanged,
                        "rows_read_from_milvus": result.rows_read,
                        "reconciled": result.reconciled or "no",
                        "write_batches": result.batches,
                        "dagster/row_count": rows,
                        "collection": milvus.collection,
                        **access,
                    },
                )
            if identity and milvus.serving_target(self.milvus.collection) is None and milvus.dimension():
                milvus.point_alias(self.milvus.collection)
                context.log.info(
                    f"{self.milvus.collection!r} now serves {milvus.collection!r}, the first collection "
                    "written"
                )
        finally:
            progress.finish()
            milvus.close()

    def load_input(self, context: dg.InputContext) -> dict[str, int]:
        """Each source's row count in the collection (nothing loads the rows themselves)."""
        milvus = self.milvus.open()
        try:
            return {key: milvus.count_source(key) for key in context.asset_partition_keys}
        finally:
            milvus.close()


def _source_time(context: dg.OutputContext, source: str) -> float | None:
    """The `source_time` raw_pages recorded for the source (commit or fetch time), as epoch seconds."""
    value = latest_metadata(context.step_context.instance, "raw_pages", source).get(SOURCE_TIME)
    return float(value) if value is not None else None


def _add_partition_metadata(context: dg.OutputContext, partition_key: str, metadata: dict) -> None:
    step_context = context.step_context
    step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition_key)
