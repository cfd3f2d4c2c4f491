"""ingest_celery_job on real workers: the embedding step on the gpu queue, every other step on the cpu queue.

Needs Redis (RAG_TEST_REDIS_URL, default redis://127.0.0.1:6379/11); skipped with the reason when it
is unreachable. Two runs start at once, one per source, on a SQLite instance that every process
shares (one host), and a cpu worker (queue `dagster`) and a gpu worker (queue `gpu`, one task at a
time), started with the documented commands, run their steps. The event log says which worker
and which process ran each step; Milvus Lite is then read by this process, another one.
"""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.execution.api import create_execution_plan

from rag_assets.core.chunking import PARALLEL_MIN_PAGES
from rag_assets.definitions import INGEST_CELERY_JOB, defs
from rag_assets.executors import CPU_QUEUE, GPU_QUEUE
from rag_assets.partitions import source_partitions
from rag_assets_tests.helpers import expected_chunks, milvus_rows, write_sources
from rag_assets_tests.scale_out.celery_workers import (
    ROOT,
    step_records,
    stop_process_group,
    with_venv_on_path,
)

# Redis and two Celery workers start (each importing dagster and torch) before a run goes through them.
pytestmark = [pytest.mark.slow, pytest.mark.needs_service, pytest.mark.timeout(300)]

RUN_SECONDS = 180
GPU_STEP, WRITE_STEP = "embeddings", "milvus_collection"
STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}


def write_many_pages(folder: Path, count: int) -> None:
    """Enough small pages that `chunks` starts its process pool, here inside a Celery pool process."""
    folder.mkdir()
    for page in range(count):
        (folder / f"page{page:03d}.md").write_text(
            f"# Page {page}\n\nBeta page {page} says something of its own.\n"
        )


def launch_run(source: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "dagster",
        "job",
        "execute",
        "-m",
        "rag_assets.definitions",
        "-j",
        INGEST_CELERY_JOB,
    ]
    command += ["--tags", f'{{"dagster/partition": "{source}"}}']
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=with_venv_on_path({**os.environ, **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def one_at_a_time(windows: list[dict]) -> bool:
    """No two (start, end) windows overlap."""
    ordered = sorted(windows, key=lambda w: w["start"])
    return all(earlier["end"] <= later["start"] for earlier, later in zip(ordered, ordered[1:]))


def test_embedding_runs_on_the_gpu_worker_the_rest_on_the_cpu_worker_one_milvus_process_at_a_time(
    settings, env, workdir, docs_folder, broker, workers
):
    write_many_pages(workdir / "beta", PARALLEL_MIN_PAGES + 6)
    folders = {"alpha": docs_folder, "beta": workdir / "beta"}
    write_sources(
        settings.sources_file, [{"name": n, "kind": "local", "path": str(f)} for n, f in folders.items()]
    )
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions(source_partitions.name, list(folders))

    runs = {name: launch_run(name, env, workdir / f"run_{name}.log") for name in folders}
    try:
        for name, process in runs.items():
            code = process.wait(timeout=RUN_SECONDS)
            worker_logs = "".join(f"\n--- {w.name}\n{w.log_tail()}" for w in workers.values())
            assert code == 0, (
                f"run {name} failed:\n{(workdir / f'run_{name}.log').read_text()[-6000:]}{worker_logs}"
            )
    finally:
        for process in runs.values():
            if process.poll() is None:
                stop_process_group(process)

    with dg.DagsterInstance.get() as instance:
        records = {
            r.tags["dagster/partition"]: (r, step_records(instance, r.run_id)) for r in instance.get_runs()
        }
    assert set(records) == set(folders) and all(run.is_success for run, _ in records.values())
    steps = {
        (source, key): step for source, (_, run_steps) in records.items() for key, step in run_steps.items()
    }
    pools = {
        s.key: s.pool
        for s in create_execution_plan(defs.resolve_job_def(INGEST_CELERY_JOB)).get_all_steps_in_topo_order()
    }
    assert {key for _, key in steps} == set(pools) and {GPU_STEP, WRITE_STEP} <= set(pools)

    # Which worker ran which step: the embedding step on the gpu worker, every other one (checks
    # included) on the cpu worker.
    for (source, key), step in steps.items():
        assert step["worker"] == workers[GPU_QUEUE if key == GPU_STEP else CPU_QUEUE].name, (
            source,
            key,
            step,
        )

    # Pool `gpu`: the embedding steps of the two runs never overlapped.
    assert pools[GPU_STEP] == "gpu" and one_at_a_time([steps[s, GPU_STEP] for s in folders])

    # Pool `milvus`: every step that opens the Milvus Lite file (the writer and the checks that
    # read it), of both runs, ran alone, in pool processes of the cpu worker that are still alive.
    milvus_steps = [step for (_, key), step in steps.items() if pools[key] == "milvus"]
    assert len(milvus_steps) >= 2 * 2 and one_at_a_time(milvus_steps), (
        "two processes had the Milvus Lite file open at once"
    )
    assert all(psutil.pid_exists(step["pid"]) for step in milvus_steps)

    # So the file is free while those processes live: this process, another one, opens it.
    for source, folder in folders.items():
        rows = milvus_rows(settings, source)
        assert {i: (r["path"], r["heading"], r["text"]) for i, r in rows.items()} == expected_chunks(
            source, folder
        )
    assert all(w.process.poll() is None for w in workers.values())
