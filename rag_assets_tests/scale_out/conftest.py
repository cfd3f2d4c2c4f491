"""The Celery tests' fixtures: the test's own Redis database, a shared instance, and real workers."""

import os
import uuid

import dagster as dg
import pytest

from rag_assets.executors import CELERY_BACKEND_ENV, CELERY_BROKER_ENV, CPU_QUEUE, GPU_QUEUE
from rag_assets.runtime.instance import ensure_pools
from rag_assets_tests.scale_out.celery_workers import (
    DEFAULT_REDIS_URL,
    dedicated_redis,
    start_worker,
    stop_process_group,
    wait_until_ready,
)


@pytest.fixture
def broker(env, monkeypatch):
    """The test's own Redis database as Celery broker and result backend, for every process here."""
    url = os.environ.get("RAG_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    with dedicated_redis(url):
        for name in (CELERY_BROKER_ENV, CELERY_BACKEND_ENV):
            monkeypatch.setenv(name, url)
            env[name] = url
        yield url


@pytest.fixture
def shared_instance(env):
    """The instance every process of the test shares, its schema and pools created here, once,
    before workers and runs start: several processes creating a schema at once would race."""
    with dg.DagsterInstance.get() as instance:
        ensure_pools(instance)


@pytest.fixture
def workers(broker, shared_instance, env, workdir):
    """A cpu worker (queue `dagster`, two pool processes) and a gpu worker (queue `gpu`), as documented."""
    tag = uuid.uuid4().hex[:6]
    started = []
    try:
        started.append(
            start_worker(
                CPU_QUEUE,
                f"cpu-{tag}",
                {**os.environ, **env},
                workdir / "cpu_worker.log",
                ("--concurrency=2",),
            )
        )
        started.append(
            start_worker(GPU_QUEUE, f"gpu-{tag}", {**os.environ, **env}, workdir / "gpu_worker.log")
        )
        wait_until_ready(broker, started)
        yield {w.queue: w for w in started}
    finally:
        for worker in started:
            stop_process_group(worker.process)
