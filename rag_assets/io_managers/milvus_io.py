"""The Milvus IO manager: an asset's rows become the source's rows in the collection, in batches.

The collection is the current model's own one behind the serving alias (resources/milvus/aliases.py):
a new model's vectors never mix with the served ones. The first collection of a deployment is
served (the alias created) as soon as it is written; later ones wait for `serving_collection`.
"""

import time

import dagster as dg
import pandas as pd

from rag_assets.core.fitting import fit_rows
from rag_assets.core.freshness import freshness_metadata
from rag_assets.core.progress import Reporter
from rag_assets.metadata import ROWS_DELETED, ROWS_UPSERTED, SOURCE_TIME, latest_metadata
from rag_assets.resources.milvus import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    VARCHAR_LIMITS,
    MilvusResource,
    MilvusStore,
    SyncResult,
)

LOGGED_SKIPS = 20  # rows left out that are named one by one in the log, per source


class MilvusIOManager(dg.ConfigurableIOManager):
    """Writes `{source: rows}`: upserts new and changed rows, then deletes the source's stale ones."""

    milvus: dg.ResourceDependency[MilvusResource]
    batch_rows: int = DEFAULT_BATCH_ROWS
    batch_bytes: int = DEFAULT_BATCH_BYTES

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pd.DataFrame]) -> None:
        store = self.milvus.open()
        identity = self.milvus.model_identity
        properties = self.milvus.collection_properties()
        progress = Reporter("milvus_collection", "rows written", log=context.log.info)
        try:
            for source, rows in obj.items():
                _check_model(source, rows, identity)
                fitted = fit_rows(rows, VARCHAR_LIMITS)  # every value fits its field, or the row is left out
                rows = fitted.rows
                for note in fitted.notes[:LOGGED_SKIPS]:
                    context.log.warning(f"source {source!r}: {note}")
                if len(fitted.notes) > LOGGED_SKIPS:
                    context.log.warning(
                        f"source {source!r}: {len(fitted.notes) - LOGGED_SKIPS} more rows not stored"
                    )
                dimension = len(rows["vector"].iloc[0]) if len(rows) else store.dimension()
                if dimension:
                    store.ensure_collection(dimension, properties)
                result = self._sync(store, source, rows, progress)
                searchable_at = time.time()  # sync_source flushed: the rows are searchable from now on
                context.log.info(f"{source}: {result}")
                _add_partition_metadata(
                    context,
                    source,
                    {
                        **freshness_metadata(_source_time(context, source), searchable_at),
                        ROWS_UPSERTED: result.upserted,
                        ROWS_DELETED: result.deleted,
                        "rows_unchanged": result.unchanged,
                        "rows_skipped": sum(fitted.skipped.values()),
                        "rows_skipped_reasons": dg.MetadataValue.json(dict(fitted.skipped)),
                        "write_batches": result.batches,
                        "dagster/row_count": len(rows),
                        "collection": store.collection,
                    },
                )
            if identity and store.serving_target(self.milvus.collection) is None and store.dimension():
                store.point_alias(self.milvus.collection)
                context.log.info(
                    f"{self.milvus.collection!r} now serves {store.collection!r}, the first collection "
                    "written"
                )
        finally:
            progress.finish()
            store.close()

    def _sync(self, store: MilvusStore, source: str, rows: pd.DataFrame, progress: Reporter) -> SyncResult:
        if len(rows):
            return store.sync_source(
                source,
                rows,
                batch_rows=self.batch_rows,
                batch_bytes=self.batch_bytes,
                on_batch=progress.advance,
            )
        # No rows: a source that became empty under `on_empty: delete` (raw_pages refuses it otherwise).
        deleted = store.delete_source(source)
        if deleted:
            store.flush()
        return SyncResult(upserted=0, deleted=deleted, unchanged=0, batches=1 if deleted else 0)

    def load_input(self, context: dg.InputContext) -> dict[str, pd.DataFrame]:
        store = self.milvus.open()
        try:
            return {key: pd.DataFrame(store.source_rows(key)) for key in context.asset_partition_keys}
        finally:
            store.close()


def _check_model(source: str, rows: pd.DataFrame, identity: str | None) -> None:
    """Vectors go to their own model's collection only: stale embeddings of another model are refused."""
    found = set(rows["model"]) if identity and len(rows) else set()
    if found - {identity}:
        raise ValueError(
            f"source {source!r}: vectors embedded by {', '.join(sorted(found))}, but the configured model is "
            f"{identity}: re-materialize embeddings"
        )


def _source_time(context: dg.OutputContext, source: str) -> float | None:
    """The `source_time` raw_pages recorded for the source (commit or fetch time), as epoch seconds."""
    value = latest_metadata(context.step_context.instance, "raw_pages", source).get(SOURCE_TIME)
    return float(value) if value is not None else None


def _add_partition_metadata(context: dg.OutputContext, partition_key: str, metadata: dict) -> None:
    step_context = context.step_context
    step_context.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition_key)
