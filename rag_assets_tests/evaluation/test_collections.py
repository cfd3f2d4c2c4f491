"""Collections behind the serving name: names per model, the alias on Milvus Lite, when it moves, pruning."""

import pytest
from pymilvus import DataType, MilvusClient

from rag_assets.resources.milvus import MilvusStore
from rag_assets.resources.milvus.aliases import (
    Promotion,
    decide_promotion,
    model_collection_name,
    model_properties,
    recorded_model,
)

A, B = "rag_chunks__model_a_0000", "rag_chunks__model_b_1111"


def test_each_model_has_its_own_collection_name_in_milvus_alphabet():
    assert (
        model_collection_name("rag_chunks", "all-MiniLM-L6-v2-1A2b3c4d5e6f7a8b")
        == "rag_chunks__all_minilm_l6_v2_1a2b3c4d5e6f7a8b"
    )
    assert model_collection_name("rag_chunks", "other.model v2-ffff") == "rag_chunks__other_model_v2_ffff"
    long = model_collection_name("docs", "x" * 300 + "-abcdef0123456789")
    assert long.endswith("_abcdef0123456789") and len(long) < 100
    assert recorded_model({"properties": model_properties("/models/b", "b-1111")}) == ("/models/b", "b-1111")
    assert recorded_model({"properties": {}}) == recorded_model({}) == (None, None)


@pytest.mark.parametrize(
    ("serving", "evaluations", "require_pass", "expected"),
    [
        (None, {}, True, Promotion(False, "no source evaluated on it yet", ("x", "y"))),
        (None, {"x": (B, True)}, True, Promotion(True, "first collection", ("y",))),
        (A, {"x": (B, True), "y": (A, True)}, True, Promotion(False, "incomplete", ("y",))),
        (A, {"x": (B, True), "y": (B, True)}, True, Promotion(True, "complete and evaluated")),
        (
            A,
            {"x": (B, True), "y": (B, False)},
            True,
            Promotion(False, "below the recall threshold", (), ("y",)),
        ),
        (
            A,
            {"x": (B, True), "y": (B, False)},
            False,
            Promotion(True, "complete and evaluated"),
        ),  # the check only warns
        (B, {"x": (B, True), "y": (B, True)}, True, Promotion(False, "already serving")),
    ],
)
def test_the_alias_moves_only_when_every_source_is_written_and_evaluated_on_the_new_collection(
    serving, evaluations, require_pass, expected
):
    decision = decide_promotion(
        serving=serving,
        candidate=B,
        registered=["x", "y"],
        evaluations=evaluations,
        require_pass=require_pass,
    )
    assert decision == expected


def make(store: MilvusStore, name: str, rows: int = 0, model: str = "") -> None:
    """A small collection of another shape, built on the store's client: only the alias logic is tested."""
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    index = store.client.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    store.client.create_collection(
        name,
        schema=schema,
        index_params=index,
        properties=model_properties(model, f"{model}-0") if model else None,
    )
    if rows:
        store.client.insert(name, [{"id": i, "vector": [0.5] * 4} for i in range(rows)])
        store.client.flush(name)


@pytest.fixture
def store(tmp_path):
    store = MilvusStore(str(tmp_path / "milvus.db"), "rag_chunks")
    yield store
    store.close()


def test_milvus_lite_alias_resolves_for_readers_and_moves_atomically(store):
    make(store, A, rows=2, model="a")
    make(store, B, rows=3, model="b")
    assert store.serving_target("rag_chunks") is None

    assert store.point_alias("rag_chunks", A) is None
    assert store.serving_target("rag_chunks") == A
    assert store.count_rows() == 2  # the store is on "rag_chunks": the alias reads as the collection

    assert store.point_alias("rag_chunks", B) == A
    assert store.count_rows() == 3
    assert {c.name: (c.rows, c.serving, c.model) for c in store.describe_family("rag_chunks")} == {
        A: (2, False, "a"),
        B: (3, True, "b"),
    }


def test_a_collection_named_like_the_alias_is_kept_as_legacy_when_the_alias_first_moves(store):
    make(store, "rag_chunks", rows=1)
    make(store, B, rows=3)
    assert store.serving_target("rag_chunks") == "rag_chunks"

    assert store.point_alias("rag_chunks", B) == "rag_chunks"

    assert store.serving_target("rag_chunks") == B
    assert {"rag_chunks__legacy", B} <= set(store.list_collections())


def test_pruning_keeps_the_served_collection_and_the_ones_asked_for_and_nothing_of_other_names(store):
    for name in (A, B, "rag_chunks__model_c_2222", "other_collection"):
        make(store, name)
    store.point_alias("rag_chunks", B)

    assert store.prune_family("rag_chunks", {"rag_chunks__model_c_2222"}, dry_run=True) == [A]
    assert A in store.list_collections()
    assert store.prune_family("rag_chunks", set()) == [A, "rag_chunks__model_c_2222"]

    assert set(store.list_collections()) == {B, "other_collection"}
    assert store.serving_target("rag_chunks") == B
