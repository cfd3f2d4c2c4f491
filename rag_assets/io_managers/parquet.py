"""Parquet files per asset and partition: `{base_dir}/{asset}/{partition}.parquet`.

Asset values are `{partition_key: DataFrame}` for every partition the step handles, so one step
can process a range of sources (single-run backfills) and each source still gets its own file.
"""

import os
from pathlib import Path

import dagster as dg
import pandas as pd


class PartitionedParquetIOManager(dg.ConfigurableIOManager):
    base_dir: str

    def path_for(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return Path(self.base_dir, *asset_key.path, f"{partition_key}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: dict[str, pd.DataFrame]) -> None:
        expected = set(context.asset_partition_keys)
        if set(obj) != expected:
            raise ValueError(
                f"{context.asset_key.to_user_string()} returned partitions {sorted(obj)}, expected "
                f"{sorted(expected)}"
            )
        for partition_key, frame in obj.items():
            path = self.path_for(context.asset_key, partition_key)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            frame.to_parquet(partial, index=False)
            os.replace(partial, path)  # readers see the old file or the new one, never half of one

    def load_input(self, context: dg.InputContext) -> dict[str, pd.DataFrame]:
        frames = {}
        for partition_key in context.asset_partition_keys:
            path = self.path_for(context.asset_key, partition_key)
            if not path.exists():
                raise FileNotFoundError(
                    f"{context.asset_key.to_user_string()} has no stored value for source {partition_key!r} "
                    f"({path}): materialize it first"
                )
            frames[partition_key] = pd.read_parquet(path)
        return frames

    def load_previous(self, asset_key: dg.AssetKey, partition_key: str) -> pd.DataFrame | None:
        """The last value written for a partition, for incremental work; None if there is none."""
        path = self.path_for(asset_key, partition_key)
        return pd.read_parquet(path) if path.exists() else None
