"""The source store: one SQLite file per source holding its pages, chunks and vectors, and the changes
Milvus has not been given yet.

Grain: a page (`pages`, `chunked`) and a chunk (`chunks`, `vectors`, `pending`), never the whole
source: a run reads and writes the rows its change touches, and streams everything else in batches.
How a run finds what changed, step by step:

- raw_pages writes the pages it read in one transaction, then removes the pages it did not see
  (mark and sweep): a failed or interrupted reading leaves the previous pages whole.
- chunks compares `pages` with `chunked` (what the stored chunks were made from: a page's hash and
  the chunker's fingerprint) and re-chunks only the pages that differ or went; each page's swap is
  one transaction that also records the chunk ids Milvus must write or delete in `pending`.
- embeddings computes vectors for pending writes (for every chunk when the model changed).
- the Milvus write sends the pending changes and clears them; when the record and Milvus may
  disagree (a new collection, a rebuilt store) it reconciles the whole source, page by page.

SQLite in WAL mode: readers never wait for the writer, one writer at a time per source, safe across
the processes of a run's steps. Pure: no dagster, no pymilvus.
"""

import contextlib
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_SECONDS = 60  # another step of another run writing the same source
DEFAULT_BATCH = 1000
_SQL_VARIABLES = 900
SCHEMA_VERSION = "1"

PAGE_FIELDS = ("path", "url", "content_hash", "commit", "format", "version", "text", "stat")
CHUNK_FIELDS = ("id", "path", "position", "heading", "text", "tokens", "content_hash", "url", "commit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (
    path TEXT PRIMARY KEY, url TEXT NOT NULL, content_hash TEXT NOT NULL, "commit" TEXT NOT NULL,
    format TEXT NOT NULL, version TEXT NOT NULL, text TEXT NOT NULL, stat TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunked (path TEXT PRIMARY KEY, page_hash TEXT NOT NULL, chunker TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, path TEXT NOT NULL, position INTEGER NOT NULL, heading TEXT NOT NULL,
    text TEXT NOT NULL, tokens INTEGER NOT NULL, content_hash TEXT NOT NULL, url TEXT NOT NULL,
    "commit" TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_path ON chunks (path, position);
-- The page index raw_pages compares a reading with, without reading the pages' text.
CREATE INDEX IF NOT EXISTS page_index ON pages (path, content_hash, stat, version);
CREATE TABLE IF NOT EXISTS vectors (id TEXT PRIMARY KEY, model TEXT NOT NULL, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS pending (id TEXT PRIMARY KEY, op TEXT NOT NULL);
"""

WRITE, DELETE = "write", "delete"
# meta keys: the model whose vectors the store holds, the collection its chunks were written to
VECTORS_MODEL = "vectors_model"
WRITTEN_TO = "written_to"


class SourceStoreDamaged(RuntimeError):
    """A source store that SQLite cannot read; it has been moved aside (`moved_to`)."""

    def __init__(self, message: str, moved_to: Path | None = None):
        super().__init__(message)
        self.moved_to = moved_to


@dataclass(frozen=True)
class KnownPage:
    """What the store holds of a page, enough to tell whether a reading changed it."""

    content_hash: str
    stat: str
    version: str


@dataclass
class PageChanges:
    added: int = 0
    modified: int = 0
    removed: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.added + self.modified + self.unchanged

    def as_metadata(self, noun: str = "pages") -> dict[str, int]:
        return {f"{noun}_{k}": v for k, v in vars(self).items()}


@dataclass(frozen=True)
class PageToRechunk:
    path: str
    text: str
    format: str
    url: str
    commit: str
    content_hash: str


def quarantine(path: Path) -> Path | None:
    """Move a damaged file (and its WAL files) aside, named by the time; where it went, or None."""
    if not path.exists():
        return None
    target = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(path, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
    return target


@contextlib.contextmanager
def damage_named(path: Path, source: str) -> Iterator[None]:
    """Within the block, an SQLite error of a source's store (damage its header did not show) moves
    the store aside and is raised as one SourceStoreDamaged line naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as error:
        moved = quarantine(path)
        raise SourceStoreDamaged(
            f"source {source!r}: its store could not be read ({error}) and was moved to {moved}; "
            "the next run reads the source again in full",
            moved,
        ) from None


def looks_like_sqlite(path: Path) -> bool:
    """A file SQLite would open as a whole database: absent, empty (a new database), or with SQLite's
    header and at least as many bytes as the header says it has pages (a file cut short by a full
    disk or a crash is not). Reads 100 bytes: the check every open can afford, whatever the size."""
    try:
        with path.open("rb") as file:
            head = file.read(100)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return True
    if head == b"":
        return True
    if len(head) < 100 or not head.startswith(SQLITE_HEADER):
        return False
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages, counter, valid_for = (int.from_bytes(head[i : i + 4], "big") for i in (28, 24, 92))
    return not (pages and counter == valid_for and size < pages * page_size)


class SourceStore:
    """The stored rows of one source. `counts` tallies the rows each kind of access read or wrote
    (`chunks_read`, `vectors_written`...), so a test can prove an update touched only its change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.counts: Counter = Counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not looks_like_sqlite(self.path):
            raise SourceStoreDamaged(f"{self.path} is not an SQLite database")
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise SourceStoreDamaged(f"{self.path}: {error}") from None

    def access_metadata(self) -> dict[str, int]:
        """The rows this store handle read and wrote, by kind (`store_chunks_read`...), for a step's
        metadata: what proves a run's work followed its change. The page index a reader compares
        with (`store_page_index_read`) is the one whole-source read, a few dozen bytes a page."""
        return {f"store_{kind}": count for kind, count in sorted(self.counts.items())}

    # -- meta -------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- raw_pages --------------------------------------------------------------------------------
    def known_pages(self) -> dict[str, KnownPage]:
        """Every stored page's hash, stat and version (no text): what a reader compares a file with."""
        known = {
            path: KnownPage(h, stat, version)
            for path, h, stat, version in self._db.execute(
                "SELECT path, content_hash, stat, version FROM pages INDEXED BY page_index"
            )
        }
        self.counts["page_index_read"] += len(known)
        return known

    def page_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]

    @contextlib.contextmanager
    def replacing_pages(self) -> Iterator["PageWriter"]:
        """The pages of one reading, written in one transaction: the pages the reading did not offer
        are removed when the block ends; an exception leaves the stored pages as they were."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS seen (path TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM seen")
            writer = PageWriter(self)
            yield writer
            writer.flush()
            removed = self._db.execute("DELETE FROM pages WHERE path NOT IN (SELECT path FROM seen)").rowcount
            writer.changes.removed = removed
            self.counts["pages_written"] += removed
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- chunks -----------------------------------------------------------------------------------
    def pages_to_rechunk(self, chunker: str) -> list[str]:
        """Paths whose chunks are not made from the page as stored now by this chunker, or whose page
        went (sorted). Two indexed scans of the page index, never of the chunks."""
        return [
            path
            for (path,) in self._db.execute(
                """SELECT p.path FROM pages p LEFT JOIN chunked c ON c.path = p.path
                   WHERE c.path IS NULL OR c.page_hash != p.content_hash OR c.chunker != ?
                   UNION SELECT path FROM chunked WHERE path NOT IN (SELECT path FROM pages)
                   ORDER BY 1""",
                (chunker,),
            )
        ]

    def pages_by_path(self, paths: list[str]) -> dict[str, PageToRechunk]:
        found = {}
        for part in _parts(paths):
            for row in self._db.execute(
                'SELECT path, text, format, url, "commit", content_hash FROM pages '
                f"WHERE path IN ({_marks(part)})",
                part,
            ):
                found[row[0]] = PageToRechunk(*row)
        self.counts["pages_read"] += len(found)
        return found

    def replace_chunks(self, chunked: dict[str, tuple[str, str, list[dict]]]) -> tuple[int, int]:
        """Swap the chunks of some pages in one transaction: `chunked[path] = (page_hash, chunker,
        chunk rows)`; a page that went has `("", "", [])` and loses its record. The ids that
        appear are pending writes, the ids that go pending deletes; an id kept is untouched.
        Returns (chunks added, chunks removed)."""
        added = removed = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for path, (page_hash, chunker, rows) in chunked.items():
                before = {i for (i,) in self._db.execute("SELECT id FROM chunks WHERE path = ?", (path,))}
                after = {row["id"]: row for row in rows}
                self.counts["chunks_read"] += len(before)
                gone, new = before - after.keys(), [after[i] for i in after.keys() - before]
                self._db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in gone])
                self._db.executemany("DELETE FROM vectors WHERE id = ?", [(i,) for i in gone])
                self._db.executemany(
                    f"INSERT OR REPLACE INTO chunks VALUES ({_marks(CHUNK_FIELDS)})",
                    [tuple(row[f] for f in CHUNK_FIELDS) for row in new],
                )
                # Position, url and commit of a kept chunk follow the page (its id, text and vector stay).
                self._db.executemany(
                    'UPDATE chunks SET position = ?, url = ?, "commit" = ? WHERE id = ?',
                    [
                        (after[i]["position"], after[i]["url"], after[i]["commit"], i)
                        for i in before & after.keys()
                    ],
                )
                self._db.executemany(
                    "INSERT OR REPLACE INTO pending VALUES (?, ?)",
                    [(i, DELETE) for i in gone] + [(row["id"], WRITE) for row in new],
                )
                if page_hash:
                    self._db.execute(
                        "INSERT OR REPLACE INTO chunked VALUES (?, ?, ?)", (path, page_hash, chunker)
                    )
                else:
                    self._db.execute("DELETE FROM chunked WHERE path = ?", (path,))
                added, removed = added + len(new), removed + len(gone)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.counts["chunks_written"] += added + removed
        return added, removed

    def chunk_count(self, path: str | None = None) -> int:
        """Chunks of the source, or of one page."""
        if path is None:
            return self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM chunks WHERE path = ?", (path,)).fetchone()[0]

    def chunk_stats(self) -> tuple[int, int, int]:
        """(chunks, tokens, the largest chunk's tokens)."""
        count, tokens, largest = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(MAX(tokens), 0) FROM chunks"
        ).fetchone()
        return count, tokens, largest

    def chunks_of(self, ids: list[str], fields: tuple[str, ...] = CHUNK_FIELDS) -> list[dict]:
        rows = []
        columns = ", ".join(f'"{f}"' for f in fields)
        for part in _parts(ids):
            cursor = self._db.execute(f"SELECT {columns} FROM chunks WHERE id IN ({_marks(part)})", part)
            rows += [dict(zip(fields, row)) for row in cursor]
        self.counts["chunks_read"] += len(rows)
        return rows

    def iter_chunks(
        self, fields: tuple[str, ...] = CHUNK_FIELDS, batch: int = DEFAULT_BATCH
    ) -> Iterator[list[dict]]:
        """Every chunk, in page and position order, `batch` at a time (keyset paging: memory stays flat)."""
        columns = ", ".join(f'c."{f}"' for f in ("path", "position", *fields))
        last: tuple = ("", -1)
        while True:
            rows = self._db.execute(
                f"SELECT {columns} FROM chunks c WHERE (c.path, c.position) > (?, ?) "
                "ORDER BY c.path, c.position LIMIT ?",
                (*last, batch),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][:2]
            self.counts["chunks_read"] += len(rows)
            yield [dict(zip(fields, row[2:])) for row in rows]

    # -- embeddings -------------------------------------------------------------------------------
    def ids_without_vector(
        self, model: str, *, every_chunk: bool, batch: int = DEFAULT_BATCH
    ) -> Iterator[list[str]]:
        """Chunk ids that have no vector by `model`: among the pending writes, or among every chunk
        (a new model), `batch` at a time."""
        scope = "chunks" if every_chunk else f"(SELECT id FROM pending WHERE op = '{WRITE}')"
        last = ""
        while True:
            ids = [
                i
                for (i,) in self._db.execute(
                    f"""SELECT s.id FROM {scope} s LEFT JOIN vectors v ON v.id = s.id AND v.model = ?
                        WHERE v.id IS NULL AND s.id > ? ORDER BY s.id LIMIT ?""",
                    (model, last, batch),
                )
            ]
            if not ids:
                return
            last = ids[-1]
            yield ids

    def put_vectors(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(i, model, np.asarray(v, dtype=np.float32).tobytes()) for i, v in vectors.items()],
            )
        self.counts["vectors_written"] += len(vectors)

    def vectors_of(self, ids: list[str], model: str) -> dict[str, np.ndarray]:
        found = {}
        for part in _parts(ids):
            for i, blob in self._db.execute(
                f"SELECT id, vector FROM vectors WHERE model = ? AND id IN ({_marks(part)})", [model, *part]
            ):
                found[i] = np.frombuffer(blob, dtype=np.float32)
        self.counts["vectors_read"] += len(found)
        return found

    def vector_dimension(self, model: str) -> int | None:
        row = self._db.execute(
            "SELECT length(vector) FROM vectors WHERE model = ? LIMIT 1", (model,)
        ).fetchone()
        return row[0] // 4 if row else None

    def vector_dimensions(self) -> set[int]:
        return {n // 4 for (n,) in self._db.execute("SELECT DISTINCT length(vector) FROM vectors")}

    # -- the Milvus write -------------------------------------------------------------------------
    def pending(self, op: str, batch: int = DEFAULT_BATCH) -> Iterator[list[str]]:
        """Pending ids of one kind, in id order, `batch` at a time (keyset paging: a caller may clear
        each batch once Milvus has it, or only read them)."""
        last = ""
        while True:
            ids = [
                i
                for (i,) in self._db.execute(
                    "SELECT id FROM pending WHERE op = ? AND id > ? ORDER BY id LIMIT ?", (op, last, batch)
                )
            ]
            if not ids:
                return
            last = ids[-1]
            yield ids

    def pending_count(self) -> Counter:
        return Counter(dict(self._db.execute("SELECT op, COUNT(*) FROM pending GROUP BY op").fetchall()))

    def clear_pending(self, ids: list[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM pending WHERE id = ?", [(i,) for i in ids])

    def clear_all_pending(self) -> None:
        self._db.execute("DELETE FROM pending")

    def known_chunk_ids(self, ids: list[str]) -> dict[str, str]:
        """id -> content hash, for the ids of this list that are chunks now."""
        found = {}
        for part in _parts(ids):
            found.update(
                self._db.execute(f"SELECT id, content_hash FROM chunks WHERE id IN ({_marks(part)})", part)
            )
        self.counts["chunks_read"] += len(found)
        return found

    # -- reconciliation scratch: the ids Milvus was found to hold ------------------------------
    def start_reconciling(self) -> None:
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS present (id TEXT PRIMARY KEY)")
        self._db.execute("DELETE FROM present")

    def mark_present(self, ids: list[str]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO present VALUES (?)", [(i,) for i in ids])

    def ids_not_present(self, batch: int = DEFAULT_BATCH) -> Iterator[list[str]]:
        """Chunk ids Milvus was not found to hold, `batch` at a time."""
        last = ""
        while True:
            ids = [
                i
                for (i,) in self._db.execute(
                    "SELECT id FROM chunks WHERE id > ? AND id NOT IN (SELECT id FROM present) "
                    "ORDER BY id LIMIT ?",
                    (last, batch),
                )
            ]
            if not ids:
                return
            last = ids[-1]
            yield ids

    # -- plumbing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self):
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "SourceStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PageWriter:
    """Pages of one reading, added as they come (see SourceStore.replacing_pages)."""

    def __init__(self, store: SourceStore, batch: int = DEFAULT_BATCH):
        self.store, self.batch = store, batch
        self.changes = PageChanges()
        self._rows: list[dict] = []
        self._seen: list[str] = []

    def keep(self, path: str) -> None:
        """A page the reader found unchanged without reading it (same stat, same version)."""
        self._seen.append(path)
        self.changes.unchanged += 1
        if len(self._seen) >= self.batch:
            self.flush()

    def add(self, row: dict) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        db, rows = self.store._db, self._rows
        self._seen += [row["path"] for row in rows]
        stored = {}
        for part in _parts([row["path"] for row in rows]):
            stored.update(
                db.execute(f"SELECT path, content_hash FROM pages WHERE path IN ({_marks(part)})", part)
            )
        for row in rows:
            before = stored.get(row["path"])
            if before is None:
                self.changes.added += 1
            elif before != row["content_hash"]:
                self.changes.modified += 1
            else:
                self.changes.unchanged += 1
        db.executemany(
            f"INSERT OR REPLACE INTO pages ({', '.join(f'{chr(34)}{f}{chr(34)}' for f in PAGE_FIELDS)}) "
            f"VALUES ({_marks(PAGE_FIELDS)})",
            [tuple(row.get(f, "") for f in PAGE_FIELDS) for row in rows],
        )
        db.executemany("INSERT OR IGNORE INTO seen VALUES (?)", [(p,) for p in self._seen])
        self.store.counts["pages_written"] += len(rows)
        self._rows, self._seen = [], []


def _marks(values) -> str:
    return ",".join("?" * len(values))


def _parts(values: list, size: int = _SQL_VARIABLES) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
