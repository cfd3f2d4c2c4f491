"""Sources taken out of the sources file, removed by `rag-assets ingest` as the sources sensor would.

The sources file is the registry for the CLI too, with or without a daemon. Before its runs, an
ingest compares the file with the registered partitions (`core.registry.plan_registry`, as the
sensor does) and, for every registered source the file no longer lists, executes the sensor's own
`source_cleanup_job` run (its rows in every collection of the serving name, its parquet artifacts
and web cache), then deletes its partition. So the source is no longer searchable, and
`serving_collection` no longer waits for it before moving the alias to a new model.

A cleanup run that fails raises before any partition is deleted: the next ingest tries again.
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from rag_assets.core.registry import RegistryState, definition_hash, plan_registry
from rag_assets.definitions import build_definitions
from rag_assets.partitions import source_partitions
from rag_assets.runtime.reclaim import process_tags
from rag_assets.sensors.source_cleanup import SOURCE_CLEANUP_JOB, cleanup_run_request
from rag_assets.settings import Settings
from rag_assets.sources import load_sources


@dataclass(frozen=True)
class RemovedSource:
    """A source no longer in the sources file: what its cleanup run deleted."""

    name: str
    rows: int
    files: int

    def describe(self, sources_file) -> str:
        return (
            f"removed source {self.name!r} (no longer in {sources_file}): "
            f"{self.rows} Milvus rows, {self.files} files, its partition"
        )


def unlisted_sources(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """Registered sources the sources file no longer lists, in partition order."""
    definitions = {s.name: definition_hash(s) for s in load_sources(settings.sources_file)}
    registered = list(instance.get_dynamic_partitions(source_partitions.name))
    return plan_registry(definitions, {}, registered, RegistryState()).removed


def remove_unlisted_sources(
    settings: Settings,
    instance: dg.DagsterInstance,
    *,
    run_config: dict | None = None,
    on_failure: Callable[[dg.ExecuteInProcessResult], Exception] | None = None,
) -> list[RemovedSource]:
    """Execute one `source_cleanup_job` run for the unlisted sources, then delete their partitions."""
    names = unlisted_sources(settings, instance)
    if not names:
        return []
    request = cleanup_run_request(names, run_key="rag-assets ingest")
    job = build_definitions(settings).resolve_job_def(SOURCE_CLEANUP_JOB)
    result = job.execute_in_process(
        run_config={**(run_config or {}), **request.run_config},
        instance=instance,
        tags={**request.tags, **process_tags()},
        raise_on_error=False,
    )
    if not result.success:
        raise on_failure(result) if on_failure else RuntimeError(f"{SOURCE_CLEANUP_JOB} failed for {names}")
    metadata = _output_metadata(result)
    for name in names:
        instance.delete_dynamic_partition(source_partitions.name, name)
    return [
        RemovedSource(name, metadata.get(f"{name}_rows_deleted", 0), metadata.get(f"{name}_files_deleted", 0))
        for name in names
    ]


def _output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, int]:
    found = {}
    for event in result.all_events:
        if event.is_successful_output:
            found.update({k: int(v.value) for k, v in event.step_output_data.metadata.items()})
    return found
