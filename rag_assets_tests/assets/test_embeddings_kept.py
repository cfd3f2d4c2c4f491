"""The embedding step keeps its vectors batch by batch (issue 21): an interrupt part-way through a
step loses at most the batch under way, and the next step embeds only what is not cached.

The real model (small batches, so one call makes several) and a real SQLite cache; the interrupt is
a KeyboardInterrupt raised from the progress callback after a batch, where Dagster raises it when
Ctrl-C arrives during a step.
"""

import numpy as np
import pandas as pd
import pytest

from rag_assets.assets.embeddings import embed_with_cache
from rag_assets.core.chunking import embedding_input
from rag_assets.core.hashing import content_hash
from rag_assets.resources.embedder import Embedder
from rag_assets.resources.embedding_cache import EmbeddingCache

TEXTS = [f"Section {i}: the frobnicator frobs {i} times before the widget {i * 7} turns." for i in range(24)]


def chunk_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "content_hash": [content_hash(t) for t in TEXTS],
            "heading": [f"Guide › Part {i}" for i in range(len(TEXTS))],
            "text": TEXTS,
        }
    )


class Interrupting:
    """A progress reporter (the step's Reporter interface) that raises KeyboardInterrupt after n batches."""

    def __init__(self, batches: int):
        self.batches = batches

    def advance(self, units: int = 1, *, tokens: int = 0, reused: bool = False) -> None:
        if not reused:
            self.batches -= 1
            if self.batches == 0:
                raise KeyboardInterrupt


@pytest.mark.slow
def test_an_interrupt_after_two_batches_keeps_their_vectors_and_the_rerun_embeds_only_the_rest(tmp_path):
    model = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32", batch_tokens=128)
    frame = chunk_frame()
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    try:
        with pytest.raises(KeyboardInterrupt):
            embed_with_cache(model, cache, frame, Interrupting(batches=2))
        kept = len(cache)
        assert 0 < kept < len(TEXTS)
        assert model.stats.batches == 2

        vectors, hits = embed_with_cache(model, cache, frame)
    finally:
        cache.close()

    assert hits == kept  # the rerun embedded only what the interrupted call had not
    reference = Embedder("all-MiniLM-L6-v2", device="cpu", precision="fp32").embed(
        [embedding_input(h, t) for h, t in zip(frame["heading"], frame["text"])]
    )
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
