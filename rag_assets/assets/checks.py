"""Asset checks: no empty chunks, vectors as wide as the collection, Milvus rows = the source's chunks.

The checks are not partitioned: Dagster's partitioned checks cannot report the partitions of a
range run (one step for many sources). A check covers the sources of the run it is in, or every
registered source when launched on its own, and reads what it needs from the source stores and
Milvus, at a cost that follows the run's change: the new chunks (those Milvus has yet to take) are
checked for text, the stored vectors' widths are one indexed query, and Milvus's row count per
source is compared with the store's (every id when the counts differ, or when the check runs on
its own). The two checks
that open Milvus sit in pool `milvus`, like the writer: one process at a time on a Milvus Lite file.
"""

import dagster as dg
import pandas as pd
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from rag_assets.assets import chunks, embeddings, milvus_collection
from rag_assets.core.source_store import WRITE, SourceStore
from rag_assets.metadata import latest_record
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.milvus import MilvusResource, MilvusStore

SAMPLE_IDS = 5  # ids listed per problem, so a failure names what to look at without flooding the UI
NOT_MATERIALIZED = "not materialized"


def empty_chunk_ids(frame: pd.DataFrame) -> list[str]:
    """Ids of the chunks whose text is empty or only whitespace."""
    text = frame["text"].fillna("").astype(str)
    return frame.loc[text.str.strip() == "", "id"].tolist()


def _listed(values) -> str:
    return ", ".join(map(str, sorted(values)))


def checked_sources(context: dg.AssetCheckExecutionContext) -> list[str]:
    """The run's sources (its partition, or its range in partition order); every registered source
    when the run names none. Read from the run's tags: a run of checks alone carries the partition
    tag but no partitions definition, so `context.partition_keys` is not available there.
    """
    tags = context.run.tags
    registered = list(context.instance.get_dynamic_partitions(source_partitions.name))
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    if ASSET_PARTITION_RANGE_START_TAG in tags:
        first, last = tags[ASSET_PARTITION_RANGE_START_TAG], tags[ASSET_PARTITION_RANGE_END_TAG]
        if first in registered and last in registered:
            return registered[registered.index(first) : registered.index(last) + 1]
        return sorted({first, last})
    return registered


def stored(artifacts: ArtifactsResource, source: str) -> SourceStore | None:
    """The source's store, or None when the source was never materialized."""
    path = artifacts.store.source_store_path(source)
    return SourceStore(path) if path.exists() else None


def result(passed: bool, failure: str, per_source: dict[str, str], **counts) -> dg.AssetCheckResult:
    """A check result with a one-line description, a per-source table and plottable counts."""
    table = "\n".join(
        ["| source | result |", "| --- | --- |", *(f"| {s} | {r} |" for s, r in per_source.items())]
    )
    checked = sum(r != NOT_MATERIALIZED for r in per_source.values())
    return dg.AssetCheckResult(
        passed=passed,
        description=f"{checked} source(s) checked" if passed else failure,
        metadata={"sources": dg.MetadataValue.md(table), "sources_checked": checked, **counts},
    )


def _sample(ids: list[str]) -> str:
    more = f" and {len(ids) - SAMPLE_IDS} more" if len(ids) > SAMPLE_IDS else ""
    return ", ".join(f"`{i}`" for i in ids[:SAMPLE_IDS]) + more


@dg.asset_check(
    asset=chunks,
    name="no_empty_chunks",
    blocking=True,
    description="Every chunk has text: an empty chunk would embed only its breadcrumb. Blocks embeddings.",
)
def no_empty_chunks(
    context: dg.AssetCheckExecutionContext, artifacts: ArtifactsResource
) -> dg.AssetCheckResult:
    per_source, total, empty = {}, 0, []
    for source in checked_sources(context):
        store = stored(artifacts, source)
        if store is None:
            per_source[source] = NOT_MATERIALIZED
            continue
        with store:
            frame = pd.DataFrame(
                [c for ids in store.pending(WRITE) for c in store.chunks_of(ids, ("id", "text"))],
                columns=["id", "text"],
            )
        found = empty_chunk_ids(frame)
        total, empty = total + len(frame), empty + found
        per_source[source] = (
            f"{len(found)} empty: {_sample(found)}" if found else f"{len(frame)} new chunks, none empty"
        )
    return result(
        not empty,
        f"{len(empty)} empty chunk(s): {_sample(empty)}",
        per_source,
        chunks_checked=total,
        empty_chunks=len(empty),
    )


@dg.asset_check(
    asset=embeddings,
    name="vector_dimension_matches_collection",
    blocking=True,
    pool="milvus",
    description=(
        "Every vector has the Milvus collection's dimension (any one dimension while the collection "
        "does not exist yet). Blocks the write: a new model needs a new MILVUS_COLLECTION."
    ),
)
def vector_dimension_matches_collection(
    context: dg.AssetCheckExecutionContext,
    artifacts: ArtifactsResource,
    milvus: MilvusResource,
) -> dg.AssetCheckResult:
    store = milvus.open()
    try:
        expected = store.dimension()
    finally:
        store.close()
    per_source, found = {}, {}
    for source in checked_sources(context):
        store = stored(artifacts, source)
        if store is None:
            per_source[source] = NOT_MATERIALIZED
            continue
        with store:
            found[source] = store.vector_dimensions()
        per_source[source] = f"dimension {_listed(found[source]) or 'none (no chunks)'}"
    seen = set().union(*found.values())
    if expected is not None:
        wrong = [s for s, dims in found.items() if dims - {expected}]
        failure = (
            f"vectors of {', '.join(wrong)} are {_listed(seen - {expected})}-dimensional, the "
            "collection's are "
            f"{expected}: set MILVUS_COLLECTION to a new name for this model"
        )
    else:
        wrong = [s for s, dims in found.items() if dims] if len(seen) > 1 else []
        failure = f"vectors of several dimensions ({_listed(seen)}) for one new collection"
    counts = {"collection_exists": expected is not None}
    if expected is not None:
        counts["collection_dimension"] = expected
    if len(seen) == 1:
        counts["vector_dimension"] = next(iter(seen))
    return result(not wrong, failure, per_source, **counts)


@dg.asset_check(
    asset=milvus_collection,
    name="rows_match_chunks",
    pool="milvus",
    description=(
        "Milvus holds exactly one row per chunk of each source: none missing, no orphans left behind."
    ),
)
def rows_match_chunks(
    context: dg.AssetCheckExecutionContext,
    artifacts: ArtifactsResource,
    milvus: MilvusResource,
) -> dg.AssetCheckResult:
    per_source, missing, orphans, rows = {}, [], [], 0
    store = milvus.open()
    try:
        for source in checked_sources(context):
            source_store = stored(artifacts, source)
            if source_store is None:
                per_source[source] = NOT_MATERIALIZED
                continue
            with source_store:
                chunk_count, row_count = source_store.chunk_count(), store.count_source(source)
                by_count = chunk_count == row_count and written_in_this_run(context, source)
                lost, extra = ([], []) if by_count else differences(source_store, store, source)
            missing, orphans, rows = missing + lost, orphans + extra, rows + row_count
            per_source[source] = (
                f"{row_count} rows for {chunk_count} chunks; missing {len(lost)}, orphans {len(extra)}"
            )
    finally:
        store.close()
    problems = []
    if missing:
        problems.append(f"{len(missing)} chunk(s) without a row: {_sample(missing)}")
    if orphans:
        problems.append(f"{len(orphans)} orphan row(s): {_sample(orphans)}")
    failure = "; ".join(problems)
    return result(
        not missing and not orphans,
        failure,
        per_source,
        milvus_rows=rows,
        missing_rows=len(missing),
        orphan_rows=len(orphans),
    )


def written_in_this_run(context: dg.AssetCheckExecutionContext, source: str) -> bool:
    """Whether milvus_collection wrote the source in this run: its writer has just compared Milvus's
    row count with the store's and reconciled on a difference, so equal counts suffice here. A check
    run on its own (the UI's Execute) compares every id."""
    record = latest_record(context.instance, "milvus_collection", source)
    return record is not None and record.run_id == context.run.run_id


def differences(source_store: SourceStore, milvus: MilvusStore, source: str) -> tuple[list[str], list[str]]:
    """(missing, orphans) of one source, when the counts already say they differ: Milvus's ids are
    paged through and looked up in the store, so memory follows the page."""
    orphans = []
    source_store.start_reconciling()
    for page in milvus.iter_source_rows(source, ("id",)):
        ids = [r["id"] for r in page]
        known = source_store.known_chunk_ids(ids)
        source_store.mark_present(list(known))
        orphans += [i for i in ids if i not in known]
    missing = [i for ids in source_store.ids_not_present() for i in ids]
    return sorted(missing), sorted(orphans)


ingestion_checks = [no_empty_chunks, vector_dimension_matches_collection, rows_match_chunks]
