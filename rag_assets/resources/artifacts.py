"""The stored artefacts as a resource: what assets, checks and the cleanup read and remove.

The parquet IO manager writes them; everything else that needs a stored value by asset and source
(an asset's previous value, a check's stored frame, a removed source's files) goes through the
ArtifactStore this resource names, instead of taking the IO manager as a resource.
"""

from pathlib import Path

import dagster as dg

from rag_assets.core.artifacts import ArtifactStore


class ArtifactsResource(dg.ConfigurableResource):
    """The folder the parquet IO manager writes under (RAG_DATA_DIR/artifacts)."""

    base_dir: str

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.base_dir))
