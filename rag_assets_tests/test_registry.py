"""The sources file is the truth: the registry sensor adds and removes partitions, a cleanup run
deletes a removed source's rows and files (and nothing of any other source), and a changed
definition or an edited local folder gets a run for that source alone. Runs are executed for real."""

import dagster as dg
import pytest

from rag_assets.assets import ingestion_assets
from rag_assets.core.artifacts import PARQUET_ASSETS
from rag_assets.definitions import build_resources
from rag_assets.runtime.ingest import run_ingest
from rag_assets.sensors.source_cleanup import SOURCE_CLEANUP_JOB
from rag_assets_tests.helpers import milvus_rows, write_sources
from rag_assets_tests.sensors.helpers import (
    apply_partition_requests,
    cursor_of,
    execute,
    runs,
    skip_message,
    tick,
)


def materialize_assets(
    settings, instance, selection: dg.AssetSelection, source: str
) -> dg.ExecuteInProcessResult:
    """Some of the ingestion assets for one source, as one run."""
    return dg.materialize(
        ingestion_assets,
        selection=selection,
        resources=build_resources(settings),
        partition_key=source,
        instance=instance,
        raise_on_error=False,
    )


def local(name: str, folder) -> dict:
    return {"name": name, "kind": "local", "path": str(folder), "include": ["**/*.md"]}


def two_sources(workdir, docs_folder) -> tuple[dict, dict]:
    guide = workdir / "guide"
    guide.mkdir()
    (guide / "guide.md").write_text("# Guide\n\nThe guide has one page.\n\n## Usage\n\nUse it.\n")
    return local("notes", docs_folder), local("guide", guide)


@pytest.mark.slow
def test_added_sources_become_partitions_and_removed_ones_lose_partition_rows_and_files(
    settings, instance, workdir, docs_folder
):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [notes, guide])

    added = tick(settings, instance, "sources_sensor")
    apply_partition_requests(instance, added)
    assert instance.get_dynamic_partitions("sources") == ["notes", "guide"]
    assert sorted(r.partition_key for r in runs(added)) == ["guide", "notes"]
    run_ingest(settings, instance, [r.partition_key for r in runs(added)])
    notes_rows, guide_rows = milvus_rows(settings, "notes"), milvus_rows(settings, "guide")
    assert notes_rows and {r["path"] for r in guide_rows.values()} == {"guide.md"}

    write_sources(settings.sources_file, [notes])
    removed = tick(settings, instance, "sources_sensor", cursor_of(added))
    [cleanup] = runs(removed)
    assert cleanup.job_name == SOURCE_CLEANUP_JOB and cleanup.partition_key is None
    apply_partition_requests(instance, removed)
    assert execute(settings, instance, cleanup).success

    assert instance.get_dynamic_partitions("sources") == ["notes"]
    assert milvus_rows(settings, "guide") == {}
    assert milvus_rows(settings, "notes") == notes_rows
    assert not list(settings.artifacts_dir.glob("*/guide.parquet"))
    assert not (settings.artifacts_dir / "sources" / "guide.sqlite").exists()
    assert (settings.artifacts_dir / "sources" / "notes.sqlite").is_file()
    assert len(list(settings.artifacts_dir.glob("*/notes.parquet"))) == len(
        PARQUET_ASSETS
    )  # every parquet asset's file


def test_cleanup_spares_a_source_that_is_back_in_the_file(settings, instance, workdir, docs_folder):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [guide])
    run_ingest(settings, instance, ["guide"])
    before = milvus_rows(settings, "guide")
    write_sources(settings.sources_file, [])
    [cleanup] = runs(tick(settings, instance, "sources_sensor"))

    write_sources(settings.sources_file, [guide])  # re-added before the queued cleanup ran
    assert execute(settings, instance, cleanup).success

    assert milvus_rows(settings, "guide") == before


@pytest.mark.slow
def test_a_run_under_way_when_its_source_is_removed_does_not_write_it_and_the_cleanup_removes_it(
    settings, instance, workdir, docs_folder
):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [notes, guide])
    run_ingest(settings, instance, ["notes", "guide"])
    before = milvus_rows(settings, "guide")
    page = workdir / "guide" / "guide.md"
    page.write_text(page.read_text() + "\n## Later\n\nWritten while the source was being removed.\n")
    upstream = dg.AssetSelection.assets("raw_pages", "chunks", "embeddings")
    assert materialize_assets(settings, instance, upstream, "guide").success  # a run is past embeddings...

    write_sources(settings.sources_file, [notes])  # ...when the source is removed; its cleanup is queued
    [cleanup] = runs(tick(settings, instance, "sources_sensor"))
    finished = materialize_assets(settings, instance, dg.AssetSelection.assets("milvus_collection"), "guide")

    assert finished.success
    assert milvus_rows(settings, "guide") == before  # the new section was not written
    assert any(
        "'guide' is no longer in" in record.user_message for record in instance.all_logs(finished.run_id)
    )
    notes_rows = milvus_rows(settings, "notes")
    assert execute(settings, instance, cleanup).success
    assert milvus_rows(settings, "guide") == {}
    assert milvus_rows(settings, "notes") == notes_rows


def test_changed_definition_requests_a_run_for_that_source_only(settings, instance, workdir, docs_folder):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [notes, guide])
    first = tick(settings, instance, "sources_sensor")
    apply_partition_requests(instance, first)

    write_sources(settings.sources_file, [{**notes, "include": ["architecture.md"]}, guide])
    changed = tick(settings, instance, "sources_sensor", cursor_of(first))

    [request] = runs(changed)
    assert request.partition_key == "notes" and ":definition@" in request.run_key
    assert skip_message(tick(settings, instance, "sources_sensor", cursor_of(changed)))


@pytest.mark.slow
def test_edited_local_file_requests_a_run_for_just_that_source_and_the_run_updates_its_rows(
    settings, instance, workdir, docs_folder
):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [notes, guide])
    first = tick(settings, instance, "sources_sensor")
    apply_partition_requests(instance, first)
    run_ingest(settings, instance, ["guide"])
    assert skip_message(tick(settings, instance, "sources_sensor", cursor_of(first)))

    (workdir / "guide" / "guide.md").write_text("# Guide\n\nThe guide was rewritten.\n")
    edited = tick(settings, instance, "sources_sensor", cursor_of(first))

    [request] = runs(edited)
    assert request.partition_key == "guide" and ":files@" in request.run_key
    assert execute(settings, instance, request).success
    assert {r["text"] for r in milvus_rows(settings, "guide").values()} == {"The guide was rewritten."}


def test_invalid_sources_file_is_a_skip_and_changes_nothing(settings, instance, workdir, docs_folder):
    notes, guide = two_sources(workdir, docs_folder)
    write_sources(settings.sources_file, [notes, guide])
    first = tick(settings, instance, "sources_sensor")
    apply_partition_requests(instance, first)

    write_sources(settings.sources_file, [notes, {**guide, "kind": "gitlab"}])
    result = tick(settings, instance, "sources_sensor", cursor_of(first))

    assert isinstance(result, dg.SkipReason) and "unknown kind 'gitlab'" in result.skip_message
    assert instance.get_dynamic_partitions("sources") == ["notes", "guide"]
