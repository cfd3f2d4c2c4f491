"""Incremental ingestion: only new or edited text reaches the model, and only changed rows are written."""

import json

import numpy as np
import pytest

from rag_assets.resources.embedder import Embedder
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.ingest import run_ingest
from rag_assets_tests.helpers import (
    cli,
    latest_metadata,
    milvus_rows,
    perturbed_copy_of_minilm,
    write_sources,
)


@pytest.fixture
def notes(settings, instance, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"])
    return docs_folder


@pytest.mark.slow
def test_editing_one_section_embeds_and_writes_only_that_sections_chunks(settings, instance, notes):
    before = milvus_rows(settings, "notes")
    page = notes / "configuration.md"
    page.write_text(
        page.read_text().replace(
            "`RAG_DATA_DIR` is the data directory", "`RAG_DATA_DIR` names the folder for all state"
        )
    )

    [summary] = run_ingest(settings, instance, ["notes"])

    embeddings = latest_metadata(instance, "embeddings", "notes")
    assert summary.counts["embedded"] == embeddings["chunks_embedded"] == 1
    assert embeddings["cache_hits"] == 0  # the unchanged chunks are not even looked up
    assert summary.counts["written"] == 1 and summary.counts["deleted"] == 1
    chunks = latest_metadata(instance, "chunks", "notes")
    assert (chunks["pages_chunked"], chunks["chunks_added"], chunks["chunks_removed"]) == (1, 1, 1)
    assert chunks["chunks_unchanged"] == len(before) - 1
    hits = search("which folder holds all state?")
    assert "names the folder for all state" in hits[0]["text"]
    assert not any("is the data directory" in r["text"] for r in milvus_rows(settings, "notes").values())


@pytest.mark.slow
def test_renaming_a_file_reembeds_nothing(settings, instance, notes):
    (notes / "searching.md").rename(notes / "finding.md")

    [summary] = run_ingest(settings, instance, ["notes"])

    rows = milvus_rows(settings, "notes").values()
    assert summary.counts["embedded"] == 0
    assert "finding.md" in {r["path"] for r in rows} and "searching.md" not in {r["path"] for r in rows}
    assert summary.counts["written"] == summary.counts["deleted"] > 0


@pytest.mark.slow
def test_no_change_makes_no_forward_pass_and_no_write(settings, instance, notes):
    run_ingest(settings, instance, ["notes"])

    embeddings = latest_metadata(instance, "embeddings", "notes")
    writes = latest_metadata(instance, "milvus_collection", "notes")
    assert (
        embeddings["forward_passes"] == 0
        and embeddings["chunks_embedded"] == 0
        and embeddings["cache_hit_rate"] == 1.0
    )
    assert (writes["rows_upserted"], writes["rows_deleted"], writes["write_batches"]) == (0, 0, 0)
    assert latest_metadata(instance, "chunks", "notes")["pages_chunked"] == 0


@pytest.mark.slow
def test_switching_the_model_never_reuses_the_other_models_vectors(
    settings, instance, notes, workdir, monkeypatch
):
    other_model = perturbed_copy_of_minilm(workdir / "other-model")
    monkeypatch.setenv("EMBEDDING_MODEL", str(other_model))
    switched = type(settings).from_env()

    [summary] = run_ingest(switched, instance, ["notes"])

    rows = milvus_rows(switched, "notes")
    assert summary.counts["embedded"] == len(rows) and summary.counts["written"] == len(rows)
    other = Embedder(str(other_model))
    assert {r["model"] for r in rows.values()} == {other.identity}
    store = MilvusStore(switched.milvus_uri, switched.collection)
    try:
        [row] = store.query_rows('path == "sources.md"', fields=["heading", "text", "vector"], limit=1)
    finally:
        store.close()
    [expected] = other.embed([f"{row['heading']}\n\n{row['text']}"])
    assert np.allclose(row["vector"], expected, atol=2e-2)


def search(query: str) -> list[dict]:
    result = cli("search", query, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_prune_cache_keeps_exactly_the_vectors_current_chunks_use(settings, instance, notes):
    (notes / "searching.md").unlink()
    run_ingest(settings, instance, ["notes"])
    live = len(milvus_rows(settings, "notes"))

    result = cli("prune-cache")

    assert result.returncode == 0, result.stderr
    assert f"kept {live} vectors, removed 3" in result.stdout  # searching.md had three sections
