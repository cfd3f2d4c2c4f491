"""Where asset values are stored: parquet between steps, Milvus at the end.

The IO manager classes are the package's public names: assets and checks import them from here, never
from the modules that implement them (an import contract in pyproject.toml holds them to it)."""

from rag_assets.io_managers.milvus_io import MilvusIOManager, SourceChanges
from rag_assets.io_managers.parquet import PartitionedParquetIOManager

__all__ = ["MilvusIOManager", "PartitionedParquetIOManager", "SourceChanges"]
