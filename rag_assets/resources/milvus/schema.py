"""The row schema of a chunks collection: its fields, the VARCHAR limits rows are fitted to, its index."""

from pymilvus import DataType, MilvusClient

TEXT_MAX_BYTES = 65535
DEFAULT_METRIC = "COSINE"  # a collection that records no metric was made before models declared theirs
ROW_FIELDS = ["id", "source", "path", "url", "heading", "text", "content_hash", "commit", "model", "vector"]
VARCHAR_LIMITS = {
    "id": 64,
    "source": 128,
    "path": 2048,
    "url": 4096,
    "heading": 4096,
    "text": TEXT_MAX_BYTES,
    "content_hash": 64,
    "commit": 64,
    "model": 256,
}


def collection_schema(dimension: int):
    """Every row field as VARCHAR (bounded by VARCHAR_LIMITS, `id` the key) and the vector of `dimension`."""
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, max_length=VARCHAR_LIMITS["id"], is_primary=True)
    for name in ROW_FIELDS[1:-1]:
        schema.add_field(name, DataType.VARCHAR, max_length=VARCHAR_LIMITS[name])
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
    return schema


def index_params(metric: str = DEFAULT_METRIC):
    """AUTOINDEX on the vector with the model's metric: COSINE, IP (dot product) or L2 (euclidean)."""
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="AUTOINDEX", metric_type=metric)
    return index
