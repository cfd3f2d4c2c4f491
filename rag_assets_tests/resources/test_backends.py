"""EMBEDDING_BACKEND on the bundled MiniLM: each backend's vectors agree with fp32 torch within the
tolerance docs/models.md states, the export is made once into the data directory, and the backend
is part of the vectors' identity. The `[onnx]` and `[openvino]` extras are test dependencies."""

import json

import numpy as np
import pytest

from rag_assets.resources.backends import BackendUnavailable
from rag_assets.resources.embedder import Embedder
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.ingest import run_ingest
from rag_assets.settings import Settings
from rag_assets_tests.evaluation.helpers import collections, model_collection, serving
from rag_assets_tests.helpers import SAMPLE_DOCS, cli, write_sources
from rag_assets_tests.tiny_models import tiny_model

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# backend -> (least mean cosine, least single cosine) with fp32 torch; docs/models.md states the same.
TOLERANCE = {"onnx": (0.9999, 0.999), "onnx-int8": (0.99, 0.97), "openvino": (0.999, 0.995)}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """The sample docs' paragraphs, of every length up to the model's limit."""
    paragraphs = [p for path in sorted(SAMPLE_DOCS.glob("*.md")) for p in path.read_text().split("\n\n")]
    return [p for p in paragraphs if p.strip()][:120]


@pytest.fixture(scope="module")
def fp32_torch(texts) -> np.ndarray:
    return Embedder(MINILM, device="cpu", precision="fp32").embed_documents(texts)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino"])
def test_each_backend_agrees_with_fp32_torch_and_is_exported_once(backend, texts, fp32_torch, exports):
    embedder = Embedder(MINILM, device="cpu", backend=backend, exports_dir=exports)

    cosines = (embedder.embed_documents(texts) * fp32_torch).sum(axis=1)

    least_mean, least_one = TOLERANCE[backend]
    assert cosines.mean() >= least_mean and cosines.min() >= least_one, (cosines.mean(), cosines.min())
    files = sorted(p for p in exports.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = Embedder(MINILM, device="cpu", backend=backend, exports_dir=exports)
    np.testing.assert_allclose(
        again.embed_documents(texts[:4]), embedder.embed_documents(texts[:4]), atol=1e-6
    )
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # read, not made again
    assert sorted(p for p in exports.rglob("*") if p.is_file()) == files
    assert embedder.identity != Embedder(MINILM).identity
    assert embedder.identity.startswith("all-MiniLM-L6-v2-")


def test_the_backends_are_each_their_own_identity():
    identities = {b: Embedder(MINILM, backend=b).identity for b in ("torch", "onnx", "onnx-int8", "openvino")}
    assert len(set(identities.values())) == 4


def test_a_model_only_torch_computes_is_refused_on_another_backend_in_one_line(tmp_path):
    folder = tiny_model(tmp_path / "cls-pooled")
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))

    with pytest.raises(BackendUnavailable) as refused:
        Embedder(str(folder), device="cpu", backend="onnx", exports_dir=tmp_path / "exports").embed_documents(
            ["x"]
        )

    assert str(refused.value).startswith("EMBEDDING_BACKEND='onnx': only models of the plain layout")
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_ingest_on_onnx_int8_builds_its_own_collection_from_an_export_in_the_data_directory(
    settings, instance, docs_folder, monkeypatch
):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"])
    on_torch = serving(settings)
    monkeypatch.setenv("EMBEDDING_BACKEND", "onnx-int8")
    int8 = Settings.from_env()

    run_ingest(int8, instance, ["notes"])

    # Its own collection, evaluated, then served (the only source is on it); torch's kept for rollback.
    assert serving(int8) == model_collection(int8) != on_torch and on_torch in collections(int8)
    store = MilvusStore(int8.milvus_uri, int8.collection)
    try:
        assert store.recorded_spec()["backend"] == "onnx-int8"
    finally:
        store.close()
    assert list((int8.cache_dir / "exports").glob("all-MiniLM-L6-v2-*/model_int8.onnx"))
    result = cli("search", "which variable points at the Milvus server?", "--json", "-k", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["path"] == "configuration.md"
