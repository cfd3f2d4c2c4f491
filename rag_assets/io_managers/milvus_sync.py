"""The Milvus write of one source, driven by its store: send the recorded changes, or reconcile.

Incremental (the usual run): the store's `pending` ids are written (chunk + vector) and deleted in
batches, each batch cleared once Milvus has it, so an interrupted write resumes where it stopped.
Then Milvus counts the source's rows; a count that is not the store's chunk count means the record
and Milvus disagree (rows written or deleted behind the store's back, a lost write), and the source
is reconciled.

Reconciliation (a new collection, a store rebuilt from nothing, a count that disagrees): the
source's rows in Milvus are paged through (id, hash, model); rows that are no chunk of the store
are deleted, chunks Milvus lacks or holds with another text or model are written. Memory follows
the page, not the source. Afterwards the collection holds exactly the store's chunks.
"""

from dataclasses import dataclass

import pandas as pd

from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import DELETE, VECTORS_MODEL, WRITE, WRITTEN_TO, SourceStore
from rag_assets.resources.milvus import ROW_FIELDS, MilvusStore

ID_BATCH = 1000  # ids read from the store (and their rows built) at a time


@dataclass
class SyncReport:
    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    batches: int = 0
    rows_read: int = 0  # rows read back from Milvus (0 unless reconciling)
    reconciled: str = ""  # why the source was reconciled; empty when it was not

    def add(self, other: "SyncReport") -> None:
        for name in ("upserted", "deleted", "batches", "rows_read"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Writer:
    """Where and how one source's rows are written."""

    milvus: MilvusStore
    store: SourceStore
    source: str
    model: str
    batch_rows: int
    batch_bytes: int
    progress: Reporter | None = None

    def write(self, ids: list[str]) -> int:
        """Upsert the rows of these chunks; returns the batches made."""
        chunks = self.store.chunks_of(ids)
        vectors = self.store.vectors_of(ids, self.model)
        missing = [c["id"] for c in chunks if c["id"] not in vectors]
        if missing:
            raise ValueError(
                f"source {self.source!r}: {len(missing)} chunks have no embedding by {self.model}; "
                "re-materialize embeddings"
            )
        if not chunks:
            return 0
        rows = pd.DataFrame(chunks).assign(
            source=self.source,
            model=self.model,
            vector=lambda f: [vectors[i] for i in f["id"]],
        )[ROW_FIELDS]
        on_batch = self.progress.advance if self.progress else None
        return self.milvus.upsert_frame(
            rows, batch_rows=self.batch_rows, batch_bytes=self.batch_bytes, on_batch=on_batch
        )


def sync_source(writer: Writer, *, reconcile: bool = False) -> SyncReport:
    """Make the source's rows in Milvus exactly the store's chunks (see the module docstring)."""
    store, milvus = writer.store, writer.milvus
    report = SyncReport()
    if store.meta(WRITTEN_TO) != milvus.collection:
        report.reconciled = "first write to this collection"
    elif reconcile:
        report.reconciled = "asked for"
    if not report.reconciled:
        report.add(send_pending(writer))
        milvus.flush()
        if milvus.count_source(writer.source) != store.chunk_count():
            report.reconciled = "Milvus's row count is not the store's chunk count"
    if report.reconciled:
        report.add(reconcile_source(writer))
    if report.batches:
        milvus.flush()
    store.set_meta(WRITTEN_TO, milvus.collection)
    report.unchanged = store.chunk_count() - report.upserted
    return report


def send_pending(writer: Writer) -> SyncReport:
    """Write the pending writes and delete the pending deletes, batch by batch."""
    store, report = writer.store, SyncReport()
    for ids in store.pending(WRITE, ID_BATCH):
        report.batches += writer.write(ids)
        report.upserted += len(ids)
        store.clear_pending(ids)
    for ids in store.pending(DELETE, ID_BATCH):
        writer.milvus.delete_batch(ids)
        report.batches += 1
        report.deleted += len(ids)
        store.clear_pending(ids)
    return report


def reconcile_source(writer: Writer) -> SyncReport:
    """Compare Milvus's rows of the source with the store page by page; fix what differs."""
    store, milvus, report = writer.store, writer.milvus, SyncReport()
    store.start_reconciling()
    stale: list[str] = []
    for page in milvus.iter_source_rows(writer.source, ("id", "content_hash", "model")):
        report.rows_read += len(page)
        known = store.known_chunk_ids([row["id"] for row in page])
        store.mark_present(
            [r["id"] for r in page if known.get(r["id"]) == r["content_hash"] and r["model"] == writer.model]
        )
        stale += [r["id"] for r in page if r["id"] not in known]
    for start in range(0, len(stale), ID_BATCH):
        milvus.delete_batch(stale[start : start + ID_BATCH])
        report.batches += 1
    report.deleted += len(stale)
    for ids in store.ids_not_present(ID_BATCH):
        report.batches += writer.write(ids)
        report.upserted += len(ids)
    store.clear_all_pending()
    return report


def stored_model(store: SourceStore, configured: str | None) -> str:
    """The model whose vectors are written: the configured one, else the one the store holds."""
    return configured or store.meta(VECTORS_MODEL) or ""
