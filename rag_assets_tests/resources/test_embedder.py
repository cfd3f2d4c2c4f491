"""The embedding model: real MiniLM, token-budget batches, halving on out-of-memory, precision."""

import numpy as np
import pytest

from rag_assets.resources.embedder import Embedder

TEXTS = [f"Sentence number {i} talks about {'databases ' * (i % 7)}and models." for i in range(40)]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """sentence-transformers' own encode, fp32: the vectors every other path must agree with."""
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32")
    return embedder.model.encode(TEXTS, normalize_embeddings=True)


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


def test_bf16_agrees_with_fp32(reference):
    vectors = Embedder("all-MiniLM-L6-v2", device="cpu", precision="bf16").embed(TEXTS)
    assert float((vectors * reference).sum(axis=1).mean()) > 0.99


def test_identity_changes_with_the_weights(tmp_path):
    import shutil

    original = Embedder("all-MiniLM-L6-v2")
    copy = tmp_path / "model"
    shutil.copytree(original.model_dir, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text() + "\n")
    assert Embedder(str(copy)).identity != original.identity
