"""Milvus, owned here: the only package that imports pymilvus or holds a client.

- `store`: MilvusStore (the client; rows written, deleted, queried, searched) and MilvusResource.
- `aliases`: the serving name (an alias) and the model collections behind it; when it moves.
- `schema`: the row fields, their VARCHAR limits, the collection's schema and index.

Everything else calls MilvusStore's methods.
"""

from rag_assets.resources.milvus.aliases import (
    CollectionInfo,
    Promotion,
    decide_promotion,
    model_collection_name,
    model_properties,
)
from rag_assets.resources.milvus.schema import ROW_FIELDS, TEXT_MAX_BYTES, VARCHAR_LIMITS
from rag_assets.resources.milvus.store import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    QUERY_PAGE_ROWS,
    MilvusException,
    MilvusLiteBusy,
    MilvusResource,
    MilvusStore,
    MilvusUnavailable,
    connect,
    quote,
)

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_ROWS",
    "QUERY_PAGE_ROWS",
    "ROW_FIELDS",
    "TEXT_MAX_BYTES",
    "VARCHAR_LIMITS",
    "CollectionInfo",
    "MilvusException",
    "MilvusLiteBusy",
    "MilvusResource",
    "MilvusStore",
    "MilvusUnavailable",
    "Promotion",
    "connect",
    "decide_promotion",
    "model_collection_name",
    "model_properties",
    "quote",
]
