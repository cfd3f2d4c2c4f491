"""MilvusStore: the collection that serves retrieval, and the batched, per-source sync that keeps it right.

Readers use the serving name (MILVUS_COLLECTION), a Milvus alias; writes go to the current model's
own collection behind it (aliases.py). Rows are keyed by chunk id. What to write and delete is decided
from the source's store (io_managers/milvus_sync.py); this class batches the calls.
Every filter names a source through `quote`, and source names are validated on load.
"""

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pymilvus import MilvusClient, MilvusException
from pymilvus.exceptions import ConnectionConfigException

from rag_assets.core import model_files
from rag_assets.core.backends import DEFAULT_BACKEND
from rag_assets.errors import MilvusLiteBusy, MilvusUnavailable
from rag_assets.resources.milvus import aliases
from rag_assets.resources.milvus.aliases import (
    CollectionInfo,
    family,
    model_collection_name,
    model_properties,
)
from rag_assets.resources.milvus.schema import DEFAULT_METRIC, ROW_FIELDS, collection_schema, index_params
from rag_assets.settings import Settings, milvus_token

DEFAULT_BATCH_ROWS = 2000
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
QUERY_PAGE_ROWS = 10000
# A step (pool `milvus`, one at a time) that finds the Lite file held waits this long: the holder is
# short-lived (another ingest's preflight, a `rag-assets search`, a step of another run closing).
STEP_LITE_BUSY_WAIT_SECONDS = 60.0
LITE_BUSY_POLL_SECONDS = 0.5

# Milvus Lite has no server timestamp to offer; the iterator falls back correctly and says so on
# every query. That line is noise, not a warning a user can act on.
logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(
    lambda record: "mvccTs" not in record.getMessage()
)


def quote(value: str) -> str:
    """A Milvus string literal: a name can never close the quotes and add its own expression."""
    return json.dumps(value, ensure_ascii=False)  # Milvus rejects \uXXXX escapes; quotes stay escaped


@contextlib.contextmanager
def _lite_start_failures():
    """Collect why Milvus Lite failed to start, instead of letting it log a trace on stderr."""
    failures: list[BaseException] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            failures.append(record.exc_info[1])
            return False
        return True

    logger = logging.getLogger("milvus_lite.server_manager")
    logger.addFilter(keep)
    try:
        yield failures
    finally:
        logger.removeFilter(keep)


def connect(uri: str, token: str = "") -> MilvusClient:
    """A client for a Lite file or a server; what stops it is one MilvusUnavailable line that says
    what to do. `uri` carries no credentials (rag_assets/settings.py), so no message can show any."""
    with _lite_start_failures() as failures:
        try:
            return MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
        except ConnectionConfigException as error:
            if any(type(f).__name__ == "DataDirLockedError" for f in failures):
                raise MilvusLiteBusy(
                    f"Milvus Lite file {uri} is open in another process (an ingest, a search or a "
                    "Dagster run); Lite admits one process per file: try again when it is done, or use a "
                    "Milvus server (MILVUS_URI=http://host:19530) for concurrent readers"
                ) from None
            reason = f"{failures[0]}" if failures else error.message
            raise MilvusUnavailable(f"Milvus Lite could not open {uri}: {reason}") from None
        except MilvusException as error:
            raise MilvusUnavailable(
                f"Milvus at {uri} did not accept the connection: {error.message} (check MILVUS_URI, "
                "MILVUS_TOKEN and that the server is up)"
            ) from None


def _connect_when_free(uri: str, token: str, wait_seconds: float) -> MilvusClient:
    """connect(), retried while another process holds the Lite file, until `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return connect(uri, token)
        except MilvusLiteBusy:
            if time.monotonic() + LITE_BUSY_POLL_SECONDS > deadline:
                raise
            time.sleep(LITE_BUSY_POLL_SECONDS)


class MilvusStore:
    """One collection (or an alias of one) on one Milvus (Lite file or server).

    `serving`: the serving name this collection belongs to, when it is one model's collection
    behind it; removing a source then removes it from the others too (see `delete_source`).
    """

    def __init__(
        self,
        uri: str,
        collection: str,
        token: str = "",
        *,
        serving: str | None = None,
        busy_wait_seconds: float = 0.0,
    ):
        self._lite_path = None if "://" in uri else uri
        if self._lite_path:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        self.client = _connect_when_free(uri, token, busy_wait_seconds)
        self.collection = collection
        self.serving = serving

    def ensure_collection(self, dimension: int, properties: dict[str, str] | None = None) -> None:
        """Create the collection for vectors of `dimension`, or check an existing one matches.

        `properties` are recorded on a new collection (the model that made its vectors, and the
        metric its index compares them with: `aliases.METRIC_PROPERTY`, COSINE when absent)."""
        if self.client.has_collection(self.collection):
            existing = self.dimension()
            if existing != dimension:
                raise ValueError(
                    f"Milvus collection {self.collection!r} holds {existing}-dimensional vectors but the "
                    f"model gives {dimension}: set MILVUS_COLLECTION to a new name for this model"
                )
            self.client.load_collection(self.collection)
            return
        self.client.create_collection(
            self.collection,
            schema=collection_schema(dimension),
            index_params=index_params(aliases.recorded_metric({"properties": properties}, DEFAULT_METRIC)),
            properties=properties or None,
        )
        self.__dict__.pop("metric", None)

    def dimension(self) -> int | None:
        if not self.client.has_collection(self.collection):
            return None
        fields = self.client.describe_collection(self.collection)["fields"]
        return next(int(f["params"]["dim"]) for f in fields if f["name"] == "vector")

    def source_rows(
        self, source: str, fields: tuple[str, ...] = ("id", "content_hash", "model")
    ) -> list[dict]:
        """Every row of one source (only the given fields), paging past Milvus's query window."""
        return self._source_rows(self.collection, source, fields)

    def _source_rows(self, collection: str, source: str, fields: tuple[str, ...]) -> list[dict]:
        if not self.client.has_collection(collection):
            return []
        self.client.load_collection(collection)
        iterator = self.client.query_iterator(
            collection,
            batch_size=QUERY_PAGE_ROWS,
            filter=f"source == {quote(source)}",
            output_fields=list(fields),
        )
        rows: list[dict] = []
        try:
            while page := iterator.next():
                rows.extend(page)
        finally:
            iterator.close()
        return rows

    def iter_source_rows(
        self,
        source: str,
        fields: tuple[str, ...] = ("id", "content_hash", "model"),
        batch: int = QUERY_PAGE_ROWS,
    ) -> Iterator[list[dict]]:
        """One source's rows (only the given fields), a page at a time: a reconciliation never holds
        the whole source."""
        if not self.client.has_collection(self.collection):
            return
        self.client.load_collection(self.collection)
        iterator = self.client.query_iterator(
            self.collection, batch_size=batch, filter=f"source == {quote(source)}", output_fields=list(fields)
        )
        try:
            while page := iterator.next():
                yield page
        finally:
            iterator.close()

    def count_source(self, source: str) -> int:
        """How many rows one source has (Milvus counts; no row leaves the server)."""
        if not self.client.has_collection(self.collection):
            return 0
        self.client.load_collection(self.collection)
        result = self.client.query(
            self.collection, filter=f"source == {quote(source)}", output_fields=["count(*)"]
        )
        return int(result[0]["count(*)"]) if result else 0

    def upsert_frame(
        self,
        rows: pd.DataFrame,
        *,
        batch_rows: int,
        batch_bytes: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        """Write whole rows (ROW_FIELDS) in batches bounded by rows and bytes; returns the batches made."""
        batches = 0
        for batch in _batches(rows, batch_rows, batch_bytes):
            self.client.upsert(self.collection, batch)
            batches += 1
            if on_batch:
                on_batch(len(batch))
        return batches

    def delete_batch(self, ids: list[str]) -> None:
        """Delete rows by id, without a flush (the writer flushes once at the end)."""
        if ids:
            self.client.delete(self.collection, ids=ids)

    def delete_source(self, source: str) -> int:
        """Remove every row of one source, and only that source; returns how many went.

        For one model's collection behind a serving name, from every collection of that name (the
        one readers get, the previous models' kept for rollback): a removed source must neither stay
        searchable while a new model's collection is being built nor come back with a rollback.
        """
        collections = [self.collection]
        if self.serving:
            collections += [c for c in family(self.client, self.serving) if c != self.collection]
        deleted = 0
        for collection in collections:
            ids = [r["id"] for r in self._source_rows(collection, source, ("id",))]
            for start in range(0, len(ids), DEFAULT_BATCH_ROWS):
                self.client.delete(collection, ids=ids[start : start + DEFAULT_BATCH_ROWS])
            if ids and collection != self.collection:
                self.client.flush(collection)
            deleted += len(ids)
        return deleted

    @cached_property
    def metric(self) -> str:
        """The metric the collection's vectors are compared with, as recorded on it (through an alias:
        on its target): COSINE, IP or L2. Scores are similarities for COSINE and IP, distances for L2;
        hits come nearest first either way."""
        return aliases.recorded_metric(self.client.describe_collection(self.collection), DEFAULT_METRIC)

    def recorded_spec(self) -> dict:
        """How the vectors of this collection were made (prompts, similarity, backend), as recorded."""
        return aliases.recorded_spec(self.client.describe_collection(self.collection))

    def search(self, vector: np.ndarray, *, limit: int, source: str | None = None) -> list[dict]:
        self.client.load_collection(self.collection)
        hits = self.client.search(
            self.collection,
            data=[vector.tolist()],
            limit=limit,
            filter=f"source == {quote(source)}" if source else "",
            output_fields=["source", "path", "url", "heading", "text"],
            search_params={"metric_type": self.metric},
        )[0]
        return [{"score": float(hit["distance"]), **hit["entity"]} for hit in hits]

    def search_ids(
        self, vectors: np.ndarray, *, limit: int, source: str, batch: int = 256
    ) -> list[list[str]]:
        """The ids of the `limit` nearest rows of one source for each vector, nearest first."""
        self.client.load_collection(self.collection)
        ranked: list[list[str]] = []
        for start in range(0, len(vectors), batch):
            hits = self.client.search(
                self.collection,
                data=[np.asarray(v, dtype=np.float32).tolist() for v in vectors[start : start + batch]],
                limit=limit,
                filter=f"source == {quote(source)}",
                output_fields=["id"],
                search_params={"metric_type": self.metric},
            )
            ranked.extend([str(hit["id"]) for hit in per_query] for per_query in hits)
        return ranked

    def serving_target(self, serving: str | None = None) -> str | None:
        """The collection a serving name (this store's name by default) resolves to for readers, or
        None when there is none yet (see rag_assets/resources/milvus/aliases.py)."""
        return aliases.serving_target(self.client, serving or self.collection)

    def point_alias(self, serving: str, target: str | None = None) -> str | None:
        """Make `serving` resolve to `target` (this store's collection by default), atomically for
        readers; returns what it resolved to before. The one place the serving alias moves."""
        return aliases.point_alias(self.client, serving, target or self.collection)

    def describe_family(self, serving: str) -> list[CollectionInfo]:
        """The collections of a serving name with their model, row count and which one readers get."""
        return aliases.describe_family(self.client, serving)

    def prune_family(self, serving: str, keep: set[str], *, dry_run: bool = False) -> list[str]:
        """Drop the collections of `serving` readers do not get and not in `keep`; returns their names."""
        return aliases.prune_family(self.client, serving, keep, dry_run=dry_run)

    def drop_family(self, serving: str) -> None:
        """Drop the serving alias and every collection of its name (to start a deployment over)."""
        if serving in self.client.list_aliases().get("aliases", []):
            self.client.drop_alias(serving)
        for name in family(self.client, serving):
            self.client.drop_collection(name)

    def recorded_model(self) -> tuple[str | None, str | None]:
        """(model, identity) recorded on this collection (through an alias: on its target)."""
        return aliases.recorded_model(self.client.describe_collection(self.collection))

    def list_collections(self) -> list[str]:
        """Every collection on this Milvus; also what proves the token is accepted (a server checks it
        on calls, not on connect)."""
        return self.client.list_collections()

    def count_rows(self) -> int:
        return int(self.client.get_collection_stats(self.collection).get("row_count", 0))

    def upsert_rows(self, rows: list[dict], *, flush: bool = True) -> None:
        """Write whole rows (ROW_FIELDS) as they are, without the sync's bookkeeping."""
        self.client.upsert(self.collection, rows)
        if flush:
            self.flush()

    def insert_rows(self, rows: list[dict]) -> None:
        """Append rows without looking for existing ids (the naive baseline of the benchmark)."""
        self.client.insert(self.collection, rows)

    def delete_ids(self, ids: list[str]) -> None:
        self.client.delete(self.collection, ids=ids)
        self.flush()

    def query_rows(self, filter: str = "", *, fields: list[str], limit: int) -> list[dict]:
        """At most `limit` rows matching a Milvus filter expression (name sources through `quote`)."""
        self.client.load_collection(self.collection)
        return self.client.query(self.collection, filter=filter, limit=limit, output_fields=fields)

    def flush(self) -> None:
        """Make what was written searchable now."""
        self.client.flush(self.collection)

    def close(self) -> None:
        """Close the client and, for a Milvus Lite file, stop its in-process server.

        Milvus Lite serves a file from a thread of the process that opened it and holds the file's
        lock until that server stops; without this, a finished step would keep every other
        process (the next run's writer, `rag-assets search`) locked out until its process exits.
        """
        self.client.close()
        if self._lite_path:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self._lite_path)


def _batches(rows: pd.DataFrame, max_rows: int, max_bytes: int):
    """Row dicts in batches bounded both by count and by approximate payload bytes."""
    batch, size = [], 0
    for record in rows[ROW_FIELDS].to_dict("records"):
        record["vector"] = np.asarray(record["vector"], dtype=np.float32).tolist()
        record_bytes = 4 * len(record["vector"]) + sum(len(str(record[f])) for f in ROW_FIELDS[:-1])
        if batch and (len(batch) >= max_rows or size + record_bytes > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += record_bytes
    if batch:
        yield batch


class MilvusResource(dg.ConfigurableResource):
    """Where the collections live: MILVUS_URI (a Milvus Lite file by default) and its token's env var;
    the serving name readers use (MILVUS_COLLECTION, an alias); the model whose collection is written
    (EMBEDDING_MODEL; empty: the serving name itself is the one collection, as before aliases)."""

    uri: str
    collection: str
    model: str = ""
    # EMBEDDING_QUERY_PROMPT / EMBEDDING_DOCUMENT_PROMPT (None: the model's own) and EMBEDDING_BACKEND:
    # with the model, what decides the vectors and so which collection is the model's.
    query_prompt: str | None = None
    document_prompt: str | None = None
    backend: str = DEFAULT_BACKEND
    token_env: str = "MILVUS_TOKEN"
    # How long a step waits for a Lite file another process holds (0: fail at once, as commands do).
    busy_wait_seconds: float = STEP_LITE_BUSY_WAIT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "MilvusResource":
        """MILVUS_URI, MILVUS_COLLECTION (the serving alias) and EMBEDDING_MODEL (whose own collection
        behind it takes the writes), as the code location and every command use them."""
        return cls(
            uri=settings.milvus_uri,
            collection=settings.collection,
            model=settings.embedding_model,
            query_prompt=settings.query_prompt,
            document_prompt=settings.document_prompt,
            backend=settings.embedding_backend,
            token_env=settings.milvus_token_env,
            **overrides,
        )

    def open(self) -> MilvusStore:
        """The current model's own collection: where writes go and what the checks look at."""
        serving = self.collection if self.model else None
        return MilvusStore(
            self.uri,
            self.model_collection,
            token=milvus_token(self.token_env),
            serving=serving,
            busy_wait_seconds=self.busy_wait_seconds,
        )

    def open_serving(self) -> MilvusStore:
        """The serving name: what readers get (the alias resolves in every call)."""
        return MilvusStore(
            self.uri,
            self.collection,
            token=milvus_token(self.token_env),
            busy_wait_seconds=self.busy_wait_seconds,
        )

    @property
    def model_identity(self) -> str | None:
        """The model's name and the hash of its weights, prompts, similarity and backend (as the embedding
        step records it on every row)."""
        return model_files.model_identity(self.model, **self._spec_settings) if self.model else None

    @property
    def _spec_settings(self) -> dict:
        return {
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "backend": self.backend,
        }

    def collection_properties(self) -> dict[str, str] | None:
        """What the model's collection records: model, identity, prompts, similarity, backend, metric."""
        identity = self.model_identity
        if not identity:
            return None
        spec = model_files.vector_spec(model_files.resolve_model_dir(self.model), **self._spec_settings)
        return model_properties(self.model, identity, spec)

    @property
    def model_collection(self) -> str:
        identity = self.model_identity
        return model_collection_name(self.collection, identity) if identity else self.collection
