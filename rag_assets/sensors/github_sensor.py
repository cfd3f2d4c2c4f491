"""The commit sensor: one conditional request per GitHub source per tick; a moved ref gets one run.

`GET /repos/{o}/{r}/commits/{ref}` with `Accept: application/vnd.github.sha` and
`If-None-Match: "<last sha>"`: 304 means unchanged (free with a token). The cursor is JSON
`{source: sha}`; a run's key is `f"{source}:{sha}"`. The first sight of a source only records its
SHA (the registry sensor runs new sources), unless what was last written is another commit.
Out of rate-limit budget, the tick is a skip that says until when. Never opens Milvus; tokens go in
a header only, never into the cursor, a log line or a run's tags.
"""

import json
from datetime import datetime

import dagster as dg

from rag_assets.metadata import COMMIT, latest_metadata
from rag_assets.partitions import source_partitions
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.readers.github import GitHubError
from rag_assets.resources.retry import RateLimitedError
from rag_assets.resources.sources import SourcesResource
from rag_assets.sources import GitHubSource, SourcesFileError


def build_github_sensor(job, interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a run for each GitHub source whose ref moved to a new commit.",
    )
    def github_commits_sensor(
        context: dg.SensorEvaluationContext, sources: SourcesResource, github: GitHubResource
    ):
        try:
            configured = sources.load()
        except SourcesFileError as error:
            return dg.SkipReason(f"sources file is invalid, nothing changed: {error}")
        registered = set(context.instance.get_dynamic_partitions(source_partitions.name))
        watched = [s for s in configured if isinstance(s, GitHubSource) and s.name in registered]
        known = _parse(context.cursor)
        cursor = {s.name: known[s.name] for s in watched if s.name in known}
        runs, limited, first_seen = [], {}, 0  # limited: api_url -> until
        reader = github.reader()
        for source in watched:
            if source.api_url in limited:
                continue
            try:
                check = reader.check_commit(source, known.get(source.name))
            except RateLimitedError as error:
                limited[source.api_url] = error.until
                continue
            except GitHubError as error:
                context.log.warning(f"{error}; will check again next tick")
                continue
            if check.remaining == 0 and check.reset_at:
                limited[source.api_url] = check.reset_at  # the next request would be refused
            if not check.changed:
                continue
            cursor[source.name] = check.sha
            first_seen += source.name not in known
            if _wanted(context.instance, source.name, known.get(source.name), check.sha):
                runs.append(
                    dg.RunRequest(
                        partition_key=source.name,
                        run_key=f"{source.name}:{check.sha}",
                        tags={"rag_assets/commit": check.sha},
                    )
                )
        cursor_json = json.dumps(cursor, sort_keys=True)
        note = _limited_note(limited)
        if runs:
            if note:
                context.log.warning(note)
            return dg.SensorResult(run_requests=runs, cursor=cursor_json)
        checked = f"{len(watched)} GitHub sources checked, none moved" + (
            f" ({first_seen} seen first, commit recorded)" if first_seen else ""
        )
        return dg.SensorResult(skip_reason=note or checked, cursor=cursor_json)

    return github_commits_sensor


def last_written_commit(instance: dg.DagsterInstance, source: str) -> str | None:
    """The commit raw_pages last read for a source (its `commit` metadata), if it ever ran."""
    value = latest_metadata(instance, "raw_pages", source).get(COMMIT)
    return str(value) if value is not None else None


def _wanted(instance: dg.DagsterInstance, source: str, previous: str | None, sha: str) -> bool:
    """Whether a moved ref needs a run: not when that commit is already written, nor on first sight
    of a source nothing was written for yet (its registration run reads the ref when it starts)."""
    written = last_written_commit(instance, source)
    if written == sha:
        return False
    return previous is not None or written is not None


def _parse(cursor: str | None) -> dict[str, str]:
    try:
        data = json.loads(cursor) if cursor else {}
    except ValueError:
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(data, dict)
        else {}
    )


def _limited_note(limited: dict[str, datetime]) -> str:
    if not limited:
        return ""
    parts = [f"{url} until {until.isoformat(timespec='seconds')}" for url, until in limited.items()]
    return "GitHub rate limit exhausted, not checking again before the reset: " + "; ".join(parts)
