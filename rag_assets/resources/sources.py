"""The sources file as a resource: read at run time, so editing it needs no code reload."""

from pathlib import Path

import dagster as dg

from rag_assets.sources import find_source, load_sources


class SourcesResource(dg.ConfigurableResource):
    """The path of the sources file (RAG_SOURCES_FILE)."""

    path: str

    def load(self) -> list:
        return load_sources(Path(self.path))

    def get(self, name: str):
        return find_source(self.load(), name)
