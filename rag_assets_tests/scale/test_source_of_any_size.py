"""A source of any size: exact rows through every kind of change, work that follows the change, memory
that follows the batch (tested against a real Milvus server in
rag_assets_tests/milvus_server/test_server_ingest.py: Milvus Lite keeps a loaded collection in the
process's own memory). A few thousand one-chunk pages and a tiny model made on the spot
(rag_assets/testing/tiny_model.py), so the pipeline's own costs are what is measured."""

import shutil

import pytest

from rag_assets.core.chunking import Chunker
from rag_assets.core.model_files import load_tokenizer, max_seq_length
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.ingest import run_ingest
from rag_assets.settings import Settings
from rag_assets.testing.tiny_model import make_tiny_model
from rag_assets_tests.helpers import latest_metadata, milvus_rows, write_sources

PAGES = 2000
SOURCE = "big"


def page(number: int, edit: str = "") -> str:
    return f"# Page {number}\n\nThe text of page {number}, about topic {number % 37}. {edit}\n"


def write_pages(root, numbers, edit: str = "") -> None:
    for number in numbers:
        path = root / f"part{number // 500}" / f"p{number:05d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(number, edit))


def expected_rows(root, model_dir) -> dict[str, tuple[str, str]]:
    """id -> (path, text) of every chunk the folder should have in Milvus, as the chunker makes them."""
    chunker = Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))
    expected = {}
    for path in sorted(root.rglob("*.md")):
        relative = path.relative_to(root).as_posix()
        for chunk in chunker.split_page(SOURCE, relative, path.read_text(), "markdown"):
            expected[chunk.id] = (relative, chunk.text)
    return expected


def stored_rows(settings) -> dict[str, tuple[str, str]]:
    return {i: (r["path"], r["text"]) for i, r in milvus_rows(settings, SOURCE).items()}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny_settings(env, monkeypatch, tiny_model, workdir) -> Settings:
    """The user's settings with EMBEDDING_MODEL set to the tiny model; its random vectors find nothing,
    so the evaluation's minimum recall is 0."""
    monkeypatch.setenv("EMBEDDING_MODEL", str(tiny_model))
    monkeypatch.setenv("RAG_MIN_RECALL", "0")
    root = workdir / "docs"
    write_sources(workdir / "sources.yaml", [{"name": SOURCE, "kind": "local", "path": str(root)}])
    return Settings.from_env()


def milvus_of(settings) -> MilvusStore:
    from rag_assets.resources.milvus import MilvusResource

    return MilvusResource.from_settings(settings, busy_wait_seconds=0).open()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_large_source_stays_exact_through_updates_a_halving_and_reconciliations(
    tiny_settings, instance, workdir, tiny_model
):
    root = workdir / "docs"
    write_pages(root, range(PAGES))
    run_ingest(tiny_settings, instance, [SOURCE])
    assert stored_rows(tiny_settings) == expected_rows(root, tiny_model)

    # Edits, additions, a deletion and a move: each is written, nothing else is touched.
    write_pages(root, [3, 700, 1999], edit="Edited.")
    write_pages(root, [PAGES, PAGES + 1])
    (root / "part1" / "p00600.md").unlink()
    (root / "part2" / "p01200.md").rename(root / "part0" / "moved.md")
    run_ingest(tiny_settings, instance, [SOURCE])
    assert stored_rows(tiny_settings) == expected_rows(root, tiny_model)
    pages, chunks = (latest_metadata(instance, a, SOURCE) for a in ("raw_pages", "chunks"))
    embedded, written = (latest_metadata(instance, a, SOURCE) for a in ("embeddings", "milvus_collection"))
    # 3 edited + 2 added + 1 moved (its new path) pages written; 1 deleted + 1 moved away removed.
    assert (pages["pages_added"], pages["pages_modified"], pages["pages_removed"]) == (3, 3, 2)
    assert pages["store_pages_written"] == 6 + 2
    # Each page is one chunk: 3 edited + 2 added + 1 moved in, 3 edited + 1 deleted + 1 moved out.
    assert (chunks["chunks_added"], chunks["chunks_removed"], chunks["pages_chunked"]) == (6, 5, 6)
    # The old chunks of the 3 edited, the deleted and the moved-away pages are read.
    assert chunks["store_chunks_read"] == 5 and chunks["store_chunks_written"] == 11
    # The moved page's text is in the embedding cache: its new chunk id needs no forward pass.
    assert (embedded["chunks_embedded"], embedded["store_vectors_written"]) == (5, 6)
    assert (written["rows_upserted"], written["rows_deleted"], written["rows_read_from_milvus"]) == (6, 5, 0)
    assert written["reconciled"] == "no" and written["store_chunks_read"] == 6

    # Half the source goes.
    shutil.rmtree(root / "part0")
    shutil.rmtree(root / "part1")
    run_ingest(tiny_settings, instance, [SOURCE])
    assert stored_rows(tiny_settings) == expected_rows(root, tiny_model)
    # part0: 500 pages and the moved one; part1: 500 less the deleted one.
    assert latest_metadata(instance, "milvus_collection", SOURCE)["rows_deleted"] == 1000

    # Milvus changed behind the store's back, row count kept: only a full reconciliation can see it.
    victim = next(iter(stored_rows(tiny_settings)))
    milvus = milvus_of(tiny_settings)
    try:
        milvus.delete_ids([victim])
        milvus.upsert_rows(
            [{**milvus.query_rows(f'id != "{victim}"', fields=["*"], limit=1)[0], "id": "orphan"}]
        )
    finally:
        milvus.close()
    run_ingest(tiny_settings, instance, [SOURCE], reconcile=True)
    assert stored_rows(tiny_settings) == expected_rows(root, tiny_model)
    reconciled = latest_metadata(instance, "milvus_collection", SOURCE)
    assert (reconciled["reconciled"], reconciled["rows_upserted"], reconciled["rows_deleted"]) == (
        "asked for",
        1,
        1,
    )

    # A row lost behind its back changes the count: a plain run notices and reconciles by itself.
    milvus = milvus_of(tiny_settings)
    try:
        milvus.delete_ids([victim])
    finally:
        milvus.close()
    run_ingest(tiny_settings, instance, [SOURCE])
    assert stored_rows(tiny_settings) == expected_rows(root, tiny_model)
    assert latest_metadata(instance, "milvus_collection", SOURCE)["reconciled"].startswith(
        "Milvus's row count"
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_update_reads_and_writes_the_same_rows_whatever_the_source_size(tiny_settings, instance, workdir):
    def update_work(pages: int) -> dict:
        root = workdir / f"docs{pages}"
        write_sources(workdir / "sources.yaml", [{"name": SOURCE, "kind": "local", "path": str(root)}])
        write_pages(root, range(pages))
        run_ingest(tiny_settings, instance, [SOURCE])
        write_pages(root, [1, pages - 1], edit=f"Edited in the source of {pages} pages.")
        run_ingest(tiny_settings, instance, [SOURCE])
        counts = {}
        for asset in ("raw_pages", "chunks", "embeddings", "milvus_collection"):
            metadata = latest_metadata(instance, asset, SOURCE)
            counts |= {
                f"{asset}.{k}": v
                for k, v in metadata.items()
                if k.startswith("store_")
                and k != "store_page_index_read"
                or k in ("rows_upserted", "rows_deleted", "rows_read_from_milvus", "chunks_embedded")
            }
        return counts

    small, large = update_work(250), update_work(1000)

    assert small == large, "an update's work must not grow with the source"
    assert large["milvus_collection.rows_upserted"] == 2 and large["chunks.store_chunks_written"] == 4
