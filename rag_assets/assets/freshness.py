"""sources_are_fresh: a check on milvus_collection that warns when a source is staler than its limit.

Reads metadata only (never loads a partition, never opens Milvus): for each registered source, the
latest milvus_collection write's `source_time` and `searchable_at`, and the runs for that source
that failed since. Staleness is the larger of that write's lag and how long failing runs have kept
a change waiting (core/freshness.py); the limit is the source's `max_staleness_hours`.
Non-blocking, severity WARN. It runs in `freshness_check_job` (hourly, `freshness_schedule`), not
as a step of ingest runs.
"""

import time
from datetime import UTC, datetime

import dagster as dg

from rag_assets.assets.milvus_collection import milvus_collection
from rag_assets.core.freshness import SourceFreshness
from rag_assets.metadata import SEARCHABLE_AT, SOURCE_TIME, latest_record, plain_metadata
from rag_assets.partitions import source_partitions
from rag_assets.resources.sources import SourcesResource
from rag_assets.sources import SourcesFileError

FRESHNESS_CHECK_JOB = "freshness_check_job"


@dg.asset_check(
    asset=milvus_collection,
    blocking=False,
    description="Warns when a source is staler than its max_staleness_hours.",
)
def sources_are_fresh(
    context: dg.AssetCheckExecutionContext, sources: SourcesResource
) -> dg.AssetCheckResult:
    try:
        configured = sources.load()
    except SourcesFileError as error:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN, description=str(error))
    registered = set(context.instance.get_dynamic_partitions(source_partitions.name))
    now = time.time()
    states = [
        source_freshness(context.instance, s.name, s.max_staleness_hours)
        for s in configured
        if s.name in registered
    ]
    stale = [s.source for s in states if s.is_stale(now)]
    known = [v for s in states if (v := s.staleness_seconds(now)) is not None]
    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"stale: {', '.join(stale)}" if stale else f"{len(states)} sources within their limits",
        metadata={
            "sources_checked": len(states),
            "stale_sources": len(stale),
            "max_staleness_seconds": round(max(known, default=0.0), 3),
            "report": dg.MetadataValue.md(_report(states, now)),
        },
    )


def source_freshness(instance: dg.DagsterInstance, source: str, limit_hours: float) -> SourceFreshness:
    """What the instance knows about one source's last write, and the failures since."""
    record = latest_record(instance, milvus_collection.key.to_user_string(), source)
    if record is None:
        return SourceFreshness(source, limit_hours, None, None)
    metadata = plain_metadata(record.asset_materialization)
    searchable_at = _epoch(metadata.get(SEARCHABLE_AT)) or record.timestamp
    failures = instance.get_run_records(
        dg.RunsFilter(
            tags={"dagster/partition": source},
            statuses=[dg.DagsterRunStatus.FAILURE],
            created_after=datetime.fromtimestamp(searchable_at, UTC),
        )
    )
    failed_since = min((r.create_timestamp.timestamp() for r in failures), default=None)
    return SourceFreshness(
        source, limit_hours, _epoch(metadata.get(SOURCE_TIME)), searchable_at, failed_since
    )


def _epoch(raw) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, (int, float)):
        return float(raw)
    try:
        return datetime.fromisoformat(str(raw)).timestamp()
    except ValueError:
        return None


def _report(states: list[SourceFreshness], now: float) -> str:
    lines = ["| source | staleness (h) | limit (h) | fresh |", "| --- | --- | --- | --- |"]
    for state in states:
        staleness = state.staleness_seconds(now)
        shown = "never written" if staleness is None else f"{staleness / 3600:.2f}"
        lines.append(
            f"| {state.source} | {shown} | {state.limit_hours:g} | {'no' if state.is_stale(now) else 'yes'} |"
        )
    return "\n".join(lines)
