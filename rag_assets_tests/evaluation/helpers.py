"""What the evaluation tests write and read back: query files, check evaluations, where the alias points."""

import json

import dagster as dg

from rag_assets.definitions import build_resources
from rag_assets.resources.milvus import MilvusStore
from rag_assets.settings import Settings


def latest_check(instance: dg.DagsterInstance, name: str) -> dg.AssetCheckEvaluation:
    records = instance.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), ascending=True
    )
    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return [e for e in evaluations if e.check_name == name][-1]


def model_collection(settings: Settings) -> str:
    return build_resources(settings)["milvus"].model_collection


def serving(settings: Settings) -> str | None:
    """The collection readers of MILVUS_COLLECTION get now."""
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        return store.serving_target()
    finally:
        store.close()


def collections(settings: Settings) -> set[str]:
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        return set(store.client.list_collections())
    finally:
        store.close()


def misleading_queries(settings: Settings) -> None:
    """A question whose only 'relevant' chunk is one that does not answer it: recall@1 < 1 for sure."""
    folder = settings.queries_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.jsonl").write_text(
        json.dumps({"query": "which variable points at the Milvus server?", "relevant": ["Scores"]}) + "\n"
    )
