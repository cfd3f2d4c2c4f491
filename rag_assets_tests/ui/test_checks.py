"""The asset checks on real storage: the source stores where the assets put their rows, and Milvus Lite.

Each check passes on what a real ingest wrote and fails, naming the culprits, on storage made wrong
by hand; the blocking checks fail their run, and the dimension check stops the write.
"""

import dagster as dg
import numpy as np
import pytest

from rag_assets.assets import ingestion_assets
from rag_assets.assets.checks import (
    ingestion_checks,
    no_empty_chunks,
    rows_match_chunks,
    vector_dimension_matches_collection,
)
from rag_assets.core.artifacts import ArtifactStore
from rag_assets.definitions import build_resources
from rag_assets.resources.milvus import ROW_FIELDS, MilvusStore
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets_tests.helpers import milvus_rows, write_sources

MODEL_DIMENSION = 384  # all-MiniLM-L6-v2, the bundled model


def run_checks(
    settings, instance, *checks, source: str | None = None
) -> tuple[bool, dict[str, dg.AssetCheckEvaluation]]:
    """Run checks on their own, as the UI's "Execute" does: for one source's partition, or for none."""
    result = dg.materialize(
        [*ingestion_assets, *ingestion_checks],
        selection=dg.AssetSelection.checks(*checks),
        instance=instance,
        resources=build_resources(settings),
        tags={"dagster/partition": source} if source else None,
        raise_on_error=False,
    )
    return result.success, {e.check_name: e for e in result.get_asset_check_evaluations()}


def values(evaluation: dg.AssetCheckEvaluation) -> dict:
    return {key: value.value for key, value in evaluation.metadata.items()}


def store_chunks(settings, source: str, texts: dict[str, str]) -> None:
    """Chunks (id -> text) in the source's store, as the chunks step swaps in a new page's chunks."""
    rows = [
        {
            "id": i,
            "path": "page.md",
            "position": n,
            "heading": "",
            "text": text,
            "tokens": 1,
            "content_hash": i,
            "url": "",
            "commit": "",
        }
        for n, (i, text) in enumerate(texts.items())
    ]
    store, _ = ArtifactStore(settings.artifacts_dir).open_source(source)
    with store:
        store.replace_chunks({"page.md": ("hash", "chunker", rows)})


def store_vectors(settings, source: str, dimensions: list[int]) -> None:
    ids = [f"{source}-{i}" for i in range(len(dimensions))]
    store_chunks(settings, source, dict.fromkeys(ids, "Text."))
    store, _ = ArtifactStore(settings.artifacts_dir).open_source(source)
    with store:
        for i, d in zip(ids, dimensions):
            store.put_vectors("model", {i: np.full(d, 0.5, dtype=np.float32)})


def model_collection(settings) -> str:
    """The collection the configured model's rows go to, behind the serving alias: what the checks read."""
    return build_resources(settings)["milvus"].model_collection


def put_rows(settings, source: str, ids: list[str], dimension: int = 4) -> None:
    """Rows in Milvus for a source, creating the collection with `dimension` when it does not exist."""
    store = MilvusStore(settings.milvus_uri, model_collection(settings))
    try:
        store.ensure_collection(dimension)
        if ids:
            rows = [
                {**dict.fromkeys(ROW_FIELDS, ""), "id": i, "source": source, "vector": [0.5] * dimension}
                for i in ids
            ]
            store.upsert_rows(rows)
    finally:
        store.close()


def delete_rows(settings, ids: list[str]) -> None:
    store = MilvusStore(settings.milvus_uri, model_collection(settings))
    try:
        store.delete_ids(ids)
    finally:
        store.close()


def evaluations_in(instance: dg.DagsterInstance) -> dict[str, dg.AssetCheckEvaluation]:
    """The latest evaluation of each check recorded on the instance."""
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    )
    return {(e := r.event_log_entry.dagster_event.event_specific_data).check_name: e for r in records}


@pytest.mark.slow
def test_a_real_ingest_passes_every_check_with_its_counts(settings, instance, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])

    [summary] = run_ingest(settings, instance, ["notes"])

    checks = evaluations_in(instance)
    chunks = summary.counts["chunks"]
    assert {c.check_key.name for c in ingestion_checks} <= checks.keys()
    assert all(checks[c.check_key.name].passed for c in ingestion_checks)
    empty = values(checks["no_empty_chunks"])
    assert (empty["sources_checked"], empty["chunks_checked"], empty["empty_chunks"]) == (1, chunks, 0)
    # The first run checks the vectors before the write creates the collection from them.
    dimension = values(checks["vector_dimension_matches_collection"])
    assert (dimension["collection_exists"], dimension["vector_dimension"]) == (False, MODEL_DIMENSION)
    rows = values(checks["rows_match_chunks"])
    assert (rows["milvus_rows"], rows["missing_rows"], rows["orphan_rows"]) == (chunks, 0, 0)
    assert "| notes |" in rows["sources"]

    run_ingest(settings, instance, ["notes"])

    dimension = values(evaluations_in(instance)["vector_dimension_matches_collection"])
    assert (dimension["collection_exists"], dimension["collection_dimension"]) == (True, MODEL_DIMENSION)


def test_no_empty_chunks_fails_its_run_and_names_the_empty_chunks(settings, instance):
    instance.add_dynamic_partitions("sources", ["notes", "other"])
    store_chunks(settings, "notes", {"a": "Text.", "b": "  \n", "c": ""})

    success, checks = run_checks(settings, instance, no_empty_chunks, source="notes")

    check = checks["no_empty_chunks"]
    assert not success, "a failed blocking check fails its run"
    assert not check.passed and check.description == "2 empty chunk(s): `b`, `c`"
    assert (values(check)["empty_chunks"], values(check)["chunks_checked"]) == (2, 3)


def test_no_empty_chunks_passes_on_chunks_with_text_and_alone_checks_every_source(settings, instance):
    instance.add_dynamic_partitions("sources", ["notes", "other", "never_run"])
    store_chunks(settings, "notes", {"a": "Text.", "b": "More text."})
    store_chunks(settings, "other", {"c": "Other."})

    success, checks = run_checks(settings, instance, no_empty_chunks)

    check = checks["no_empty_chunks"]
    assert success and check.passed
    assert (values(check)["sources_checked"], values(check)["chunks_checked"]) == (2, 3)
    assert "| never_run | not materialized |" in values(check)["sources"]


@pytest.mark.parametrize(
    ("collection", "stored", "passed"),
    [
        (None, [4, 4], True),  # no collection yet: the first write creates it with this dimension
        (4, [4, 4], True),
        (8, [4, 4], False),
        (None, [4, 8], False),  # one collection cannot hold both
    ],
)
def test_vector_dimension_is_compared_with_the_collection(settings, instance, collection, stored, passed):
    instance.add_dynamic_partitions("sources", ["notes"])
    store_vectors(settings, "notes", stored)
    if collection:
        put_rows(settings, "someone_else", [], dimension=collection)

    success, checks = run_checks(settings, instance, vector_dimension_matches_collection, source="notes")

    check = checks["vector_dimension_matches_collection"]
    assert check.passed is passed and success is passed
    assert values(check)["collection_exists"] is (collection is not None)
    if collection:
        assert values(check)["collection_dimension"] == collection
    if not passed:
        assert "notes" in check.description or "several dimensions" in check.description


def test_rows_match_chunks_names_missing_and_orphan_rows_of_its_source_only(settings, instance):
    instance.add_dynamic_partitions("sources", ["notes", "other"])
    store_chunks(settings, "notes", {"a": "A.", "b": "B.", "c": "C."})
    put_rows(settings, "notes", ["a", "b", "orphan"])
    put_rows(settings, "other", ["x"])  # another source's rows are not orphans of this one

    _, checks = run_checks(settings, instance, rows_match_chunks, source="notes")

    check = checks["rows_match_chunks"]
    assert not check.passed
    assert check.description == "1 chunk(s) without a row: `c`; 1 orphan row(s): `orphan`"
    assert {k: values(check)[k] for k in ("milvus_rows", "missing_rows", "orphan_rows")} == {
        "milvus_rows": 3,
        "missing_rows": 1,
        "orphan_rows": 1,
    }

    put_rows(settings, "notes", ["c"])
    delete_rows(settings, ["orphan"])
    _, checks = run_checks(settings, instance, rows_match_chunks, source="notes")

    assert checks["rows_match_chunks"].passed
    assert values(checks["rows_match_chunks"])["milvus_rows"] == 3


@pytest.mark.slow
def test_a_collection_of_another_dimension_stops_the_write_at_the_check(settings, instance, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    put_rows(settings, "old_model_source", ["old"], dimension=8)

    with pytest.raises(IngestFailed, match="embeddings_vector_dimension_matches_collection"):
        run_ingest(settings, instance, ["notes"])

    [run] = instance.get_runs()
    started = {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)}
    assert "embeddings" in started and "milvus_collection" not in started
    assert milvus_rows(settings, "notes") == {}
    assert not evaluations_in(instance)["vector_dimension_matches_collection"].passed
