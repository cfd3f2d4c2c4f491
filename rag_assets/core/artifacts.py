"""The stored artefacts: one parquet file per asset and source, `{base_dir}/{asset}/{source}.parquet`.

The one place that knows this layout. The parquet IO manager writes and loads through it; assets load
their previous value, checks read stored values, the cleanup removes a source's files, and the CLI
lists what is stored, all through it. No dagster here (the CLI's no-op path reads it), and pandas is
imported only by the methods that read or write a frame.

Grain: one asset and one source. Invariant: a reader sees the old file or the new one, never half.
"""

import os
from dataclasses import dataclass
from pathlib import Path

# The assets stored in parquet (bound to `parquet_io_manager` in definitions.py).
PARQUET_ASSETS = ("raw_pages", "chunks", "embeddings", "eval_queries", "retrieval_eval")
SUFFIX = ".parquet"


@dataclass(frozen=True)
class ArtifactStore:
    """The artefacts under one folder; `asset` is an asset key's path joined by '/'."""

    base_dir: Path

    def path(self, asset: str, source: str) -> Path:
        return Path(self.base_dir, asset, f"{source}{SUFFIX}")

    def stored(self, asset: str, source: str) -> Path | None:
        """Where the asset's value for the source is, or None when it was never written."""
        path = self.path(asset, source)
        return path if path.exists() else None

    def write(self, asset: str, source: str, frame) -> Path:
        path = self.path(asset, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        frame.to_parquet(partial, index=False)
        os.replace(partial, path)  # readers see the old file or the new one, never half of one
        return path

    def load(self, asset: str, source: str, columns: list[str] | None = None):
        """The value last written for a source (for incremental work); None if there is none."""
        import pandas as pd

        path = self.stored(asset, source)
        return pd.read_parquet(path, columns=columns) if path is not None else None

    def paths(self, asset: str) -> list[Path]:
        """Every source's file of an asset, in name order."""
        return sorted(Path(self.base_dir, asset).glob(f"*{SUFFIX}"))

    def sources(self, asset: str) -> set[str]:
        """The sources an asset has a value stored for."""
        return {p.name.removesuffix(SUFFIX) for p in self.paths(asset)}

    def remove(self, source: str) -> int:
        """Delete a source's file of every asset stored in parquet; how many there were."""
        removed = 0
        for asset in PARQUET_ASSETS:
            path = self.path(asset, source)
            if path.exists():
                path.unlink()
                removed += 1
        return removed
