"""The asset graph, one module per asset, in data order: raw_pages -> chunks -> embeddings ->
milvus_collection."""

from rag_assets.assets.chunks import chunks
from rag_assets.assets.embeddings import embeddings
from rag_assets.assets.milvus_collection import milvus_collection
from rag_assets.assets.raw_pages import raw_pages

INGESTION_GROUP = "ingestion"
ingestion_assets = [raw_pages, chunks, embeddings, milvus_collection]
