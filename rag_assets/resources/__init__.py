"""The systems rag_assets talks to: sources, the embedding model, Milvus."""
