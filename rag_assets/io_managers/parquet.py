"""Parquet files per asset and partition: `{base_dir}/{asset}/{partition}.parquet`.

Asset values are `{partition_key: DataFrame}` for every partition the step handles, so one step
can process a range of sources (single-run backfills) and each source still gets its own file. The
layout itself is rag_assets.core.artifacts' ArtifactStore; what else reads or removes these files
(an asset's previous value, the checks, the cleanup) takes it through the `artifacts` resource.
"""

from pathlib import Path

import dagster as dg
import pandas as pd

from rag_assets.core.artifacts import ArtifactStore
from rag_assets.resources.artifacts import ArtifactsResource


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    """Writes and loads through the `artifacts` resource's store: one folder, named once."""

    artifacts: ArtifactsResource

    @property
    def store(self) -> ArtifactStore:
        return self.artifacts.store

    def path_for(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return self.store.path(_name(asset_key), partition_key)

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pd.DataFrame]) -> None:
        expected = set(context.asset_partition_keys)
        if set(obj) != expected:
            raise ValueError(
                f"{context.asset_key.to_user_string()} returned partitions {sorted(obj)}, expected "
                f"{sorted(expected)}"
            )
        for partition_key, frame in obj.items():
            self.store.write(_name(context.asset_key), partition_key, frame)

    def load_input(self, context: dg.InputContext) -> dict[str, pd.DataFrame]:
        frames = {}
        for partition_key in context.asset_partition_keys:
            frame = self.store.load(_name(context.asset_key), partition_key)
            if frame is None:
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} has no stored value for source {partition_key!r} "
                    f"({self.path_for(context.asset_key, partition_key)}): materialize it first"
                )
            frames[partition_key] = frame
        return frames


def _name(asset_key: dg.AssetKey) -> str:
    return "/".join(asset_key.path)
