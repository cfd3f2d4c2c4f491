"""milvus_collection: the rows retrieval reads, written to Milvus by the Milvus IO manager."""

import dagster as dg
import pandas as pd

from rag_assets.partitions import source_partitions
from rag_assets.resources.milvus import ROW_FIELDS
from rag_assets.resources.sources import SourcesResource


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"milvus"},
    pool="milvus",
    io_manager_key="milvus_io_manager",
)
def milvus_collection(
    context: dg.AssetExecutionContext,
    chunks: dict[str, pd.DataFrame],
    embeddings: dict[str, pd.DataFrame],
    sources: SourcesResource,
) -> dict[str, pd.DataFrame]:
    """One row per chunk (id, source, path, url, heading, text, content hash, commit, model, vector).

    The Milvus IO manager makes the source's rows exactly these: new and changed rows are upserted
    in batches, then rows of chunks that no longer exist are deleted; other sources are untouched.
    In pool `milvus` (limit 1), because a Milvus Lite file admits one process at a time.

    A source removed from the sources file while its run was on its way here is not written: its
    cleanup run (same pool) has deleted, or will delete, its rows, and must not be undone.
    """
    configured = {source.name for source in sources.load()}  # an invalid file fails here, before any write
    rows = {}
    for key, frame in chunks.items():
        if key not in configured:
            context.log.warning(f"source {key!r} is no longer in {sources.path}: its rows are not written")
            continue
        embedded = embeddings[key].set_index("id")
        missing = set(frame["id"]) - set(embedded.index)
        if missing:
            raise ValueError(
                f"source {key!r}: {len(missing)} chunks have no embedding; re-materialize embeddings"
            )
        rows[key] = frame.assign(
            vector=frame["id"].map(embedded["vector"]), model=frame["id"].map(embedded["model"])
        )[ROW_FIELDS]
    return rows
