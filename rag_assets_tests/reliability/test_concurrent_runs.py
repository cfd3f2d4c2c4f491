"""Scenario 7: the same source launched twice at once, in two processes. Both runs finish (or one
fails cleanly), the collection holds each chunk exactly once, and no run is left holding a slot.

Scenario 8 (different sources at once: embedding steps never overlap, writes never collide) is
rag_assets_tests/test_pools.py on the SQLite instance and
test_postgres_instance.py::test_gpu_pool_admits_one_embedding_step_across_processes_on_postgres.
"""

import subprocess
import sys
import time

import pytest

from rag_assets.errors import MilvusLiteBusy
from rag_assets.resources.milvus import MilvusResource
from rag_assets.runtime.ingest import register_partitions
from rag_assets_tests.helpers import step_window, write_sources
from rag_assets_tests.reliability.helpers import (
    collection_rows,
    expected_rows,
    finish,
    folder_pages,
    slot_holders,
    start_ingest,
    stop_group,
)


@pytest.mark.slow
@pytest.mark.timeout(300)  # two ingest processes at once on 2 cores; finish() waits up to 300 s
def test_the_same_source_launched_twice_at_once_converges_without_duplicates(
    settings, env, instance, docs_folder
):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    # The instance's schema exists (the `instance` fixture); the partition does not: both register it.
    processes = [start_ingest(env, "notes") for _ in range(2)]
    try:
        outcomes = [finish(process) for process in processes]
    finally:
        for process in processes:
            stop_group(process)

    for code, stderr in outcomes:
        assert code == 0 or (
            code == 1 and "rag-assets: source 'notes': step " in stderr and "Traceback" not in stderr
        ), stderr
    assert any(code == 0 for code, _ in outcomes), [stderr for _, stderr in outcomes]
    assert collection_rows(settings, "notes") == expected_rows("notes", folder_pages(docs_folder))
    assert instance.get_dynamic_partitions("sources") == ["notes"]
    runs = instance.get_runs()
    assert len(runs) == 2 and all(r.is_finished for r in runs)
    assert slot_holders(instance, "gpu") == slot_holders(instance, "milvus") == set()
    writes = sorted(step_window(instance, r.run_id, "milvus_collection") for r in runs if r.is_success)
    assert all(first_end <= second_start for (_, first_end), (second_start, _) in zip(writes, writes[1:]))


class RacedInstance:
    """An instance on which another process registers `keys` right after our first read of the partitions."""

    def __init__(self, instance, keys: list[str]):
        self._instance, self._keys, self._raced = instance, keys, False

    def get_dynamic_partitions(self, name: str) -> list[str]:
        known = self._instance.get_dynamic_partitions(name)
        if not self._raced:
            self._raced = True
            self._instance.add_dynamic_partitions(name, self._keys)
        return known

    def __getattr__(self, name):
        return getattr(self._instance, name)


def test_registering_a_source_that_another_process_registers_at_the_same_moment_succeeds(instance):
    register_partitions(
        RacedInstance(instance, ["notes"]), ["notes", "guide"]
    )  # the unique index refuses "notes" once

    assert sorted(instance.get_dynamic_partitions("sources")) == ["guide", "notes"]


# Another process opens the Lite file, says so, holds it for HOLD_SECONDS, then closes it.
HOLD_SECONDS = 3
HOLDER = f"""
import sys, time
from rag_assets.resources.milvus import MilvusStore
store = MilvusStore(sys.argv[1], "held")
print("holding", flush=True)
time.sleep({HOLD_SECONDS})
store.close()
print("released at", time.time(), flush=True)
time.sleep(30)
"""


@pytest.mark.slow
def test_a_step_waits_for_a_lite_file_another_process_holds_for_a_moment_and_a_command_does_not(tmp_path):
    lite = str(tmp_path / "milvus.db")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lite], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(MilvusLiteBusy, match="open in another process"):
            MilvusResource(uri=lite, collection="rag_chunks", busy_wait_seconds=0).open()

        store = MilvusResource(uri=lite, collection="rag_chunks").open()  # as a step opens it
        opened_at = time.time()
        store.close()
        released_at = float(holder.stdout.readline().removeprefix("released at "))
    finally:
        holder.kill()
        holder.wait()
    assert opened_at >= released_at  # the step's open waited for the other process to let go
