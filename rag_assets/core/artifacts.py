"""The stored artefacts: each source's row store, `{base_dir}/sources/{source}.sqlite` (its pages,
chunks and vectors: core/source_store.py), and one parquet file per asset and source for the small
per-source values (the evaluation's), `{base_dir}/{asset}/{source}.parquet`.

The one place that knows this layout. The parquet IO manager writes and loads through it; assets load
their previous value, checks read stored values, the cleanup removes a source's files, and the CLI
lists what is stored, all through it. No dagster here (the CLI's no-op path reads it), and pandas is
imported only by the methods that read or write a frame.

Grain: one asset and one source. Invariant: a reader sees the old file or the new one, never half;
a file SQLite or parquet cannot read is moved aside (named `*.damaged-<time>-<pid>`) and rebuilt.
"""

import os
from dataclasses import dataclass
from pathlib import Path

from rag_assets.core.source_store import SourceStore, SourceStoreDamaged, damage_named, quarantine

# The assets stored in parquet (bound to `parquet_io_manager` in definitions.py).
PARQUET_ASSETS = ("eval_queries", "retrieval_eval")
# The assets whose values are tables of the source store.
SOURCE_STORE_ASSETS = ("raw_pages", "chunks", "embeddings")
SOURCE_STORES = "sources"
SUFFIX = ".parquet"
STORE_SUFFIX = ".sqlite"


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
        """The value last written for a source (for incremental work); None if there is none, or if
        the file cannot be read (it is moved aside: a derived value is rebuilt, never a dead end)."""
        import pandas as pd

        path = self.stored(asset, source)
        if path is None:
            return None
        try:
            return pd.read_parquet(path, columns=columns)
        except Exception:  # pyarrow's errors for a cut or garbled file have no common type
            quarantine(path)
            return None

    def source_store_path(self, source: str) -> Path:
        return Path(self.base_dir, SOURCE_STORES, f"{source}{STORE_SUFFIX}")

    def damage_named(self, source: str):
        """See core/source_store.damage_named."""
        return damage_named(self.source_store_path(source), source)

    def open_source(self, source: str) -> tuple[SourceStore, Path | None]:
        """The source's row store, and where a damaged one was moved (None when it was healthy). A
        store SQLite cannot read is moved aside and a new one started: the next reading fills it."""
        path = self.source_store_path(source)
        try:
            return SourceStore(path), None
        except SourceStoreDamaged:
            moved = quarantine(path)
            return SourceStore(path), moved

    def paths(self, asset: str) -> list[Path]:
        """Every source's file of an asset, in name order."""
        return sorted(Path(self.base_dir, asset).glob(f"*{SUFFIX}"))

    def sources(self, asset: str) -> set[str]:
        """The sources an asset has a value stored for (for the source store's assets: a store)."""
        if asset in SOURCE_STORE_ASSETS:
            folder = Path(self.base_dir, SOURCE_STORES)
            return {p.name.removesuffix(STORE_SUFFIX) for p in folder.glob(f"*{STORE_SUFFIX}")}
        return {p.name.removesuffix(SUFFIX) for p in self.paths(asset)}

    def remove(self, source: str) -> int:
        """Delete a source's store and its file of every asset stored in parquet; how many there were."""
        removed = 0
        store = self.source_store_path(source)
        if store.exists():
            store.unlink()
            removed += 1
        for suffix in ("-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        for asset in PARQUET_ASSETS:
            path = self.path(asset, source)
            if path.exists():
                path.unlink()
                removed += 1
        return removed
