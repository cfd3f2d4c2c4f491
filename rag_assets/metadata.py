"""The metadata one step records and another module reads: its keys, named once, and the reader.

Each key is written by one asset (or its IO manager) and read elsewhere (the CLI's summary, the
freshness asset, the sensors, the serving alias), so a rename here is a rename everywhere. Dagster is
imported inside the readers only: the CLI's no-op path imports this module and must not load dagster.
"""

from typing import Any

ROW_COUNT = "dagster/row_count"  # every asset: rows of the partition's output

# raw_pages
SOURCE_FAILED = "source_failed"  # a source whose reading failed in this run: the one-line error
SOURCE_TIME = "source_time"  # commit or fetch time of what was read
COMMIT = "commit"  # the commit read (GitHub sources)

# embeddings
CHUNKS_EMBEDDED = "chunks_embedded"  # chunks the model embedded (not taken from the cache)
TOKENS_EMBEDDED = "tokens_embedded"

# milvus_collection (written by its IO manager)
ROWS_UPSERTED = "rows_upserted"
ROWS_DELETED = "rows_deleted"
SEARCHABLE_AT = "searchable_at"  # when the rows became searchable (ISO time)

# retrieval_eval
COLLECTION = "collection"  # the collection evaluated
MEETS_THRESHOLD = "meets_threshold"

# serving_collection
ALIAS = "alias"
SERVING = "serving"
PREVIOUS = "previous"
CANDIDATE = "candidate"
MOVED = "moved"
REASON = "reason"
WAITING_FOR = "waiting_for"
BELOW_THRESHOLD = "below_threshold"


def latest_record(instance, asset: str, partition: str):
    """The newest materialization record (run id, timestamp, materialization) of one partition of an
    asset, or None if it was never materialized."""
    import dagster as dg

    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    return records[0] if records else None


def plain_metadata(materialization) -> dict[str, Any]:
    """A materialization's metadata as plain values (a timestamp as epoch seconds)."""
    return {key: value.value for key, value in materialization.metadata.items()}


def latest_metadata(instance, asset: str, partition: str) -> dict[str, Any]:
    """The metadata of the newest materialization of one partition of an asset, as plain values;
    empty if it was never materialized."""
    record = latest_record(instance, asset, partition)
    return plain_metadata(record.asset_materialization) if record is not None else {}
