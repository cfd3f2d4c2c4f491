"""rag_assets: a Dagster code location that keeps a Milvus collection in step with documentation sources."""

import warnings

# Single-run backfills are the point of the embedding step (one model load for many sources);
# Dagster marks the parameter beta, which is noted in the README, not on every import.
warnings.filterwarnings("ignore", message=r"Parameter `(backfill_policy|owners)`")

# pymilvus reads MILVUS_URI at import and refuses the Milvus Lite path the README documents: import
# it once with that value out of its sight, before any module of ours does (rag_assets/settings.py).
from rag_assets.settings import hide_lite_uri_from_pymilvus  # noqa: E402

hide_lite_uri_from_pymilvus()
