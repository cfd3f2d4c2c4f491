"""The "before" pipeline the project replaced: for each page, fetch it with one API request,
chunk it, encode it, insert it into Milvus. Same model, precision, chunker and Milvus as the
pipeline, so the difference is the architecture alone."""

import httpx
import numpy as np

from rag_assets.bench.measure import StageResult
from rag_assets.core.chunking import Chunker
from rag_assets.core.pages import PageStats, decode_page, path_selected
from rag_assets.core.sections import detect_format
from rag_assets.resources.embedder import Embedder
from rag_assets.resources.milvus import MilvusStore

RAW = {"Accept": "application/vnd.github.raw", "User-Agent": "rag-assets-bench"}


def run_naive(
    *,
    api_url: str,
    repo: str,
    sha: str,
    include: tuple[str, ...],
    embedder: Embedder,
    chunker: Chunker,
    store: MilvusStore,
    result: StageResult,
) -> None:
    """Ingest page by page into `store`, filling the counts of `result`."""
    store.ensure_collection(embedder.dimension)
    with httpx.Client(base_url=api_url, headers=RAW, timeout=60) as client:
        tree = (
            client.get(f"/repos/{repo}/git/trees/{sha}", params={"recursive": "1"}).raise_for_status().json()
        )
        paths = [
            e["path"] for e in tree["tree"] if e["type"] == "blob" and path_selected(e["path"], include, ())
        ]
        for path in paths:
            response = client.get(f"/repos/{repo}/contents/{path}", params={"ref": sha}).raise_for_status()
            page = decode_page(path, response.content, PageStats())
            if page is None:
                continue
            chunks = chunker.split_page("naive", path, page.text, detect_format(path, page.text))
            if not chunks:
                continue
            vectors = _encode(embedder, [c.embedding_input for c in chunks])
            store.insert_rows([_row(c, v, sha) for c, v in zip(chunks, vectors)])
            result.tokens += sum(c.tokens for c in chunks)
            result.chunks_embedded += len(chunks)
            result.rows_written += len(chunks)
    result.extra["api_requests"] = len(paths) + 1


def _encode(embedder: Embedder, texts: list[str]) -> np.ndarray:
    with embedder.autocast():
        return embedder.sentence_transformer.encode(
            texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True
        )


def _row(chunk, vector: np.ndarray, sha: str) -> dict:
    return {
        "id": chunk.id,
        "source": "naive",
        "path": chunk.path,
        "url": "",
        "heading": chunk.heading,
        "text": chunk.text,
        "content_hash": chunk.content_hash,
        "commit": sha,
        "model": "naive",
        "vector": vector.tolist(),
    }
