"""The sources file as a resource: read at run time, so editing it needs no code reload."""

from collections.abc import Callable
from functools import cache
from pathlib import Path

import dagster as dg

from rag_assets.sources import find_source, load_sources


class SourcesResource(dg.ConfigurableResource):
    """The path of the sources file (RAG_SOURCES_FILE)."""

    path: str

    def load(self) -> list:
        """Every source, as the file says now."""
        return load_sources(Path(self.path))

    def lookup(self) -> Callable[[str], object]:
        """`name -> source` over one reading of the file, made on first use: what a step that handles
        many partitions calls, so it reads the file once. A file that does not load raises at each call.

        Not a cache of the resource: in-process runs share one resource between steps, and the last
        step must see a source removed while the run was on its way (milvus_collection)."""
        load = cache(self.load)  # a raised error is not cached
        return lambda name: find_source(load(), name)
