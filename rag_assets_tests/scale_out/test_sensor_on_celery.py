"""RAG_EXECUTOR=celery, as docker/compose.yaml sets it: a run the sources sensor requests embeds on `gpu`.

Every process gets the variable, as in Compose: `dagster-daemon run -w workspace.yaml` ticks the
sources sensor, which requests a run of `ingest_job` for a new source; the daemon launches it, and
its steps go to real Celery workers on the real Redis broker (RAG_TEST_REDIS_URL, default
redis://127.0.0.1:6379/11; skipped with the reason when unreachable): the embedding step to the
worker on queue `gpu`, every other step to the worker on queue `dagster`.
"""

import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from rag_assets.definitions import INGEST_JOB
from rag_assets.executors import CPU_QUEUE, GPU_QUEUE
from rag_assets_tests.helpers import expected_chunks, milvus_rows, write_sources
from rag_assets_tests.scale_out.celery_workers import (
    ROOT,
    step_records,
    stop_process_group,
    with_venv_on_path,
)

pytestmark = [pytest.mark.needs_service, pytest.mark.slow, pytest.mark.timeout(420)]

RUN_SECONDS = 300
SENSOR = "sources_sensor"
GPU_STEP = "embeddings"


@pytest.fixture
def celery_everywhere(env, monkeypatch):
    """RAG_EXECUTOR=celery for this process and every one the test starts (workers, daemon, runs)."""
    monkeypatch.setenv("RAG_EXECUTOR", "celery")
    env["RAG_EXECUTOR"] = "celery"


@pytest.fixture
def daemon(celery_everywhere, workers, env, workdir):
    """`dagster-daemon run -w workspace.yaml` from the repository root, in its own process group."""
    log = workdir / "daemon.log"
    command = [sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=with_venv_on_path({**os.environ, **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log
    finally:
        stop_process_group(process)


def wait_for_sensor_run(instance: dg.DagsterInstance, daemon, deadline: float) -> dg.DagsterRun:
    process, log = daemon
    while True:
        runs = [r for r in instance.get_runs() if r.tags.get("dagster/sensor_name") == SENSOR]
        if runs and runs[0].is_finished:
            return runs[0]
        if process.poll() is not None:
            raise AssertionError(f"dagster-daemon exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            state = [(r.job_name, r.status.value) for r in runs]
            raise AssertionError(
                f"no finished sensor run after {RUN_SECONDS}s ({state}):\n{log.read_text()[-4000:]}"
            )
        time.sleep(1)


def test_a_sensor_requested_run_embeds_on_the_gpu_worker_when_rag_executor_is_celery(
    celery_everywhere, workers, daemon, settings, env, docs_folder
):
    write_sources(settings.sources_file, [{"name": "alpha", "kind": "local", "path": str(docs_folder)}])

    with dg.DagsterInstance.get() as instance:
        run = wait_for_sensor_run(instance, daemon, time.monotonic() + RUN_SECONDS)
        steps = step_records(instance, run.run_id)
    worker_logs = "".join(f"\n--- {w.name}\n{w.log_tail()}" for w in workers.values())
    assert run.is_success, f"run {run.run_id} {run.status.value}{worker_logs}"
    assert run.job_name == INGEST_JOB and run.tags["dagster/partition"] == "alpha"

    assert GPU_STEP in steps and len(steps) > 2
    for key, step in steps.items():
        assert step.get("worker") == workers[GPU_QUEUE if key == GPU_STEP else CPU_QUEUE].name, (key, step)
    rows = milvus_rows(settings, "alpha")
    assert {i: (r["path"], r["heading"], r["text"]) for i, r in rows.items()} == expected_chunks(
        "alpha", docs_folder
    )
