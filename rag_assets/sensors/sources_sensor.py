"""The registry sensor: the sources file is the truth, and local folders are watched for edits.

- a new source becomes a partition and gets its first run;
- a removed source loses its partition, and a `source_cleanup_job` run deletes its rows and files;
- a changed definition (ref, globs, format, URLs...) or, for a local source, a changed folder
  fingerprint (paths, sizes, mtimes) gets a run for that source alone;
- an invalid sources file is a skip: nothing changes.
Never opens Milvus. The cursor holds definition hashes, fingerprints and a tick counter that makes
run keys unique per change while a retried tick still dedupes.
"""

import dagster as dg

from rag_assets.core.registry import RegistryState, definition_hash, folder_fingerprint, plan_registry
from rag_assets.partitions import source_partitions
from rag_assets.resources.sources import SourcesResource
from rag_assets.sensors.source_cleanup import cleanup_run_request, source_cleanup_job
from rag_assets.sources import LocalSource, SourcesFileError

DEFAULT_INTERVAL_SECONDS = 30


def build_sources_sensor(job, interval_seconds: int = DEFAULT_INTERVAL_SECONDS) -> dg.SensorDefinition:
    @dg.sensor(
        jobs=[job, source_cleanup_job],
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Keeps partitions, rows and runs in step with the sources file, and watches local folders."
        ),
    )
    def sources_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource):
        try:
            configured = sources.load()
        except SourcesFileError as error:
            return dg.SkipReason(f"sources file is invalid, nothing changed: {error}")
        definitions = {s.name: definition_hash(s) for s in configured}
        fingerprints = {
            s.name: folder_fingerprint(s.path, s.include, s.exclude)
            for s in configured
            if isinstance(s, LocalSource)
        }
        registered = context.instance.get_dynamic_partitions(source_partitions.name)
        plan = plan_registry(definitions, fingerprints, list(registered), RegistryState.parse(context.cursor))
        cursor = plan.state.dump()
        if plan.is_empty:
            return dg.SensorResult(
                skip_reason=f"{len(configured)} sources, none added, removed or changed", cursor=cursor
            )
        generation = plan.state.generation
        runs = [
            dg.RunRequest(job_name=job.name, partition_key=n, run_key=f"{n}:added@{generation}")
            for n in plan.added
        ]
        runs += [
            dg.RunRequest(job_name=job.name, partition_key=n, run_key=f"{n}:{why}@{generation}")
            for n, why in plan.changed.items()
        ]
        requests = [source_partitions.build_add_request(plan.added)] if plan.added else []
        if plan.removed:
            runs.append(
                cleanup_run_request(plan.removed, run_key=f"cleanup:{','.join(plan.removed)}@{generation}")
            )
            requests.append(source_partitions.build_delete_request(plan.removed))
        context.log.info(f"added {plan.added}, removed {plan.removed}, changed {plan.changed}")
        return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)

    return sources_sensor
