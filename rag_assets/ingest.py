"""Run the ingestion job for some sources through Dagster, and summarise what each run did."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy.exc import IntegrityError

from rag_assets.definitions import INGEST_JOB, build_definitions
from rag_assets.errors import IngestFailed
from rag_assets.partitions import source_partitions
from rag_assets.reclaim import ReclaimedRun, process_tags, reclaim_dead_runs
from rag_assets.settings import Settings
from rag_assets.source_removal import RemovedSource, remove_unlisted_sources

SUMMARY_FIELDS = {
    "raw_pages": {"pages": "dagster/row_count"},
    "chunks": {"chunks": "dagster/row_count"},
    "embeddings": {"embedded": "chunks_embedded", "tokens": "tokens_embedded"},
    "milvus_collection": {"written": "rows_upserted", "deleted": "rows_deleted"},
}


@dataclass
class SourceSummary:
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def register_partitions(instance: dg.DagsterInstance, names: list[str]) -> None:
    """Add the sources that are not partitions yet. Safe when several processes register the same name
    at once: the instance's unique index refuses the second insert, and the name is then known."""
    for attempt in range(2):
        known = set(instance.get_dynamic_partitions(source_partitions.name))
        new = [n for n in names if n not in known]
        if not new:
            return
        try:
            instance.add_dynamic_partitions(source_partitions.name, new)
            return
        except IntegrityError:
            if attempt:
                raise


def contiguous_ranges(ordered_keys: list[str], wanted: list[str]) -> list[tuple[str, str]]:
    """Wanted keys as (first, last) runs of neighbours in partition order (Dagster ranges are contiguous)."""
    ranges, start, previous = [], None, None
    for key in ordered_keys:
        if key in wanted:
            start = start or key
            previous = key
        elif start:
            ranges.append((start, previous))
            start = None
    if start:
        ranges.append((start, previous))
    return ranges


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_ingest(
    settings: Settings,
    instance: dg.DagsterInstance,
    names: list[str],
    *,
    verbose: bool = False,
    on_reclaimed: Callable[[ReclaimedRun], None] | None = None,
    on_removed: Callable[[RemovedSource], None] | None = None,
) -> list[SourceSummary]:
    """Register the sources as partitions, then materialize the four assets, one run per contiguous range.

    Runs execute in this process and carry its host, pid and start time as tags. Before the first
    one, runs of this host whose process died are failed and their pool slots freed
    (rag_assets/reclaim.py), so a run killed while holding the `gpu` slot cannot block this one.
    Then sources no longer in the sources file are removed, as the sources sensor would
    (rag_assets/source_removal.py).
    """
    for reclaimed in reclaim_dead_runs(instance):
        if on_reclaimed:
            on_reclaimed(reclaimed)
    removed = remove_unlisted_sources(
        settings,
        instance,
        run_config=None if verbose else QUIET_RUN_CONFIG,
        on_failure=lambda result: IngestFailed(_failure_message(result)),
    )
    for source in removed:
        if on_removed:
            on_removed(source)
    register_partitions(instance, names)
    job = build_definitions(settings).resolve_job_def(INGEST_JOB)
    ordered = instance.get_dynamic_partitions(source_partitions.name)
    summaries = {n: SourceSummary(n) for n in names}
    failures = []
    for first, last in contiguous_ranges(ordered, names):
        started = time.perf_counter()
        tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last, **process_tags()}
        result = job.execute_in_process(
            run_config=None if verbose else QUIET_RUN_CONFIG,
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )
        if not result.success:  # the other ranges still run: one source never holds the others up
            failures.append(_failure_message(result))
            continue
        elapsed = time.perf_counter() - started
        _collect(result, summaries, elapsed)
    if failures:
        raise IngestFailed("\n".join(failures))
    return [summaries[n] for n in names]


def _collect(result, summaries: dict[str, SourceSummary], elapsed: float) -> None:
    in_run = set()
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        source = materialization.partition
        if source not in summaries:
            continue
        in_run.add(source)
        wanted = SUMMARY_FIELDS.get(materialization.asset_key.to_user_string(), {})
        for label, key in wanted.items():
            if key in materialization.metadata:
                summaries[source].counts[label] = int(materialization.metadata[key].value)
    for source in in_run:
        summaries[source].seconds = elapsed


def _failure_message(result) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.message.startswith("dagster._core.errors"):
                error = error.cause
            # The first error that is not Dagster's wrapper is ours; its own cause (e.g. the EOFError
            # under "archive is truncated or corrupt") says less than it does.
            return f"step {event.step_key} failed: {error.message.strip()}"
    return "the run failed (see the Dagster UI for its logs)"
