"""Scenarios 5 and 9: faults inside the run, injected at the seams with the real systems underneath.

5. Milvus refuses a write part-way through a source's sync (real Milvus Lite; the client raises on
   the k-th upsert or delete). New rows are written before any stale row is deleted, so the source
   never has fewer rows than before, and the re-run makes it exact.
9. The device runs out of memory on big batches: the batch is halved until it fits, the run
   completes, and the collection is exact.
"""

from pathlib import Path

import dagster as dg
import pytest

from rag_assets.assets import ingestion_assets
from rag_assets.definitions import build_resources
from rag_assets.io_managers.milvus_io import MilvusIOManager
from rag_assets.runtime.ingest import register_partitions, run_ingest
from rag_assets_tests.helpers import write_sources
from rag_assets_tests.reliability.faults import (
    INJECTED,
    FailingMilvusResource,
    OomEmbedderResource,
    config_of,
)
from rag_assets_tests.reliability.helpers import collection_rows, expected_rows, folder_pages

BATCH_ROWS = 2


def materialize(settings, instance, source: str, **overrides) -> dg.ExecuteInProcessResult:
    """The four assets for one source with some resources replaced."""
    register_partitions(instance, [source])
    resources = {**build_resources(settings), **overrides}
    return dg.materialize(
        ingestion_assets, resources=resources, partition_key=source, instance=instance, raise_on_error=False
    )


def edit(folder: Path) -> None:
    """A new version of the docs: a section changed, a page gone, a page of three sections added."""
    page = folder / "configuration.md"
    page.write_text(page.read_text().replace("Milvus", "the Milvus database", 1))
    (folder / "searching.md").unlink()
    (folder / "added.md").write_text("# Added\n\nFirst.\n\n## Two\n\nSecond.\n\n## Three\n\nThird.\n")


def step_error_text(result: dg.ExecuteInProcessResult, step_key: str) -> str:
    """The messages of a failed step's error and of every error it was caused by."""
    [failure] = [e for e in result.all_events if e.is_step_failure and e.step_key == step_key]
    error, messages = failure.step_failure_data.error, []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def write_failing(settings, instance, *, verb: str, fail_on: int) -> dg.ExecuteInProcessResult:
    """One run whose write step's Milvus client refuses its `fail_on`-th `verb`, in batches of BATCH_ROWS."""
    failing = FailingMilvusResource(
        **config_of(build_resources(settings)["milvus"]), verb=verb, fail_on=fail_on
    )
    result = materialize(
        settings,
        instance,
        "notes",
        milvus=failing,
        milvus_io_manager=MilvusIOManager(milvus=failing, batch_rows=BATCH_ROWS),
    )
    assert not result.success
    return result


@pytest.mark.slow
def test_milvus_write_failing_part_way_loses_no_row_and_the_rerun_is_exact(settings, instance, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"])
    old = expected_rows("notes", folder_pages(docs_folder))
    edit(docs_folder)
    new = expected_rows("notes", folder_pages(docs_folder))
    added = set(new) - set(old)
    assert len(added) > BATCH_ROWS  # several upsert batches

    # The second upsert batch fails: the first batch is in, nothing is deleted.
    result = write_failing(settings, instance, verb="upsert", fail_on=2)
    assert f"{INJECTED}: upsert #2 refused" in step_error_text(result, "milvus_collection")
    stored = collection_rows(settings, "notes")
    assert set(old) <= set(stored), "a stale row was deleted before its replacement was written"
    assert len(set(stored) - set(old)) == BATCH_ROWS and all(
        stored[i] == new[i] for i in set(stored) - set(old)
    )

    # The first delete fails: every new row is written, and still no old row is gone.
    result = write_failing(settings, instance, verb="delete", fail_on=1)
    assert f"{INJECTED}: delete #1 refused" in step_error_text(result, "milvus_collection")
    assert collection_rows(settings, "notes") == {**old, **new}

    run_ingest(settings, instance, ["notes"])

    assert collection_rows(settings, "notes") == new


@pytest.mark.slow
@pytest.mark.parametrize("error", ["cuda", "cpu"])
def test_out_of_memory_in_embedding_halves_the_batch_and_the_run_is_exact(
    settings, instance, docs_folder, workdir, error
):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    log = workdir / "forward_passes.txt"
    embedder = OomEmbedderResource(
        **config_of(build_resources(settings)["embedder"]), max_rows=4, error=error, log_path=str(log)
    )

    result = materialize(settings, instance, "notes", embedder=embedder)

    assert result.success
    sizes = [int(line) for line in log.read_text().split()]
    expected = expected_rows("notes", folder_pages(docs_folder))
    assert max(sizes) > 4, "no batch was ever too big: nothing was halved"
    assert sum(s for s in sizes if s <= 4) == len(
        expected
    )  # every chunk embedded exactly once, in batches that fit
    assert collection_rows(settings, "notes") == expected
