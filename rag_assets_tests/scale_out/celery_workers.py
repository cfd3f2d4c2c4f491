"""Real Celery workers and a real Redis broker for tests, and the processes they fork, cleaned up after.

Each worker runs in its own process group (`dagster-celery` -> `celery` -> pool children -> their
own children), so stopping the group stops everything it started. The Redis database is the
test's alone: one test process at a time holds it (a file lock) and it is flushed before and after.
"""

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import redis
from celery import Celery

from rag_assets.executors import celery_worker_command

ROOT = Path(__file__).parents[2]
CELERY_YAML = ROOT / "docker" / "celery.yaml"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"  # a database number no other test uses
READY_SECONDS = 60
STOP_SECONDS = 15
LOCK_SECONDS = 300


@contextmanager
def dedicated_redis(url: str):
    """The Redis database at `url`, empty, for this test alone; skipped with the reason if unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis not reachable at {url} (set RAG_TEST_REDIS_URL): {error}")
    lock_path = (
        Path(tempfile.gettempdir()) / f"rag_assets_redis_{hashlib.sha256(url.encode()).hexdigest()[:12]}.lock"
    )
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:  # another test run on this host may be using the same database
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} stayed in use by another test run ({lock_path})") from None
                time.sleep(1)
        client.flushdb()
        try:
            yield client
        finally:
            client.flushdb()
            client.close()


@dataclass
class Worker:
    name: str  # the -n name; Celery reports it as `name@hostname`
    queue: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def start_worker(
    queue: str, name: str, env: dict[str, str], log: Path, extra: tuple[str, ...] = ()
) -> Worker:
    """The documented worker command for `queue`, in a new process group, logging to `log`."""
    command = celery_worker_command(queue, str(CELERY_YAML), name=name, extra=extra)
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=with_venv_on_path(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Worker(name, queue, process, log)


def with_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """`dagster-celery worker start` runs `celery` from PATH: put this interpreter's bin first."""
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "PATH": os.pathsep.join([bin_dir, env.get("PATH", os.defpath)])}


def wait_until_ready(broker_url: str, workers: list[Worker]) -> None:
    """Block until every worker answers a ping through the broker (then it is consuming its queue)."""
    app = Celery(broker=broker_url)
    waiting = {w.name for w in workers}
    deadline = time.monotonic() + READY_SECONDS
    try:
        while waiting:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise RuntimeError(
                        f"worker {worker.name} exited with {worker.process.returncode}:\n{worker.log_tail()}"
                    )
            replies = app.control.ping(timeout=1.0)
            waiting -= {node.split("@")[0] for reply in replies for node in reply}
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(f"--- {w.name}\n{w.log_tail()}" for w in workers if w.name in waiting)
                raise TimeoutError(f"workers {sorted(waiting)} not ready after {READY_SECONDS}s:\n{tails}")
    finally:
        app.close()


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the process's group (Celery's warm shutdown), then SIGKILL whatever is left."""
    for sig, grace in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(process.pid):
            process.poll()
            time.sleep(0.2)
        if not _group_alive(process.pid):
            break
    process.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


STEP_EVENTS = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}


def step_records(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Per step: the Celery worker that ran it, the pid of its process, and its start and end times."""
    steps: dict[str, dict] = {}
    for record in instance.all_logs(run_id, of_type={*STEP_EVENTS, dg.DagsterEventType.ENGINE_EVENT}):
        if not record.step_key:
            continue
        event, step = record.dagster_event, steps.setdefault(record.step_key, {})
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            worker = event.engine_event_data.metadata.get("Celery worker")
            if worker is not None:  # dagster-celery's "Executing steps ... in celery worker"
                step["worker"] = worker.value.split("@")[0]
        elif event.event_type == dg.DagsterEventType.STEP_START:
            step.update(start=record.timestamp, pid=event.pid)
        else:
            step["end"] = record.timestamp
    return steps
