"""retrieval_eval on real storage: recall@k and MRR per source, the threshold that warns or blocks, users'
queries."""

import json

import pandas as pd
import pytest

from rag_assets.assets.retrieval_eval import RECALL_CHECK
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.settings import Settings
from rag_assets_tests.evaluation.helpers import (
    latest_check,
    misleading_queries,
    model_collection,
    serving,
)
from rag_assets_tests.helpers import latest_metadata, write_sources

SAMPLE_TITLES = 18  # distinct section titles of the sample docs (one per chunk)


@pytest.fixture
def notes(settings, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    return docs_folder


@pytest.mark.slow
def test_every_ingest_measures_recall_and_mrr_of_the_models_collection_per_source(settings, instance, notes):
    run_ingest(settings, instance, ["notes"])

    queries = latest_metadata(instance, "eval_queries", "notes")
    scores = latest_metadata(instance, "retrieval_eval", "notes")
    assert (
        queries["heading_queries"] == scores["queries"] == SAMPLE_TITLES
        and queries["queries_embedded"] == SAMPLE_TITLES
    )
    assert all(
        isinstance(scores[key], float) for key in ("recall_at_1", "recall_at_5", "recall_at_10", "mrr_at_10")
    )
    assert 0.5 <= scores["recall_at_1"] <= scores["recall_at_5"] <= scores["recall_at_10"] <= 1.0
    assert scores["recall_at_1"] <= scores["mrr_at_10"] <= scores["recall_at_10"]
    assert (
        scores["collection"] == model_collection(settings) == serving(settings) and scores["meets_threshold"]
    )
    check = latest_check(instance, RECALL_CHECK)
    assert check.passed and "| notes | 18 |" in check.metadata["sources"].value
    per_query = pd.read_parquet(settings.artifacts_dir / "retrieval_eval" / "notes.parquet")
    assert len(per_query) == SAMPLE_TITLES and set(per_query.columns) == {
        "query",
        "origin",
        "relevant",
        "first_relevant_rank",
    }

    run_ingest(settings, instance, ["notes"])

    assert (
        latest_metadata(instance, "eval_queries", "notes")["queries_embedded"] == 0
    )  # vectors of unchanged queries are kept


@pytest.mark.slow
def test_a_source_below_the_minimum_recall_fails_its_run_when_blocking_and_only_warns_otherwise(
    notes, instance, monkeypatch
):
    monkeypatch.setenv("RAG_EVAL_K", "1")
    monkeypatch.setenv("RAG_MIN_RECALL", "1.0")
    settings = Settings.from_env()
    misleading_queries(settings)

    with pytest.raises(IngestFailed, match="retrieval_eval"):
        run_ingest(settings, instance, ["notes"])

    assert latest_metadata(instance, "retrieval_eval", "notes")["meets_threshold"] is False
    check = latest_check(instance, RECALL_CHECK)
    assert (
        not check.passed
        and check.severity.value == "ERROR"
        and check.description == "recall@1 below 1.0 for notes"
    )

    monkeypatch.setenv("RAG_EVAL_BLOCKING", "false")
    run_ingest(Settings.from_env(), instance, ["notes"])

    check = latest_check(instance, RECALL_CHECK)
    assert not check.passed and check.severity.value == "WARN"


@pytest.mark.slow
def test_a_users_queries_file_is_evaluated_with_the_heading_queries(settings, instance, notes):
    settings.queries_dir.mkdir()
    (settings.queries_dir / "notes.jsonl").write_text(
        "\n".join(
            [
                json.dumps(
                    {"query": "which variable points at the Milvus server?", "relevant": ["configuration.md"]}
                ),
                json.dumps({"query": "a page that was deleted", "relevant": ["deleted.md"]}),
            ]
        )
    )

    run_ingest(settings, instance, ["notes"])

    queries = latest_metadata(instance, "eval_queries", "notes")
    assert (queries["heading_queries"], queries["file_queries"], queries["file_lines_skipped"]) == (
        SAMPLE_TITLES,
        1,
        1,
    )
    per_query = pd.read_parquet(settings.artifacts_dir / "retrieval_eval" / "notes.parquet").set_index(
        "query"
    )
    assert per_query.loc["which variable points at the Milvus server?", "first_relevant_rank"] == 1


def test_bad_evaluation_settings_are_refused(env, monkeypatch):
    monkeypatch.setenv("RAG_MIN_RECALL", "80")
    with pytest.raises(ValueError, match="RAG_MIN_RECALL"):
        Settings.from_env()
    monkeypatch.setenv("RAG_MIN_RECALL", "0.8")
    monkeypatch.setenv("RAG_EVAL_BLOCKING", "maybe")
    with pytest.raises(ValueError, match="RAG_EVAL_BLOCKING"):
        Settings.from_env()
