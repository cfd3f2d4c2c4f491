"""embeddings: one vector per chunk, computed by the one model on the GPU (pool `gpu`, limit 1)."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from rag_assets.assets.chunks import chunks, open_store
from rag_assets.core.chunking import embedding_input
from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import VECTORS_MODEL, WRITE, SourceStore
from rag_assets.metadata import CHUNKS_EMBEDDED, TOKENS_EMBEDDED
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.embedder import EmbedderResource

EMBED_BATCH = 1024  # chunks read, embedded and stored (store and cache) at a time

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
    kinds={"pytorch", "sqlite"},
    pool="gpu",
    op_tags=GPU_STEP_TAGS,
    deps=[chunks],
)
def embeddings(
    context: dg.AssetExecutionContext, embedder: EmbedderResource, artifacts: ArtifactsResource
) -> dg.MaterializeResult:
    """A unit-length vector for each chunk's breadcrumb and text, in the source's store (`vectors`).

    All partitions of a run are embedded in this one step, by one model load. Only the chunks that
    have no vector by this model are embedded: the chunks the last run added (every chunk when the
    model changed), EMBED_BATCH at a time. Texts the model has embedded before come from the
    embedding cache (keyed by model identity and text hash), written batch by batch: an interrupted
    run keeps what it computed, and an unchanged source makes zero forward passes.
    """
    model = embedder.get()
    cache = embedder.open_cache()
    if cache.repaired:
        context.log.warning(f"embedding cache {cache.path} could not be read: moved to {cache.repaired}")
    progress = Reporter("embeddings", "chunks", log=context.log.info)
    try:
        for key in context.partition_keys:
            started, before = (
                time.perf_counter(),
                (model.stats.tokens, model.stats.batches, model.stats.seconds),
            )
            with open_store(context, artifacts, key) as store:
                embedded, hits = embed_source(store, model, cache, progress)
                count = store.chunk_count()
                access = store.access_metadata()
            tokens, batches, seconds = (
                now - then
                for now, then in zip((model.stats.tokens, model.stats.batches, model.stats.seconds), before)
            )
            context.add_asset_metadata(
                {
                    "dagster/row_count": count,
                    CHUNKS_EMBEDDED: embedded,
                    "cache_hits": hits,
                    "cache_hit_rate": round(hits / (hits + embedded), 4) if hits + embedded else 1.0,
                    TOKENS_EMBEDDED: tokens,
                    "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
                    "forward_passes": batches,
                    "model": model.identity,
                    "device": model.device if batches else "not loaded",
                    # Resolving `auto` needs torch: a step that ran no batch never imports it.
                    "precision": model.precision if batches else "not loaded",
                    "cache_repaired": str(cache.repaired) if cache.repaired else "no",
                    "seconds": round(time.perf_counter() - started, 3),
                    **access,
                },
                partition_key=key,
            )
        progress.finish()
        return dg.MaterializeResult()
    finally:
        cache.close()


def embed_source(
    store: SourceStore, model, cache, progress: Reporter | None = None, batch: int = EMBED_BATCH
) -> tuple[int, int]:
    """Give every chunk that needs one a vector by `model`; returns (chunks embedded, cache hits)."""
    every_chunk = store.meta(VECTORS_MODEL) != model.identity
    if progress:
        progress.expect(store.chunk_count() if every_chunk else store.pending_count()[WRITE])
    embedded = hits = 0
    for ids in store.ids_without_vector(model.identity, every_chunk=every_chunk, batch=batch):
        frame = pd.DataFrame(store.chunks_of(ids, ("id", "content_hash", "heading", "text")))
        vectors, found = embed_with_cache(model, cache, frame, progress)
        store.put_vectors(model.identity, dict(zip(frame["id"], vectors)))
        embedded, hits = embedded + len(frame) - found, hits + found
    store.set_meta(VECTORS_MODEL, model.identity)
    return embedded, hits


CACHE_WRITE_EVERY_SECONDS = 2.0


class BatchKeeper:
    """Puts the vectors of each embedded batch into the cache as the step goes (at most every
    CACHE_WRITE_EVERY_SECONDS, and at `flush`), not only once the whole step is done: a step that is
    interrupted or killed re-embeds on its next run only what it had not finished. `keys[i]` is the
    cache key of input i."""

    def __init__(self, cache, keys: list[str]):
        self.cache, self.keys = cache, keys
        self.pending: dict[str, np.ndarray] = {}
        self.written_at = time.monotonic()

    def __call__(self, rows: list[int], vectors: np.ndarray) -> None:
        self.pending.update((self.keys[i], v) for i, v in zip(rows, vectors))
        if time.monotonic() - self.written_at >= CACHE_WRITE_EVERY_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.cache.put_many(self.pending)
            self.pending = {}
        self.written_at = time.monotonic()


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
        keep = BatchKeeper(cache, list(missing))
        try:
            fresh = model.embed_documents(list(missing.values()), on_batch=on_batch, on_vectors=keep)
        finally:  # an interrupt (Ctrl-C, SIGTERM) or a failure keeps every batch already embedded
            keep.flush()
        known.update(zip(missing, fresh))
    if not hashes:
        return np.zeros((0, model.dimension), np.float32), 0
    return np.stack([known[h] for h in hashes]), len(hashes) - len(missing)
