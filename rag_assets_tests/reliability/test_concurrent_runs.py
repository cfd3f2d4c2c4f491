"""Scenario 7: the same source launched twice at once, in two processes. Both runs finish (or one
fails cleanly), the collection holds each chunk exactly once, and no run is left holding a slot.

Scenario 8 (different sources at once: embedding steps never overlap, writes never collide) is
rag_assets_tests/test_pools.py on the SQLite instance and
test_postgres_instance.py::test_gpu_pool_admits_one_embedding_step_across_processes_on_postgres.
"""

import pytest

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
            code == 1 and "rag-assets: ingest failed:" in stderr and "Traceback" not in stderr
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
