"""Reclaim dead runs: runs whose process died on this host are marked failed and give back their pool slots.

`rag-assets ingest` (rag_assets.runtime.ingest.run_ingest) executes each run in its own process
(`execute_in_process`). When that process dies without a word (SIGKILL, the OOM killer, a lost
container), its run stays STARTED forever and keeps the pool slot its current step claimed. Pools
`gpu` and `milvus` have one slot, so every later run would wait for that slot forever.

Dagster's own run monitoring does not cover this case: the daemon frees the slots of runs that
already reached a finished status (`free_slots_after_run_end_seconds`), and it learns that a run's
worker died only from run launchers that can check worker health. No run launcher started these
runs, and the CLI runs no daemon.

So each run records who executes it, as run tags (`process_tags`): the host name, the pid, and the
pid's start time (so a recycled pid is never taken for the run's process). Before launching,
`reclaim_dead_runs` looks at the in-progress runs carrying this host's tag; a run whose process no
longer exists is reported failed (`instance.report_run_failed`, visible in the UI with the reason)
and its claimed slots and pending claims are freed (`free_concurrency_slots_for_run`). Runs of other
hosts are never touched: their processes cannot be seen from here. Runs launched by the daemon or
the UI carry no such tags and are left to Dagster's run monitoring.

Grain: one run. Invariant: a run is reclaimed only when its recorded process is certainly gone.
"""

import socket
from dataclasses import dataclass

import dagster as dg
import psutil

HOST_TAG = "rag_assets/host"
PID_TAG = "rag_assets/pid"
PID_STARTED_TAG = "rag_assets/pid_started"
START_TIME_TOLERANCE_SECONDS = 1.0  # create_time is derived from boot time and clock ticks
IN_PROGRESS = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class ReclaimedRun:
    """A run whose process had died: now failed, its slots back in their pools."""

    run_id: str
    pid: int
    pools: tuple[str, ...]  # pools in which it held a slot or waited for one

    def describe(self) -> str:
        held = f"holding pool slots {', '.join(self.pools)}" if self.pools else "holding no pool slot"
        return f"run {self.run_id} (pid {self.pid}) died {held}: marked failed, slots freed"


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run: put them on every run executed in this process."""
    me = psutil.Process()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(me.pid), PID_STARTED_TAG: f"{me.create_time():.2f}"}


def process_alive(pid: int, started: float) -> bool:
    """Whether the process `pid`, started at `started` (epoch seconds), still exists and is not a zombie."""
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) > START_TIME_TOLERANCE_SECONDS:
            return False  # the pid was recycled
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists; it is someone else's


def reclaim_dead_runs(instance: dg.DagsterInstance, host: str | None = None) -> list[ReclaimedRun]:
    """Mark failed every in-progress run of `host` (default: this one) whose process is gone; free its
    slots.
    """
    host = host or socket.gethostname()
    reclaimed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS, tags={HOST_TAG: host})):
        pid, started = _recorded_process(run)
        if pid is None or process_alive(pid, started):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status not in IN_PROGRESS:
            continue  # another process reclaimed it meanwhile
        pools = _pools_of(instance, run.run_id)
        instance.report_run_failed(
            current,
            f"The process that executed this run (pid {pid} on {host}) is gone; reclaimed by "
            "rag_assets.runtime.reclaim.",
        )
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reclaimed.append(ReclaimedRun(run.run_id, pid, pools))
    return reclaimed


def _recorded_process(run: dg.DagsterRun) -> tuple[int | None, float]:
    try:
        return int(run.tags[PID_TAG]), float(run.tags[PID_STARTED_TAG])
    except (KeyError, ValueError):
        return None, 0.0  # not tagged by process_tags: not ours to judge


def _pools_of(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return ()
    pools = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        if any(s.run_id == run_id for s in info.claimed_slots) or any(
            p.run_id == run_id for p in info.pending_steps
        ):
            pools.append(pool)
    return tuple(pools)
