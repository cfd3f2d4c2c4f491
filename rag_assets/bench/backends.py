"""`rag-assets bench --backends torch,onnx,onnx-int8,openvino`: each backend on the pipeline's own
chunks, against fp32 torch.

For each backend: tokens/s of the pipeline's model loop (`Embedder.embed_documents`, the bare_embed
stage), the cosine of each chunk's vector with fp32 torch's, and the retrieval evaluation's scores
(recall@1/5/10, MRR@10 of the pipeline's heading queries, embedded as queries) searched exactly,
in memory, with the model's metric. The export (once per model) and a warm-up pass are off the clock.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rag_assets.core.chunking import Chunk
from rag_assets.core.evaluation import first_relevant_rank, heading_queries, score_ranks, stable_sample
from rag_assets.resources.embedder import Embedder, release_free_heap

MAX_QUERIES = 500  # as eval_queries samples them
DEPTH = 10
WARM_UP_TEXTS = 64


@dataclass(frozen=True)
class BackendRun:
    backend: str
    model: str
    device: str
    precision: str
    exports_dir: Path


def compare_backends(runs: list[BackendRun], chunks: list[Chunk], log=print) -> dict:
    """{"rows": [...], "queries": n}: one row per run, then fp32 torch as the reference row."""
    texts = [c.embedding_input for c in chunks]
    queries = stable_sample(heading_queries((c.id, c.heading) for c in chunks), MAX_QUERIES)
    reference_run = BackendRun("torch", runs[0].model, runs[0].device, "fp32", runs[0].exports_dir)
    log(f"backends: {len(texts)} chunks, {len(queries)} heading queries; fp32 torch first (the reference)")
    reference, rows = None, []
    for run in [reference_run, *runs]:
        if run == reference_run and reference is not None:
            continue
        row, vectors = _measure(run, texts, chunks, queries)
        if reference is None:
            reference = vectors
        cosines = (_unit(vectors) * _unit(reference)).sum(axis=1)
        row.update(
            cosine_vs_fp32_mean=round(float(cosines.mean()), 5),
            cosine_vs_fp32_min=round(float(cosines.min()), 5),
        )
        rows.append(row)
        log(f"  {row['backend']}: {row['tokens_per_s']} tokens/s, cosine {row['cosine_vs_fp32_mean']}")
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup_vs_fp32"] = round(row["tokens_per_s"] / base, 2) if base else 0.0
    return {"rows": rows, "queries": len(queries), "chunks": len(texts)}


def _measure(run: BackendRun, texts: list[str], chunks: list[Chunk], queries) -> tuple[dict, np.ndarray]:
    embedder = Embedder(
        run.model,
        device=run.device,
        precision=run.precision,
        backend=run.backend,
        exports_dir=run.exports_dir,
    )
    started = time.perf_counter()
    embedder.embed_documents(texts[:WARM_UP_TEXTS])  # loads the model, exports it the first time
    prepare_s = time.perf_counter() - started
    release_free_heap()
    before = (embedder.stats.tokens, embedder.stats.seconds)
    vectors = embedder.embed_documents(texts)
    tokens, seconds = embedder.stats.tokens - before[0], embedder.stats.seconds - before[1]
    query_vectors = embedder.embed_queries([q.text for q in queries])
    ids = [c.id for c in chunks]
    ranked = _exact_search(query_vectors, vectors, embedder.spec.metric)
    ranks = [first_relevant_rank([ids[i] for i in hits], q.relevant) for hits, q in zip(ranked, queries)]
    scores = score_ranks(ranks, (1, 5, 10), DEPTH)
    row = {
        "backend": run.backend if run.backend != "torch" else f"torch-{embedder.precision}",
        "precision": embedder.precision,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else 0.0,
        "prepare_s": round(prepare_s, 1),
        **{f"recall_at_{k}": v for k, v in scores.recall_at.items()},
        "mrr_at_10": scores.mrr,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    embedder.close()
    return row, vectors


def _exact_search(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """The DEPTH nearest vectors of each query, nearest first, as Milvus ranks them for `metric`."""
    if metric == "L2":
        distances = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
        order = distances
    else:
        order = -(queries @ vectors.T) if metric == "IP" else -(_unit(queries) @ _unit(vectors).T)
    return np.argsort(order, axis=1, kind="stable")[:, :DEPTH]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def format_backends(report: dict) -> str:
    columns = [
        "tokens_per_s",
        "speedup_vs_fp32",
        "cosine_vs_fp32_mean",
        "cosine_vs_fp32_min",
        "recall_at_1",
        "recall_at_5",
        "recall_at_10",
        "mrr_at_10",
        "load_avg_1m",
    ]
    lines = [
        f"backends on {report['chunks']} chunks, {report['queries']} heading queries",
        f"{'backend':<14}" + "".join(f"{c:>21}" for c in columns),
    ]
    for row in report["rows"]:
        lines.append(f"{row['backend']:<14}" + "".join(f"{row.get(c, ''):>21}" for c in columns))
    return "\n".join(lines)
