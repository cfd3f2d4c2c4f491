"""A run whose process is SIGKILLed (scenario 6): the next run is not blocked by the slot it held,
the killed run is marked failed, the collection is never half-written, and the re-run is exact.

Without rag_assets/runtime/reclaim.py the killed in-process run would stay STARTED holding pool `gpu`'s one
slot, and every later run would wait for that slot forever: no daemon watches CLI runs, and Dagster's
run monitoring only frees the slots of runs that already finished.
"""

import os
import signal
import socket
import subprocess
import sys

import dagster as dg
import psutil
import pytest
from dagster._core.utils import make_new_run_id

from rag_assets.runtime.ingest import run_ingest
from rag_assets.runtime.instance import ensure_pools
from rag_assets.runtime.reclaim import HOST_TAG, PID_STARTED_TAG, PID_TAG, process_tags, reclaim_dead_runs
from rag_assets_tests.helpers import write_distinct_docs, write_sources
from rag_assets_tests.reliability.helpers import (
    collection_rows,
    expected_rows,
    folder_pages,
    slot_holders,
    start_ingest,
    stop_group,
    wait_for_step_start,
)


def dead_process_tags() -> dict[str, str]:
    """Tags of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(child.pid).create_time()
    child.kill()
    child.wait()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(child.pid), PID_STARTED_TAG: f"{started:.2f}"}


def add_started_run(instance: dg.DagsterInstance, tags: dict[str, str]) -> str:
    run = dg.DagsterRun(
        job_name="ingest_job", run_id=make_new_run_id(), status=dg.DagsterRunStatus.STARTED, tags=tags
    )
    instance.add_run(run)
    return run.run_id


@pytest.mark.slow
def test_reclaim_fails_only_runs_of_this_host_whose_process_is_gone_and_frees_their_slots(instance):
    ensure_pools(instance)
    mine = process_tags()
    dead = add_started_run(instance, dead_process_tags())
    recycled = add_started_run(
        instance, {**mine, PID_STARTED_TAG: f"{float(mine[PID_STARTED_TAG]) - 1000:.2f}"}
    )
    alive = add_started_run(instance, mine)
    elsewhere = add_started_run(instance, {**dead_process_tags(), HOST_TAG: "another-host"})
    untagged = add_started_run(instance, {})
    storage = instance.event_log_storage
    assert storage.claim_concurrency_slot("gpu", dead, "embeddings").is_claimed
    assert not storage.claim_concurrency_slot("gpu", recycled, "embeddings").is_claimed  # waits behind `dead`
    assert storage.claim_concurrency_slot("milvus", elsewhere, "milvus_collection").is_claimed

    reclaimed = reclaim_dead_runs(instance)

    assert {(r.run_id, r.pools) for r in reclaimed} == {(dead, ("gpu",)), (recycled, ("gpu",))}
    status = {
        run_id: instance.get_run_by_id(run_id).status
        for run_id in (dead, recycled, alive, elsewhere, untagged)
    }
    assert status == {
        dead: dg.DagsterRunStatus.FAILURE,
        recycled: dg.DagsterRunStatus.FAILURE,
        alive: dg.DagsterRunStatus.STARTED,
        elsewhere: dg.DagsterRunStatus.STARTED,
        untagged: dg.DagsterRunStatus.STARTED,
    }
    assert slot_holders(instance, "gpu") == set() and not storage.get_concurrency_info("gpu").pending_steps
    assert slot_holders(instance, "milvus") == {
        elsewhere
    }  # another host's run: its process cannot be seen from here
    [failure] = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "is gone" in failure.dagster_event.message
    assert reclaim_dead_runs(instance) == []


@pytest.fixture(params=["sqlite", "postgres"])
def cli_instance_kind(request, env) -> str:
    """The instance `rag-assets ingest` uses: the SQLite one of DAGSTER_HOME, or docker/dagster.yaml on
    PostgreSQL."""
    if request.param == "postgres":
        request.getfixturevalue("postgres_home")
    return request.param


@pytest.mark.slow
@pytest.mark.timeout(300)  # a regression would block the re-run on the gpu slot forever: fail instead
def test_run_killed_during_embedding_leaves_old_rows_and_blocks_no_one_and_the_rerun_is_exact(
    settings, env, cli_instance_kind, workdir
):
    folder = workdir / "notes"
    write_distinct_docs(folder, "notes", pages=3)
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(folder)}])
    with dg.DagsterInstance.get() as instance:
        ensure_pools(instance)
        run_ingest(settings, instance, ["notes"])
        old = expected_rows("notes", folder_pages(folder))
        (folder / "page0.md").write_text(
            (folder / "page0.md").read_text().replace("Section 3", "Section three")
        )
        (folder / "page1.md").unlink()
        write_distinct_docs(folder / "more", "more", pages=1)
        new = expected_rows("notes", folder_pages(folder))

        process = start_ingest(env, "notes")
        try:
            killed = wait_for_step_start(instance, process, "embeddings")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            stop_group(process)
        steps_done = {
            e.step_key for e in instance.all_logs(killed.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        }
        assert "embeddings" not in steps_done, "the kill came too late to land in the embedding step"
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
        assert slot_holders(instance, "gpu") == {killed.run_id}
        assert collection_rows(settings, "notes") == old

        reclaimed = []
        [summary] = run_ingest(settings, instance, ["notes"], on_reclaimed=reclaimed.append)

        assert [(r.run_id, r.pools) for r in reclaimed] == [(killed.run_id, ("gpu",))]
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert slot_holders(instance, "gpu") == slot_holders(instance, "milvus") == set()
    assert collection_rows(settings, "notes") == new
    assert summary.counts["deleted"] == len(set(old) - set(new))
