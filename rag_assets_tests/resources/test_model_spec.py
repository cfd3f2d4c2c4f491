"""Prompts and similarity as the model defines them, on small models made here (tiny_models.py): chunks
are embedded as documents and questions as queries, exactly as sentence-transformers' own
encode_document / encode_query do, and the collection compares vectors with the model's similarity."""

import json
from pathlib import Path

import numpy as np
import pytest

from rag_assets.core.artifacts import ArtifactStore
from rag_assets.core.chunking import embedding_input
from rag_assets.core.model_files import model_identity, vector_spec
from rag_assets.resources.embedder import Embedder
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.ingest import run_ingest
from rag_assets.settings import Settings
from rag_assets_tests.helpers import cli, milvus_rows, write_sources
from rag_assets_tests.tiny_models import tiny_model

NOMIC = {"query": "search_query: ", "document": "search_document: "}
E5 = {"query": "query: ", "passage": "passage: "}
TEXTS = ["How do I add a source?", "Milvus Lite keeps the collection in one file. " * 8, "x"]
QUESTION = "which variable points at the Milvus server?"


def sentence_transformer(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def nomic_style(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models") / "nomic-style", prompts=NOMIC)


def test_documents_and_queries_get_the_models_own_prompts_as_sentence_transformers_puts_them(nomic_style):
    embedder, reference = (
        Embedder(str(nomic_style), device="cpu", precision="fp32"),
        sentence_transformer(nomic_style),
    )

    documents, queries = embedder.embed_documents(TEXTS), embedder.embed_queries(TEXTS)

    np.testing.assert_allclose(documents, reference.encode_document(TEXTS), atol=1e-5)
    np.testing.assert_allclose(queries, reference.encode_query(TEXTS), atol=1e-5)
    # The prompts make a difference this test can see: without them the vectors are others.
    assert np.abs(documents - reference.encode(TEXTS, prompt="")).max() > 1e-2
    assert np.abs(documents - queries).max() > 1e-2


def test_a_passage_prompt_is_the_document_prompt_and_a_default_prompt_fills_in(tmp_path):
    """E5's `passage: ` is for documents (sentence-transformers 6's placeholder `document` prompt hides
    it from its encode_document; the model's authors mean it); default_prompt_name applies to a kind
    of text the model has no prompt for."""
    e5 = tiny_model(tmp_path / "e5", prompts=E5)
    embedder, reference = Embedder(str(e5), device="cpu", precision="fp32"), sentence_transformer(e5)

    np.testing.assert_allclose(
        embedder.embed_documents(TEXTS), reference.encode(TEXTS, prompt_name="passage"), atol=1e-5
    )
    np.testing.assert_allclose(embedder.embed_queries(TEXTS), reference.encode_query(TEXTS), atol=1e-5)
    spec = vector_spec(
        tiny_model(tmp_path / "d", prompts={"query": "q: ", "any": "a: "}, default_prompt_name="any")
    )
    assert (spec.query_prompt, spec.document_prompt) == ("q: ", "a: ")


def test_a_model_sentence_transformers_must_compute_gets_the_same_prompts(tmp_path):
    """Pooling that leaves the prompt's tokens out of the mean: computed by SentenceTransformer itself."""
    folder = tiny_model(tmp_path / "instructor-style", prompts=NOMIC)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "include_prompt": False}))
    embedder, reference = Embedder(str(folder), device="cpu", precision="fp32"), sentence_transformer(folder)

    np.testing.assert_allclose(embedder.embed_documents(TEXTS), reference.encode_document(TEXTS), atol=1e-5)
    np.testing.assert_allclose(embedder.embed_queries(TEXTS), reference.encode_query(TEXTS), atol=1e-5)
    assert type(embedder.model).__name__ == "SentenceTransformer"


def test_prompt_settings_override_the_models_and_are_part_of_its_identity(nomic_style):
    own = Embedder(str(nomic_style), device="cpu", precision="fp32")
    overridden = Embedder(str(nomic_style), device="cpu", precision="fp32", query_prompt="Represent: ")

    np.testing.assert_allclose(
        overridden.embed_queries(TEXTS),
        sentence_transformer(nomic_style).encode(TEXTS, prompt="Represent: "),
        atol=1e-5,
    )
    assert overridden.identity != own.identity == model_identity(str(nomic_style))
    assert (
        Embedder(str(nomic_style), document_prompt="search_document: ").identity == own.identity
    )  # same vectors


def test_chunks_leave_room_for_the_document_prompt(tmp_path):
    long_prompt = "Represent this documentation section for retrieval: "
    folder = tiny_model(tmp_path / "m", prompts={"document": long_prompt}, max_seq_length=64)
    embedder = Embedder(str(folder), device="cpu")
    prompt_tokens = len(embedder.tokenizer.encode(long_prompt, add_special_tokens=False))

    assert embedder.chunk_token_limit == 64 - prompt_tokens
    page = "# Title\n\n" + " ".join(f"word{i}" for i in range(600)) + "\n"
    chunks = embedder.chunker().split_page("s", "page.md", page, "markdown")
    assert len(chunks) > 3
    for chunk in chunks:  # what the model reads, prompt included, is never truncated
        assert len(embedder.tokenizer.encode(long_prompt + chunk.embedding_input).ids) <= 64


def ingest_with(settings_env: dict, monkeypatch, docs_folder: Path, instance) -> Settings:
    """One source ingested with these variables set, in fp32 like the reference; random tiny models find
    little: no recall minimum."""
    for name, value in {"RAG_MIN_RECALL": "0", "EMBEDDING_PRECISION": "fp32", **settings_env}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"])
    return settings


def stored_vectors(settings: Settings, source: str) -> dict[str, tuple[str, np.ndarray]]:
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        store.client.load_collection(settings.collection)
        rows = store.client.query(
            settings.collection,
            filter=f'source == "{source}"',
            output_fields=["id", "heading", "text", "vector"],
            limit=10000,
        )
    finally:
        store.close()
    return {
        r["id"]: (embedding_input(r["heading"], r["text"]), np.asarray(r["vector"], np.float32)) for r in rows
    }


def describe(settings: Settings) -> tuple[dict, dict]:
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        target = store.serving_target()
        index = store.client.describe_index(target, "vector")
        return store.client.describe_collection(target)["properties"], index
    finally:
        store.close()


@pytest.mark.slow
def test_ingest_stores_documents_and_search_and_evaluation_embed_queries_with_the_models_prompts(
    nomic_style, settings, instance, docs_folder, monkeypatch
):
    settings = ingest_with({"EMBEDDING_MODEL": str(nomic_style)}, monkeypatch, docs_folder, instance)
    reference = sentence_transformer(nomic_style)

    stored = stored_vectors(settings, "notes")
    texts = [text for text, _ in stored.values()]
    np.testing.assert_allclose(
        np.stack([v for _, v in stored.values()]), reference.encode_document(texts), atol=1e-4
    )
    queries = ArtifactStore(settings.artifacts_dir).load("eval_queries", "notes")
    np.testing.assert_allclose(
        np.stack(queries["vector"].to_numpy()), reference.encode_query(list(queries["query"])), atol=1e-4
    )
    result = cli("search", QUESTION, "--json", "-k", "3")
    assert result.returncode == 0, result.stderr
    query = reference.encode_query([QUESTION])[0]
    without_prompt = reference.encode([QUESTION], prompt="")[0]
    for hit in json.loads(result.stdout):
        document = reference.encode_document([embedding_input(hit["heading"], hit["text"])])[0]
        assert hit["score"] == pytest.approx(float(query @ document), abs=2e-5)
        assert abs(float(without_prompt @ document) - hit["score"]) > 2e-4  # the query prompt counted
    properties, _ = describe(settings)
    assert json.loads(properties["rag_assets.query_prompt"]) == "search_query: "
    assert json.loads(properties["rag_assets.document_prompt"]) == "search_document: "


@pytest.mark.slow
@pytest.mark.parametrize(
    ("similarity", "metric", "normalize", "prompts"),
    [
        (None, "COSINE", True, {}),  # neither prompts nor a similarity: cosine, as before
        ("cosine", "COSINE", False, NOMIC),
        ("dot", "IP", False, {}),
        ("euclidean", "L2", False, NOMIC),
    ],
)
def test_the_collection_compares_vectors_with_the_models_similarity(
    similarity, metric, normalize, prompts, tmp_path, settings, instance, docs_folder, monkeypatch
):
    model = tiny_model(
        tmp_path / f"tiny-{similarity}", prompts=prompts, similarity_fn_name=similarity, normalize=normalize
    )
    settings = ingest_with({"EMBEDDING_MODEL": str(model)}, monkeypatch, docs_folder, instance)
    reference = sentence_transformer(model)

    properties, index = describe(settings)
    assert (properties["rag_assets.metric"], index["metric_type"]) == (metric, metric)
    stored = stored_vectors(settings, "notes")
    vectors = np.stack([v for _, v in stored.values()])
    expected = reference.encode_document(
        [t for t, _ in stored.values()], normalize_embeddings=metric == "COSINE"
    )
    np.testing.assert_allclose(vectors, expected, atol=1e-4)  # dot and euclidean: the model's own lengths
    result = cli("search", QUESTION, "--json", "-k", "1")
    assert result.returncode == 0, result.stderr
    [hit] = json.loads(result.stdout)
    query = reference.encode_query([QUESTION], normalize_embeddings=metric == "COSINE")[0]
    scores = {
        "COSINE": expected @ query,
        "IP": expected @ query,
        "L2": ((expected - query) ** 2).sum(axis=1),
    }[metric]
    best = int(np.argmin(scores) if metric == "L2" else np.argmax(scores))
    assert hit["text"] in [t for t, _ in stored.values()][best]
    assert hit["score"] == pytest.approx(float(scores[best]), rel=1e-3, abs=1e-4)
    assert milvus_rows(settings, "notes")
