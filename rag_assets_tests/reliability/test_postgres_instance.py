"""The production instance (docker/dagster.yaml: PostgreSQL storage, queued run coordinator, run
monitoring, pools gpu and milvus at 1) against a real PostgreSQL: an ingest runs through it, and
pool `gpu` admits one embedding step at a time across processes (scenario 8 on this instance;
rag_assets_tests/test_pools.py proves the same on the SQLite instance)."""

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from rag_assets.runtime.ingest import run_ingest
from rag_assets.runtime.instance import ensure_pools
from rag_assets_tests.helpers import step_window, write_distinct_docs, write_sources
from rag_assets_tests.reliability.helpers import (
    DOCKER_INSTANCE,
    REPO,
    collection_rows,
    expected_rows,
    finish,
    folder_pages,
    start_ingest,
    stop_group,
)

pytestmark = pytest.mark.slow  # PostgreSQL, and `rag-assets ingest` processes


def commented_production_block() -> dict:
    """The commented-out production settings at the end of the top-level dagster.yaml, uncommented."""
    lines = (REPO / "dagster.yaml").read_text().splitlines()
    block = lines[lines.index("# storage:") :]
    return yaml.safe_load(
        "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in block)
    )


def test_the_production_block_in_dagster_yaml_is_docker_dagster_yaml_without_container_paths():
    docker = yaml.safe_load(DOCKER_INSTANCE.read_text())
    for container_path in ("local_artifact_storage", "compute_logs"):
        docker.pop(container_path)
    assert commented_production_block() == docker


def test_docker_instance_on_postgres_runs_an_ingest_and_keeps_its_history(
    settings, postgres_instance, docs_folder
):
    instance = postgres_instance
    assert isinstance(instance.run_storage, PostgresRunStorage) and isinstance(
        instance.event_log_storage, PostgresEventLogStorage
    )
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert (
        instance.run_monitoring_enabled
        and instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    )
    ensure_pools(instance)
    assert {p: instance.event_log_storage.get_concurrency_info(p).slot_count for p in ("gpu", "milvus")} == {
        "gpu": 1,
        "milvus": 1,
    }
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])

    run_ingest(settings, instance, ["notes"])

    assert collection_rows(settings, "notes") == expected_rows("notes", folder_pages(docs_folder))
    with dg.DagsterInstance.get() as fresh:  # a new connection sees what the run stored in PostgreSQL
        [run] = fresh.get_runs()
        assert run.is_success
        assert fresh.get_dynamic_partitions("sources") == ["notes"]
        assert fresh.fetch_materializations(dg.AssetKey("milvus_collection"), limit=1).records


@pytest.mark.timeout(300)  # two ingest processes at once on 2 cores; finish() waits up to 300 s
def test_gpu_pool_admits_one_embedding_step_across_processes_on_postgres(
    settings, env, postgres_instance, workdir
):
    names = ("alpha", "beta")
    for name in names:
        write_distinct_docs(workdir / name, name, pages=3)
    write_sources(
        settings.sources_file, [{"name": n, "kind": "local", "path": str(workdir / n)} for n in names]
    )
    ensure_pools(postgres_instance)  # the schema and pools exist before two processes race to create them

    processes = [start_ingest(env, name) for name in names]
    try:
        for process in processes:
            code, stderr = finish(process)
            assert code == 0, stderr
    finally:
        for process in processes:
            stop_group(process)

    runs = postgres_instance.get_runs()
    assert len(runs) == 2 and all(r.is_success for r in runs)
    for step in ("embeddings", "milvus_collection"):
        (_, first_end), (second_start, _) = sorted(
            step_window(postgres_instance, r.run_id, step) for r in runs
        )
        assert first_end <= second_start, f"two {step} steps overlapped"
    for name in names:
        assert collection_rows(settings, name) == expected_rows(name, folder_pages(workdir / name))
