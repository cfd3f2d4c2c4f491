"""Evaluate a sensor of the real definitions, apply what it asks for, and run its runs for real."""

import dagster as dg
from dagster._core.definitions.dynamic_partitions_request import (
    AddDynamicPartitionsRequest,
    DeleteDynamicPartitionsRequest,
)

from rag_assets.definitions import INGEST_JOB, build_definitions, build_resources
from rag_assets.runtime.ingest import QUIET_RUN_CONFIG
from rag_assets.settings import Settings


def tick(settings: Settings, instance: dg.DagsterInstance, name: str, cursor: str | None = None):
    """One evaluation of sensor `name`: a SensorResult or a SkipReason, as the daemon would get it."""
    sensor = build_definitions(settings).resolve_sensor_def(name)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=build_resources(settings)
    ) as context:
        return sensor(context)


def apply_partition_requests(instance: dg.DagsterInstance, result) -> None:
    """What the daemon does with a result's dynamic partition requests (build_sensor_context does not)."""
    for request in getattr(result, "dynamic_partitions_requests", None) or []:
        if isinstance(request, AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        elif isinstance(request, DeleteDynamicPartitionsRequest):
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def execute(
    settings: Settings, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    """Launch a requested run in this process, with the request's job, partition, config and tags."""
    job = build_definitions(settings).resolve_job_def(request.job_name or INGEST_JOB)
    run_config = request.run_config or {}
    return job.execute_in_process(
        run_config={**QUIET_RUN_CONFIG, **run_config},
        instance=instance,
        partition_key=request.partition_key,
        tags=dict(request.tags),
        raise_on_error=False,
    )


def runs(result) -> list[dg.RunRequest]:
    return list(getattr(result, "run_requests", None) or [])


def skip_message(result) -> str | None:
    if isinstance(result, dg.SkipReason):
        return result.skip_message
    return getattr(result, "skip_reason", None) and result.skip_reason.skip_message


def cursor_of(result) -> str | None:
    return getattr(result, "cursor", None)
