"""Run the ingestion job for some sources through Dagster, and summarise what each run did."""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from sqlalchemy.exc import IntegrityError

from rag_assets import metadata as m
from rag_assets.definitions import INGEST_JOB, build_definitions
from rag_assets.errors import IngestFailed, SourceFailure
from rag_assets.partitions import source_partitions
from rag_assets.runtime.reclaim import ReclaimedRun, process_tags, reclaim_dead_runs
from rag_assets.runtime.source_removal import RemovedSource, remove_unlisted_sources
from rag_assets.settings import Settings

SUMMARY_FIELDS = {
    "raw_pages": {"pages": m.ROW_COUNT},
    "chunks": {"chunks": m.ROW_COUNT},
    "embeddings": {"embedded": m.CHUNKS_EMBEDDED, "tokens": m.TOKENS_EMBEDDED},
    "milvus_collection": {"written": m.ROWS_UPSERTED, "deleted": m.ROWS_DELETED},
}


# What to do, by the class of the error that failed a step. Messages that already say it (no pages,
# a corrupt archive) need no hint.
HINTS = {
    "RetryError": "Check that the service answers (network, status page), then run `rag-assets ingest` again",
    "RateLimitedError": "Wait until then, or set GITHUB_TOKEN for a higher limit, then run again",
    "GitHubError": "Check the source's repo, ref and token, then run again",
    "WebError": "Check the source's URLs, then run again",
    "SourcesFileError": "Fix the sources file, then run again",
    "MilvusUnavailable": "Then run `rag-assets ingest` again",
    "MilvusLiteBusy": "",
    "NoPagesError": "",
    "CorruptArchiveError": "Run `rag-assets ingest` again; if it persists, check the source's archive",
    "MilvusException": "Check MILVUS_URI, MILVUS_TOKEN and the Milvus server, then run again",
    "OutOfMemoryError": "Free memory on the device, or set EMBEDDING_DEVICE=cpu, then run again",
}
DEFAULT_HINT = (
    "Fix the cause, then run `rag-assets ingest` again (rows stored before stay until a run succeeds)"
)


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


# Without --verbose nothing of Dagster reaches the console: the progress display, the warnings and
# one line per failure do; a failed run's whole log goes to a file (`write_run_log`).
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def run_config(*, verbose: bool, reconcile: bool) -> dict:
    config = {} if verbose else dict(QUIET_RUN_CONFIG)
    if reconcile:
        config["ops"] = {"milvus_collection": {"config": {"reconcile": True}}}
    return config


def run_ingest(
    settings: Settings,
    instance: dg.DagsterInstance,
    names: list[str],
    *,
    verbose: bool = False,
    on_reclaimed: Callable[[ReclaimedRun], None] | None = None,
    on_removed: Callable[[RemovedSource], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    resources: Mapping[str, Any] | None = None,
    reconcile: bool = False,
    interrupted: Callable[[], bool] | None = None,
) -> list[SourceSummary]:
    """Register the sources as partitions, then materialize the four assets, one run per contiguous range.

    A failed run does not stop the others: after the last one, `IngestFailed` lists each failed
    source with its step, error and what to do, and names the file that holds the run's log.
    `on_warning` gets the warnings the steps logged (a limit that left pages out, ...).

    Runs execute in this process and carry its host, pid and start time as tags. Before the first
    one, runs of this host whose process died are failed and their pool slots freed
    (rag_assets/runtime/reclaim.py), so a run killed while holding the `gpu` slot cannot block this one.
    Then sources no longer in the sources file are removed, as the sources sensor would
    (rag_assets/runtime/source_removal.py). `resources` replace the definitions' resources by key
    (see build_definitions). `reconcile` compares every row of each source with Milvus instead of
    sending only the recorded changes (milvus_collection's `reconcile` config).
    When `interrupted()` says so after a run (Ctrl-C or SIGTERM reached the process: Dagster failed
    the step under way), KeyboardInterrupt is raised instead of starting the next run.
    """
    for reclaimed in reclaim_dead_runs(instance):
        if on_reclaimed:
            on_reclaimed(reclaimed)
    removed = remove_unlisted_sources(
        settings,
        instance,
        run_config=None if verbose else QUIET_RUN_CONFIG,
        on_failure=lambda result: _removal_failed(instance, settings, result),
    )
    for source in removed:
        if on_removed:
            on_removed(source)
    register_partitions(instance, names)
    job = build_definitions(settings, resources).resolve_job_def(INGEST_JOB)
    ordered = instance.get_dynamic_partitions(source_partitions.name)
    summaries = {n: SourceSummary(n) for n in names}
    failures: list[SourceFailure] = []
    for first, last in contiguous_ranges(ordered, names):
        started = time.perf_counter()
        tags = {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last, **process_tags()}
        result = job.execute_in_process(
            run_config=run_config(verbose=verbose, reconcile=reconcile),
            instance=instance,
            tags=tags,
            raise_on_error=False,
        )
        if interrupted and interrupted():
            raise KeyboardInterrupt
        for message in run_warnings(instance, result.run_id):
            if on_warning:
                on_warning(message)
        if not result.success:
            in_range = ordered[ordered.index(first) : ordered.index(last) + 1]
            log_file = write_run_log(instance, result.run_id, settings.logs_dir)
            failed_sources = _sources_failed(result)
            if failed_sources:  # whole sources failed; the others of the range were written
                failures += [
                    SourceFailure(n, "raw_pages", error.partition(": ")[2] or error, _hint(error), log_file)
                    for n, error in failed_sources.items()
                    if n in summaries
                ]
                _collect(result, summaries, time.perf_counter() - started, skip=set(failed_sources))
                continue
            step, error, hint = _failure(result)
            failures += [SourceFailure(n, step, error, hint, log_file) for n in in_range if n in summaries]
            continue
        elapsed = time.perf_counter() - started
        _collect(result, summaries, elapsed)
    failed = {f.source for f in failures}
    if failures:
        raise IngestFailed(failures, [summaries[n] for n in names if n not in failed])
    return [summaries[n] for n in names]


def run_warnings(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """What the steps of a run logged as warnings (our own `context.log.warning`, not Dagster's)."""
    return [
        entry.user_message
        for entry in instance.all_logs(run_id)
        if not entry.is_dagster_event
        and logging.WARNING <= entry.level < logging.ERROR  # errors are the failure lines' own
        and not entry.user_message.startswith("Dependencies for step")  # the failure says it
    ]


def write_run_log(instance: dg.DagsterInstance, run_id: str, logs_dir: Path) -> Path:
    """Every event of the run, and each error's whole trace, in `logs_dir/<run id>.log`."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    path = logs_dir / f"{run_id}.log"
    lines = []
    for entry in instance.all_logs(run_id):
        when = datetime.fromtimestamp(entry.timestamp).isoformat(timespec="milliseconds")
        lines.append(f"{when} {logging.getLevelName(entry.level)} {entry.step_key or '-'} {entry.message}")
        error = _event_error(entry.dagster_event) if entry.dagster_event else None
        if error is not None:
            lines.append(error.to_string())
    path.write_text("\n".join(lines) + "\n")
    return path


def _event_error(event):
    if event.is_step_failure:
        return event.step_failure_data.error
    if event.is_run_failure or event.event_type_value == "ENGINE_EVENT":
        return getattr(event.event_specific_data, "error", None)
    return None


def _collect(
    result, summaries: dict[str, SourceSummary], elapsed: float, skip: set[str] = frozenset()
) -> None:
    in_run = set()
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        source = materialization.partition
        if source not in summaries or source in skip:
            continue
        in_run.add(source)
        wanted = SUMMARY_FIELDS.get(materialization.asset_key.to_user_string(), {})
        for label, key in wanted.items():
            if key in materialization.metadata:
                summaries[source].counts[label] = int(materialization.metadata[key].value)
    for source in in_run:
        summaries[source].seconds = elapsed


def _removal_failed(instance: dg.DagsterInstance, settings: Settings, result) -> IngestFailed:
    """The cleanup run of sources taken out of the sources file failed: nothing else was run."""
    step, error, hint = _failure(result)
    log_file = write_run_log(instance, result.run_id, settings.logs_dir)
    return IngestFailed([SourceFailure("(removed from the sources file)", step, error, hint, log_file)], [])


def _sources_failed(result) -> dict[str, str]:
    """Sources whose raw_pages recorded `source_failed` in this run (a source-level failure that let
    the others of its run go on), with their one-line error."""
    failed = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if (
            materialization.asset_key.to_user_string() == "raw_pages"
            and m.SOURCE_FAILED in materialization.metadata
        ):
            failed[materialization.partition] = str(materialization.metadata[m.SOURCE_FAILED].value)
    return failed


def _hint(error: str) -> str:
    """What to do for an error recorded as `ClassName: message`."""
    return HINTS.get(error.partition(":")[0].strip(), DEFAULT_HINT)


def _failure(result) -> tuple[str, str, str]:
    """(step, error in one line, what to do) for the first failed step of a run."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and error.message.startswith("dagster._core.errors"):
                error = error.cause
            # The first error that is not Dagster's wrapper is ours; its own cause (e.g. the EOFError
            # under "archive is truncated or corrupt") says less than it does.
            message = error.message.strip().removesuffix(".")
            head, _, rest = message.partition(": ")
            if head.rpartition(".")[2] == error.cls_name:  # "rag_assets.core.pages.NoPagesError: ..."
                message = rest
            return event.step_key, message, HINTS.get(error.cls_name, DEFAULT_HINT)
    return "-", "the run failed before any step", DEFAULT_HINT
