"""What `rag-assets ingest` checks before it fetches or embeds anything, each failure one line.

The settings themselves are checked by `Settings` (rag_assets/settings.py). Here: the selected local
sources' folders exist, and Milvus is reachable, accepts the token, and any collection the run will
write to holds vectors of the model's dimension. Every failure is a `PreflightError`: nothing was
done, the CLI exits 2.
"""

from rag_assets.settings import Settings
from rag_assets.sources import LocalSource


class PreflightError(ValueError):
    """Something the run needs is not there; nothing was fetched, embedded or written."""


def check_local_folders(settings: Settings, sources: list) -> None:
    for source in sources:
        if isinstance(source, LocalSource) and not source.path.is_dir():
            raise PreflightError(
                f"{settings.sources_file}: source {source.name!r}: folder {source.path} does not exist or "
                "is not a folder (a relative path is relative to the sources file)"
            )


def check_milvus(settings: Settings) -> None:
    """Connect with the token and list collections (a server checks the token on calls, not on
    connect); an existing collection of this model must hold vectors of the model's dimension."""
    from rag_assets.core.model_files import embedding_dimension, resolve_model_dir
    from rag_assets.resources.milvus import (
        MilvusException,
        MilvusLiteBusy,
        MilvusResource,
        MilvusUnavailable,
    )

    milvus = MilvusResource.from_settings(settings, busy_wait_seconds=0)  # a busy file: said at once
    try:
        store = milvus.open()
    except MilvusLiteBusy:
        # Another ingest (or a run) holds the Lite file: Milvus is there. This run's Milvus steps wait
        # for the `milvus` pool, and the write step checks the dimension itself.
        return
    try:
        try:
            store.list_collections()
        except MilvusException as error:
            raise MilvusUnavailable(
                f"Milvus at {settings.milvus_uri} refused a request: {error.message} (check MILVUS_TOKEN)"
            ) from None
        existing = store.dimension()
        if existing is None:
            return
        wanted = embedding_dimension(resolve_model_dir(settings.embedding_model))
        if wanted is None:
            from rag_assets.resources.embedder import Embedder

            wanted = Embedder(settings.embedding_model, device="cpu").dimension
        if existing != wanted:
            raise PreflightError(
                f"Milvus collection {store.collection!r} holds {existing}-dimensional vectors but "
                f"EMBEDDING_MODEL={settings.embedding_model!r} gives {wanted}: set MILVUS_COLLECTION to a "
                "new name, or drop that collection"
            )
    finally:
        store.close()
