"""Where asset values are stored: parquet between steps, Milvus at the end."""
