"""Vectors already computed, keyed by (model identity, text hash): never embed the same text twice.

One SQLite file per model identity, so two models can never share vectors. SQLite (WAL) is safe
across processes. Each entry costs about dimension x 4 bytes + 60 bytes (1.6 kB for MiniLM's 384
dimensions: the whole Django docs, about 12 k chunks, take about 20 MB). `max_entries` bounds it
(least recently used go first, when the cache closes) and `prune(keep)` drops every entry no
current chunk uses.

The cache is derived data: a file SQLite cannot read (cut short, zeroed, garbage) is moved aside
(`repaired` names where) and a new one started, so a damaged cache costs vectors, never a run.
"""

import functools
import logging
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rag_assets.core.source_store import looks_like_sqlite, quarantine

_SQL_VARIABLES = 900
log = logging.getLogger(__name__)


def _repairing(method):
    """Run a cache method; on a database SQLite cannot read, move it aside, start afresh, run again."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as error:
            self._repair(error)
            return method(self, *args, **kwargs)

    return guarded


class EmbeddingCache:
    def __init__(self, path: Path, max_entries: int = 0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_entries = max_entries
        self.repaired: Path | None = None  # where a damaged cache was moved, if one was
        try:
            if not looks_like_sqlite(path):
                raise sqlite3.DatabaseError("file is not a database")
            self._open()
        except sqlite3.DatabaseError as error:
            self._repair(error)

    def _open(self) -> None:
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (hash TEXT PRIMARY KEY, vector BLOB NOT NULL, used_at "
            "REAL NOT NULL)"
        )

    def _repair(self, error: Exception) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
        self.repaired = quarantine(self.path)
        log.warning(
            f"embedding cache {self.path} could not be read ({error}): moved to {self.repaired}, "
            "starting a new one"
        )
        self._open()

    @_repairing
    def get_many(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), _SQL_VARIABLES):
            part = unique[start : start + _SQL_VARIABLES]
            marks = ",".join("?" * len(part))
            for key, blob in self._db.execute(
                f"SELECT hash, vector FROM vectors WHERE hash IN ({marks})", part
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        if found:
            self.touch(found)
        return found

    @_repairing
    def put_many(self, items: dict[str, np.ndarray]) -> None:
        now = time.time()
        rows = [(key, np.asarray(v, dtype=np.float32).tobytes(), now) for key, v in items.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)

    def evict_to(self, max_entries: int) -> int:
        """Keep the `max_entries` most recently used vectors: the footprint stays bounded."""
        with self._db:
            return self._db.execute(
                "DELETE FROM vectors WHERE hash NOT IN (SELECT hash FROM vectors ORDER BY used_at DESC "
                "LIMIT ?)",
                (max_entries,),
            ).rowcount

    def touch(self, hashes: Iterable[str]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany("UPDATE vectors SET used_at = ? WHERE hash = ?", [(now, h) for h in hashes])

    @_repairing
    def prune(self, keep: set[str]) -> int:
        """Drop every vector whose text hash is not in keep; return how many went."""
        with self._db:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS keep (hash TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM keep")
            self._db.executemany("INSERT OR IGNORE INTO keep VALUES (?)", [(h,) for h in keep])
            removed = self._db.execute(
                "DELETE FROM vectors WHERE hash NOT IN (SELECT hash FROM keep)"
            ).rowcount
        self._db.execute("VACUUM")
        return removed

    @_repairing
    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        """Evict past `max_entries` (once, here: counting on every write would cost a scan each) and close."""
        try:
            if self.max_entries and len(self) > self.max_entries:
                self.evict_to(self.max_entries)
        finally:
            self._db.close()
