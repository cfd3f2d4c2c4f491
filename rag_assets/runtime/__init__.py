"""The CLI's runtime: runs the ingestion job in-process (ingest), on the CLI's Dagster instance
(instance), reclaims runs whose process died (reclaim), removes sources taken out of the sources file
(source_removal), checks Milvus and folders before a run (preflight), draws progress (console) and
starts the UI (ui). rag_assets.cli parses the command line and calls these; nothing here is imported
by the code location's assets."""
