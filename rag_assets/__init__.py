"""rag_assets: a Dagster code location that keeps a Milvus collection in step with documentation sources."""

import warnings

# Single-run backfills are the point of the embedding step (one model load for many sources);
# Dagster marks the parameter beta, which is noted in the README, not on every import.
warnings.filterwarnings("ignore", message=r"Parameter `(backfill_policy|owners)`")
