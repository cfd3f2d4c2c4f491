"""The embedding model: real MiniLM, token-budget batches, halving on out-of-memory, precision."""

import numpy as np
import pytest

from rag_assets.resources.embedder import Embedder

TEXTS = [f"Sentence number {i} talks about {'databases ' * (i % 7)}and models." for i in range(40)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' own encode, fp32: the vectors every other path must agree with."""
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32")
    return embedder.sentence_transformer.encode(TEXTS, normalize_embeddings=True)


def test_vectors_match_sentence_transformers_encode(reference):
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32", batch_tokens=256)
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (40, 384) and embedder.dimension == 384
    assert np.allclose(vectors, reference, atol=1e-5)
    assert embedder.stats.batches > 1 and embedder.stats.inputs == 40


def test_out_of_memory_in_a_forward_pass_halves_the_batch_and_completes(reference):
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32", batch_tokens=100_000)
    real_forward = embedder.forward

    def forward_that_runs_out_of_memory_above_8_rows(features):
        if len(features["input_ids"]) > 8:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.50 GiB (injected)")
        return real_forward(features)

    embedder.forward = forward_that_runs_out_of_memory_above_8_rows
    vectors = embedder.embed(TEXTS)
    assert np.allclose(vectors, reference, atol=1e-5)
    assert embedder.stats.halvings == 1 + 2 + 4  # 40 -> 2 x 20 -> 4 x 10 -> 8 x 5
    assert embedder.stats.batch_sizes == [5] * 8


@pytest.mark.parametrize(("precision", "weights"), [("bf16", "bfloat16"), ("bf16-autocast", "float32")])
def test_bf16_casts_the_weights_or_autocasts_and_both_agree_with_fp32(reference, precision, weights):
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision=precision)
    vectors = embedder.embed(TEXTS)
    assert {str(p.dtype) for p in embedder.model.parameters()} == {f"torch.{weights}"}
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    cosines = (vectors * reference).sum(axis=1)
    assert float(cosines.mean()) >= 0.999 and float(cosines.min()) > 0.99


def test_the_embedding_cache_is_kept_per_precision_path_chunking_and_collections_per_model(tmp_path):
    from rag_assets.resources.embedder import EmbedderResource

    def resource(precision: str) -> EmbedderResource:
        return EmbedderResource(
            model="all-MiniLM-L6-v2", device="cpu", precision=precision, cache_dir=str(tmp_path)
        )

    paths, fingerprints = set(), set()
    for precision in ("fp32", "bf16", "bf16-autocast"):
        cache = resource(precision).open_cache()
        paths.add(cache.path)
        cache.close()
        fingerprints.add(resource(precision).chunking_fingerprint())
    assert len(paths) == 3 and len(fingerprints) == 1
    assert Embedder("all-MiniLM-L6-v2", precision="bf16").vectors_identity.endswith("-bf16")


def test_an_unknown_precision_is_refused_naming_the_choices():
    with pytest.raises(
        ValueError, match=r"EMBEDDING_PRECISION='bf8': expected one of auto, fp32, bf16, fp16"
    ):
        _ = Embedder("all-MiniLM-L6-v2", device="cpu", precision="bf8").precision


def test_identity_changes_with_the_weights(tmp_path):
    import shutil

    original = Embedder("all-MiniLM-L6-v2")
    copy = tmp_path / "model"
    shutil.copytree(original.model_dir, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert Embedder(str(copy)).identity != original.identity
