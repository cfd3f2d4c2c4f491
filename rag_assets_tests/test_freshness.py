"""Freshness: every write records the source time, when its rows became searchable and the lag;
`sources_are_fresh` warns for a source staler than its max_staleness_hours, and only for it."""

import time
from datetime import datetime

import dagster as dg
import httpx
import pytest

from rag_assets.core.freshness import SourceFreshness
from rag_assets.definitions import INGEST_JOB, build_definitions
from rag_assets.runtime.ingest import QUIET_RUN_CONFIG, run_ingest
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import latest_metadata, write_sources


def test_staleness_is_the_write_lag_or_how_long_failing_runs_kept_a_change_waiting():
    now = 10_000.0
    fresh = SourceFreshness("a", limit_hours=1, source_time=now - 600, searchable_at=now - 500)
    assert fresh.staleness_seconds(now) == 100 and not fresh.is_stale(now)
    late = SourceFreshness("b", limit_hours=1, source_time=now - 9000, searchable_at=now - 5000)
    assert late.staleness_seconds(now) == 4000 and late.is_stale(now)
    failing = SourceFreshness(
        "c", limit_hours=1, source_time=now - 600, searchable_at=now - 500, failed_since=now - 7200
    )
    assert failing.staleness_seconds(now) == 7200 and failing.is_stale(now)
    assert SourceFreshness("d", 1, None, None).is_stale(now)


def test_github_write_records_commit_time_searchable_time_and_numeric_lag(settings, instance):
    with FakeGitHub() as github:
        github.add_repo("acme/frob", {"docs/index.md": "# Frob\n\nThe frobnicator frobs.\n"})
        committed = httpx.get(
            f"{github.url}/repos/acme/frob/commits/main", headers={"User-Agent": "t"}
        ).json()["commit"]["committer"]["date"]
        write_sources(
            settings.sources_file,
            [
                {
                    "name": "frob",
                    "kind": "github",
                    "repo": "acme/frob",
                    "include": ["**/*.md"],
                    "api_url": github.url,
                },
            ],
        )
        run_ingest(settings, instance, ["frob"])

    written = latest_metadata(instance, "milvus_collection", "frob")
    commit_time = datetime.fromisoformat(committed.replace("Z", "+00:00")).timestamp()
    assert datetime.fromisoformat(written["source_time"]).timestamp() == commit_time
    assert latest_metadata(instance, "raw_pages", "frob")["source_time"] == commit_time
    lag = written["freshness_lag_seconds"]
    assert isinstance(lag, float) and 0 <= lag < 120
    assert abs(datetime.fromisoformat(written["searchable_at"]).timestamp() - (commit_time + lag)) <= 1


@pytest.mark.slow
def test_check_warns_for_the_source_whose_runs_keep_failing_past_its_limit(
    settings, instance, workdir, docs_folder
):
    broken = workdir / "broken"
    broken.mkdir()
    (broken / "page.md").write_text("# Page\n\nSoon unreadable.\n")
    notes = {"name": "notes", "kind": "local", "path": str(docs_folder)}
    write_sources(settings.sources_file, [notes, {"name": "broken", "kind": "local", "path": str(broken)}])
    run_ingest(settings, instance, ["notes", "broken"])
    defs = build_definitions(settings)
    assert all(e.passed for e in _check(defs, instance).get_asset_check_evaluations())

    gone = workdir / "gone"  # every run of `broken` now fails in raw_pages, and its limit is 0.72 s
    write_sources(
        settings.sources_file,
        [notes, {"name": "broken", "kind": "local", "path": str(gone), "max_staleness_hours": 0.0002}],
    )
    failed = defs.resolve_job_def(INGEST_JOB).execute_in_process(
        instance=instance, partition_key="broken", run_config=QUIET_RUN_CONFIG, raise_on_error=False
    )
    assert not failed.success
    time.sleep(1.0)
    [evaluation] = _check(defs, instance).get_asset_check_evaluations()

    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == "stale: broken"
    assert (
        evaluation.metadata["stale_sources"].value == 1 and evaluation.metadata["sources_checked"].value == 2
    )
    assert "| notes |" in evaluation.metadata["report"].value


def _check(defs, instance):
    return defs.resolve_job_def("freshness_check_job").execute_in_process(
        instance=instance, run_config=QUIET_RUN_CONFIG
    )
