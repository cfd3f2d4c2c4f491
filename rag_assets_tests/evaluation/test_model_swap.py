"""Changing EMBEDDING_MODEL without downtime: the new model's vectors are built beside the served ones,
evaluated, and only then served through the alias; the old collection stays until pruned.

Model B is MiniLM with one weight matrix nudged (a genuinely different model the tests can make).
"""

import json
import subprocess

import pytest

from rag_assets.definitions import build_definitions, build_resources
from rag_assets.resources.embedder import Embedder
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.sensors.source_cleanup import SOURCE_CLEANUP_JOB
from rag_assets.settings import Settings
from rag_assets_tests.evaluation.helpers import (
    collections,
    misleading_queries,
    model_collection,
    serving,
)
from rag_assets_tests.helpers import (
    cli,
    latest_metadata,
    milvus_rows,
    perturbed_copy_of_minilm,
    rows_in,
    write_sources,
)

QUESTION = "which variable points at the Milvus server?"


def rag_assets(*args: str) -> subprocess.CompletedProcess:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result


def top_hit(question: str) -> dict:
    return json.loads(rag_assets("search", question, "--json", "-k", "1").stdout)[0]


def models_of(settings: Settings, source: str) -> set[str]:
    return {row["model"] for row in milvus_rows(settings, source).values()}


@pytest.fixture
def two_sources(settings, instance, docs_folder, workdir):
    """Two sources ingested with model A (the bundled MiniLM)."""
    more = workdir / "more"
    more.mkdir()
    (more / "deploy.md").write_text(
        "# Deploying\n\nRun the code location in Docker.\n\n## Kubernetes\n\nOne pod per step.\n"
    )
    write_sources(
        settings.sources_file,
        [
            {"name": "notes", "kind": "local", "path": str(docs_folder)},
            {"name": "more", "kind": "local", "path": str(more)},
        ],
    )
    run_ingest(settings, instance, ["notes", "more"])
    return settings


def switch_model(workdir, monkeypatch) -> tuple[Settings, str]:
    model_b = perturbed_copy_of_minilm(workdir / "model-b")
    monkeypatch.setenv("EMBEDDING_MODEL", str(model_b))
    return Settings.from_env(), Embedder(str(model_b)).identity


@pytest.mark.slow
def test_a_new_model_serves_only_once_every_source_is_on_it_and_evaluated_and_the_old_one_stays_until_pruned(
    two_sources, instance, workdir, monkeypatch
):
    settings_a = two_sources
    a, identity_a = model_collection(settings_a), Embedder(settings_a.embedding_model).identity
    assert serving(settings_a) == a and models_of(settings_a, "notes") == {identity_a}
    assert top_hit(QUESTION)["path"] == "configuration.md"

    settings_b, identity_b = switch_model(workdir, monkeypatch)
    b = model_collection(settings_b)
    [summary] = run_ingest(settings_b, instance, ["notes"])

    # Half built: B holds `notes` only. Readers still get A, whole, searched with A's model.
    assert b != a and serving(settings_b) == a and summary.counts["written"] == summary.counts["chunks"]
    assert models_of(settings_b, "notes") == models_of(settings_b, "more") == {identity_a}
    assert latest_metadata(instance, "retrieval_eval", "notes")["collection"] == b
    state = latest_metadata(instance, "serving_collection", "notes")
    assert (state["serving"], state["candidate"], state["moved"], state["waiting_for"]) == (
        a,
        b,
        False,
        "more",
    )
    assert top_hit(QUESTION)["path"] == "configuration.md"

    run_ingest(settings_b, instance, ["more"])

    # Complete and evaluated: the alias moved; A is kept for rollback.
    assert serving(settings_b) == b and models_of(settings_b, "notes") == models_of(settings_b, "more") == {
        identity_b
    }
    assert latest_metadata(instance, "serving_collection", "more")["moved"] is True
    assert {a, b} <= collections(settings_b)
    assert top_hit(QUESTION)["path"] == "configuration.md"

    pruned = rag_assets("prune-collections")

    assert f"dropped {a}" in pruned.stdout
    assert a not in collections(settings_b) and serving(settings_b) == b
    assert top_hit(QUESTION)["path"] == "configuration.md"


@pytest.mark.slow
def test_a_model_that_fails_the_evaluation_is_never_served(two_sources, instance, workdir, monkeypatch):
    a = model_collection(two_sources)
    monkeypatch.setenv("RAG_EVAL_K", "1")
    monkeypatch.setenv("RAG_MIN_RECALL", "1.0")
    settings_b, _ = switch_model(workdir, monkeypatch)
    misleading_queries(settings_b)

    with pytest.raises(IngestFailed, match="retrieval_eval"):
        run_ingest(settings_b, instance, ["notes", "more"])

    assert serving(settings_b) == a
    assert model_collection(settings_b) in collections(settings_b)  # built, measured, refused


@pytest.mark.slow
def test_removing_a_source_removes_it_from_every_collection_of_the_serving_name(
    two_sources, instance, workdir, monkeypatch, docs_folder
):
    a = model_collection(two_sources)
    settings_b, _ = switch_model(workdir, monkeypatch)
    run_ingest(settings_b, instance, ["notes", "more"])
    assert serving(settings_b) == model_collection(settings_b)
    write_sources(settings_b.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])

    cleanup = build_definitions(settings_b).resolve_job_def(SOURCE_CLEANUP_JOB)
    result = cleanup.execute_in_process(
        run_config={"ops": {"remove_sources": {"config": {"sources": ["more"]}}}}, instance=instance
    )

    assert result.success
    assert milvus_rows(settings_b, "more") == {}  # the served collection (B's)
    assert rows_in(settings_b, a, "more") == []  # and the rollback copy: a rollback must not bring it back
    assert milvus_rows(settings_b, "notes")


@pytest.mark.slow
def test_a_new_document_prompt_is_a_new_collection_served_only_once_every_source_is_on_it_and_evaluated(
    two_sources, instance, monkeypatch
):
    settings_a = two_sources
    a = model_collection(settings_a)
    monkeypatch.setenv("EMBEDDING_DOCUMENT_PROMPT", "passage: ")
    settings_b = Settings.from_env()
    b, identity_b = model_collection(settings_b), build_resources(settings_b)["embedder"].get().identity

    run_ingest(settings_b, instance, ["notes"])

    # Half built: readers keep the old prompt's collection, searched with its own (no) prompt.
    assert b != a and serving(settings_b) == a
    assert latest_metadata(instance, "retrieval_eval", "notes")["collection"] == b
    assert latest_metadata(instance, "serving_collection", "notes")["moved"] is False
    assert top_hit(QUESTION)["path"] == "configuration.md"

    run_ingest(settings_b, instance, ["more"])

    assert serving(settings_b) == b and models_of(settings_b, "notes") == models_of(settings_b, "more") == {
        identity_b
    }
    assert latest_metadata(instance, "serving_collection", "more")["moved"] is True
    assert {a, b} <= collections(settings_b)
    assert top_hit(QUESTION)["path"] == "configuration.md"


@pytest.mark.slow
def test_a_prompt_that_fails_the_evaluation_is_never_served(two_sources, instance, monkeypatch):
    a = model_collection(two_sources)
    monkeypatch.setenv("RAG_EVAL_K", "1")
    monkeypatch.setenv("RAG_MIN_RECALL", "1.0")
    monkeypatch.setenv("EMBEDDING_QUERY_PROMPT", "query: ")
    settings_b = Settings.from_env()
    misleading_queries(settings_b)

    with pytest.raises(IngestFailed, match="retrieval_eval"):
        run_ingest(settings_b, instance, ["notes", "more"])

    assert serving(settings_b) == a
    assert model_collection(settings_b) in collections(settings_b) - {a}  # built, measured, refused
