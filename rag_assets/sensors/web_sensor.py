"""The website sensor: a web source gets a run every `recheck_minutes`.

Websites have no cheap "has anything changed" signal, so the run itself is the check: it fetches
every page conditionally (ETag / Last-Modified) and a site that did not change costs a round of
304s and writes nothing. The cursor is JSON `{source: epoch of the last requested run}`; the first
sight of a source only starts its clock (the registry sensor runs new sources).
"""

import json
import time

import dagster as dg

from rag_assets.partitions import source_partitions
from rag_assets.resources.sources import SourcesResource
from rag_assets.sources import SourcesFileError, WebSource


def build_web_sensor(job, interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a re-crawl of each website source every recheck_minutes.",
    )
    def web_sources_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource):
        try:
            configured = sources.load()
        except SourcesFileError as error:
            return dg.SkipReason(f"sources file is invalid, nothing changed: {error}")
        registered = set(context.instance.get_dynamic_partitions(source_partitions.name))
        watched = [s for s in configured if isinstance(s, WebSource) and s.name in registered]
        try:
            known = {k: float(v) for k, v in json.loads(context.cursor or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            known = {}
        now, cursor, runs = time.time(), {}, []
        for source in watched:
            period = source.recheck_minutes * 60
            last = known.get(source.name)
            if last is not None and now - last < period:
                cursor[source.name] = last
                continue
            cursor[source.name] = now
            if last is not None:
                runs.append(
                    dg.RunRequest(
                        partition_key=source.name, run_key=f"{source.name}:recheck:{int(now // period)}"
                    )
                )
        cursor_json = json.dumps(cursor, sort_keys=True)
        if runs:
            return dg.SensorResult(run_requests=runs, cursor=cursor_json)
        return dg.SensorResult(skip_reason=f"{len(watched)} website sources, none due", cursor=cursor_json)

    return web_sources_sensor
