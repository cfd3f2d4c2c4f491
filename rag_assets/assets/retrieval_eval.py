"""eval_queries and retrieval_eval: how well the current model's collection finds each source's sections.

eval_queries (pool `gpu`) makes each source's queries from its own chunks (core/evaluation.py) and
embeds them; retrieval_eval (pool `milvus`, the only pool in which Milvus is opened) searches the
model's collection with them and records recall@k and MRR per source, as numeric metadata the UI
plots. Its check `recall_meets_threshold` compares recall@RAG_EVAL_K with RAG_MIN_RECALL: a failure
is an ERROR that fails the run, and so keeps the serving alias where it is, when RAG_EVAL_BLOCKING
is on (the default), and a WARN otherwise.
"""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from rag_assets.assets.chunks import chunks, open_store
from rag_assets.assets.milvus_collection import milvus_collection
from rag_assets.core.evaluation import (
    EvalQuery,
    RetrievalScores,
    file_queries,
    first_relevant_rank,
    heading_queries,
    score_ranks,
    stable_sample,
)
from rag_assets.core.source_store import SourceStore
from rag_assets.metadata import COLLECTION, MEETS_THRESHOLD
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.embedder import EmbedderResource
from rag_assets.resources.evaluation import EvaluationResource
from rag_assets.resources.milvus import MilvusResource, MilvusStore

RECALL_CHECK = "recall_meets_threshold"
MISSES_SHOWN = 10


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"pytorch"},
    pool="gpu",
    io_manager_key="parquet_io_manager",
    deps=[chunks],
)
def eval_queries(
    context: dg.AssetExecutionContext,
    embedder: EmbedderResource,
    evaluation: EvaluationResource,
    artifacts: ArtifactsResource,
) -> dict[str, pd.DataFrame]:
    """The queries each source's retrieval is measured with, and their vectors by the current model.

    Each distinct section title is a query; the chunks of the sections with that title are the
    relevant ones. At most `max_queries` (500) of them, the same ones run after run. The lines of
    `eval_queries/<source>.jsonl` beside the sources file ({"query", "relevant": [path or heading]})
    are added.
    A query this model embedded last time keeps its vector, so an unchanged source makes no forward
    pass. In pool `gpu` with the embedding step: one model on the device at a time.
    """
    model = embedder.get()
    frames = {}
    for key in context.partition_keys:
        with open_store(context, artifacts, key) as store:
            queries, skipped = source_queries(key, store, evaluation)
        previous = artifacts.store.load(context.asset_key.to_user_string(), key)
        vectors, embedded = embed_queries(model, queries, previous)
        frames[key] = pd.DataFrame(
            {
                "query": [q.text for q in queries],
                "origin": [q.origin for q in queries],
                "relevant": [sorted(q.relevant) for q in queries],
                "model": model.identity,
                "vector": list(vectors),
            }
        )
        context.add_asset_metadata(
            {
                "dagster/row_count": len(queries),
                "heading_queries": sum(q.origin == "heading" for q in queries),
                "file_queries": sum(q.origin == "file" for q in queries),
                "file_lines_skipped": len(skipped),
                "queries_embedded": embedded,
                "model": model.identity,
            },
            partition_key=key,
        )
        for note in skipped:
            context.log.warning(note)
    return frames


def source_queries(
    source: str, store: SourceStore, evaluation: EvaluationResource
) -> tuple[list[EvalQuery], list[str]]:
    """Heading queries (sampled) and the user's queries file, if the source has one; the chunks are
    streamed from the store, never loaded whole."""
    queries = stable_sample(heading_queries(_stream(store, ("id", "heading"))), evaluation.max_queries)
    path = evaluation.queries_file(source)
    if path is None:
        return queries, []
    lines = path.read_text(encoding="utf-8").splitlines()
    extra, skipped = file_queries(lines, _stream(store, ("id", "path", "heading")), name=str(path))
    return queries + extra, skipped


def _stream(store: SourceStore, fields: tuple[str, ...]) -> Iterator[tuple]:
    for batch in store.iter_chunks(fields):
        for chunk in batch:
            yield tuple(chunk[f] for f in fields)


def embed_queries(model, queries: list[EvalQuery], previous: pd.DataFrame | None) -> tuple[np.ndarray, int]:
    """A vector per query, reusing the previous materialization's for queries this model embedded."""
    known = {}
    if previous is not None and len(previous):
        same_model = previous[previous["model"] == model.identity]
        known = dict(zip(same_model["query"], same_model["vector"]))
    missing = sorted({q.text for q in queries} - set(known))
    if missing:
        known.update(zip(missing, model.embed_queries(missing)))
    if not queries:
        return np.zeros((0, 0), np.float32), 0
    return np.stack([np.asarray(known[q.text], dtype=np.float32) for q in queries]), len(missing)


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"milvus"},
    pool="milvus",
    io_manager_key="parquet_io_manager",
    deps=[milvus_collection],
    check_specs=[
        dg.AssetCheckSpec(
            RECALL_CHECK,
            asset="retrieval_eval",
            blocking=True,
            description=(
                "recall@RAG_EVAL_K >= RAG_MIN_RECALL for every source; "
                "ERROR (stops the run) when RAG_EVAL_BLOCKING, else WARN."
            ),
        )
    ],
)
def retrieval_eval(
    context: dg.AssetExecutionContext,
    eval_queries: dict[str, pd.DataFrame],
    milvus: MilvusResource,
    evaluation: EvaluationResource,
):
    """recall@1/5/10 and MRR@10 of the current model's collection for each source, on its eval queries.

    One row per query: its text, origin, relevant chunk ids and the rank of the first relevant hit
    (None: not in the top 10). Searches are restricted to the source's own rows. The collection is
    the one the write step just filled, so a new model is measured before any reader is sent to it.
    """
    store = milvus.open()
    frames, scores = {}, {}
    try:
        for key, queries in eval_queries.items():
            frames[key], scores[key] = evaluate_source(store, key, queries, milvus.model_identity, evaluation)
            context.add_asset_metadata(
                source_metadata(scores[key], frames[key], store.collection, evaluation), partition_key=key
            )
    finally:
        store.close()
    yield dg.Output(frames)
    yield threshold_result(scores, evaluation)


def evaluate_source(
    store: MilvusStore,
    source: str,
    queries: pd.DataFrame,
    identity: str | None,
    evaluation: EvaluationResource,
) -> tuple[pd.DataFrame, RetrievalScores]:
    if identity and len(queries) and set(queries["model"]) != {identity}:
        raise ValueError(
            f"source {source!r}: eval queries embedded by another model than {identity}: re-materialize "
            "eval_queries"
        )
    depth = max(evaluation.ks)
    ranked = (
        store.search_ids(np.stack(queries["vector"].to_numpy()), limit=depth, source=source)
        if len(queries)
        else []
    )
    ranks = [first_relevant_rank(hits, set(relevant)) for hits, relevant in zip(ranked, queries["relevant"])]
    frame = queries[["query", "origin", "relevant"]].assign(
        first_relevant_rank=pd.array(ranks, dtype="Int64")
    )
    return frame, score_ranks(ranks, evaluation.ks, depth)


def source_metadata(
    scores: RetrievalScores, frame: pd.DataFrame, collection: str, evaluation: EvaluationResource
) -> dict:
    recall = scores.recall(evaluation.k)
    ranks = frame["first_relevant_rank"].fillna(scores.depth + 1).astype(int)
    misses = frame.loc[ranks > evaluation.k, "query"].head(MISSES_SHOWN)
    return {
        **scores.as_metadata(),
        "k": evaluation.k,
        "min_recall": evaluation.min_recall,
        MEETS_THRESHOLD: bool(not scores.queries or recall >= evaluation.min_recall),
        COLLECTION: collection,
        "missed_queries": dg.MetadataValue.md("\n".join(f"- {q}" for q in misses) or "*None.*"),
    }


def threshold_result(
    scores: dict[str, RetrievalScores], evaluation: EvaluationResource
) -> dg.AssetCheckResult:
    """One result for the run's sources: which fall below the minimum recall@k."""
    k, minimum = evaluation.k, evaluation.min_recall
    below = sorted(s for s, v in scores.items() if v.queries and v.recall(k) < minimum)
    rows = [f"| {s} | {v.queries} | {v.recall(k):.3f} | {v.mrr:.3f} |" for s, v in scores.items()]
    table = "\n".join(
        [f"| source | queries | recall@{k} | MRR@{max(evaluation.ks)} |", "| --- | --- | --- | --- |", *rows]
    )
    measured = [v.recall(k) for v in scores.values() if v.queries]
    return dg.AssetCheckResult(
        check_name=RECALL_CHECK,
        passed=not below,
        severity=evaluation.severity,
        description=(
            f"recall@{k} below {minimum} for {', '.join(below)}"
            if below
            else f"{len(scores)} source(s) at recall@{k} >= {minimum}"
        ),
        metadata={
            "sources": dg.MetadataValue.md(table),
            "sources_below": len(below),
            "lowest_recall": round(min(measured), 4) if measured else 1.0,
            "min_recall": minimum,
            "k": k,
        },
    )
