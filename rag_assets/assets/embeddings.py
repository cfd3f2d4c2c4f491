"""embeddings: one vector per chunk, computed by the one model on the GPU (pool `gpu`, limit 1)."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from rag_assets.core.chunking import embedding_input
from rag_assets.core.progress import Reporter
from rag_assets.metadata import CHUNKS_EMBEDDED, TOKENS_EMBEDDED
from rag_assets.partitions import source_partitions
from rag_assets.resources.embedder import EmbedderResource

# Where executors that place steps put this one: the Celery `gpu` queue (one worker, concurrency 1)
# and, on Kubernetes, a pod with one GPU. Executors that do not know a tag ignore it.
GPU_STEP_TAGS = {
    "dagster-celery/queue": "gpu",
    "dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}},
}


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"pytorch"},
    pool="gpu",
    io_manager_key="parquet_io_manager",
    op_tags=GPU_STEP_TAGS,
)
def embeddings(
    context: dg.AssetExecutionContext, chunks: dict[str, pd.DataFrame], embedder: EmbedderResource
) -> dict[str, pd.DataFrame]:
    """A unit-length vector for each chunk's breadcrumb and text.

    All partitions of a run are embedded in this one step, by one model load. Texts the model has
    embedded before come from the embedding cache (keyed by model identity and text hash), so an
    unchanged source makes zero forward passes.
    """
    model = embedder.get()
    cache = embedder.open_cache()
    # Chunks embedded of all chunks of the step, tokens/s and ETA: in the run log about every 10 s.
    progress = Reporter("embeddings", "chunks", sum(len(f) for f in chunks.values()), log=context.log.info)
    try:
        frames = {}
        for key, frame in chunks.items():
            started, before = (
                time.perf_counter(),
                (model.stats.tokens, model.stats.batches, model.stats.seconds),
            )
            vectors, hits = embed_with_cache(model, cache, frame, progress)
            frames[key] = pd.DataFrame(
                {
                    "id": frame["id"],
                    "content_hash": frame["content_hash"],
                    "model": model.identity,
                    "vector": list(vectors),
                }
            )
            tokens, batches, seconds = (
                now - then
                for now, then in zip((model.stats.tokens, model.stats.batches, model.stats.seconds), before)
            )
            context.add_asset_metadata(
                {
                    "dagster/row_count": len(frame),
                    CHUNKS_EMBEDDED: len(frame) - hits,
                    "cache_hits": hits,
                    "cache_hit_rate": round(hits / len(frame), 4) if len(frame) else 1.0,
                    TOKENS_EMBEDDED: tokens,
                    "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
                    "forward_passes": batches,
                    "model": model.identity,
                    "device": model.device if batches else "not loaded",
                    # Resolving `auto` needs torch: a step that ran no batch never imports it.
                    "precision": model.precision if batches else "not loaded",
                    "seconds": round(time.perf_counter() - started, 3),
                },
                partition_key=key,
            )
        progress.finish()
        return frames
    finally:
        cache.close()


def embed_with_cache(
    model, cache, frame: pd.DataFrame, progress: Reporter | None = None
) -> tuple[np.ndarray, int]:
    """Vectors for a chunk frame; only texts missing from the cache reach the model."""
    hashes = list(frame["content_hash"])
    known = cache.get_many(hashes)
    missing = {
        h: embedding_input(heading, text)
        for h, heading, text in zip(hashes, frame["heading"], frame["text"])
        if h not in known
    }
    if progress:
        progress.advance(len(hashes) - len(missing), reused=True)
    if missing:
        on_batch = (lambda texts, tokens: progress.advance(texts, tokens=tokens)) if progress else None
        fresh = model.embed_documents(list(missing.values()), on_batch=on_batch)
        computed = dict(zip(missing, fresh))
        cache.put_many(computed)
        known.update(computed)
    if not hashes:
        return np.zeros((0, model.dimension), np.float32), 0
    return np.stack([known[h] for h in hashes]), len(hashes) - len(missing)
