"""Derived state repairs itself: a source store, the embedding cache, an evaluation parquet file or a
change record cut short, zeroed or garbled never stops a source. The damaged file is moved aside
and named, the next `rag-assets ingest` rebuilds it from the sources, and the rows come out exact."""

import os
import sqlite3
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from rag_assets.assets.raw_pages import read_into_store
from rag_assets.core.artifacts import ArtifactStore
from rag_assets.core.pages import PageStats
from rag_assets.core.source_store import SourceStore
from rag_assets.resources.embedding_cache import EmbeddingCache
from rag_assets.resources.readers import ReadResult
from rag_assets.settings import Settings
from rag_assets_tests.helpers import expected_chunks, milvus_rows, rag_assets, write_sources


def truncated(path) -> None:
    path.write_bytes(path.read_bytes()[: max(100, path.stat().st_size // 3)])


def zero_bytes(path) -> None:
    path.write_bytes(b"")


def garbage(path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(8192))


DAMAGES = {"truncated": truncated, "zero bytes": zero_bytes, "garbage": garbage}


def filled_store(path) -> SourceStore:
    store = SourceStore(path)
    rows = [
        {
            "id": f"c{i}",
            "path": "p.md",
            "position": i,
            "heading": "",
            "text": "x" * 500,
            "tokens": 1,
            "content_hash": f"h{i}",
            "url": "",
            "commit": "",
        }
        for i in range(300)
    ]
    store.replace_chunks({"p.md": ("hash", "chunker", rows)})
    store.close()
    return store


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_source_store_is_moved_aside_and_a_new_one_opened(tmp_path, damage):
    artifacts = ArtifactStore(tmp_path)
    filled_store(artifacts.source_store_path("notes"))
    DAMAGES[damage](artifacts.source_store_path("notes"))

    store, moved = artifacts.open_source("notes")

    with store:
        assert store.chunk_count() == 0  # empty: the next reading fills it
    if damage == "zero bytes":  # SQLite's own empty database: nothing to move
        assert moved is None
    else:
        assert moved is not None and moved.name.startswith("notes.sqlite.damaged-") and moved.exists()


def test_a_store_garbled_inside_is_moved_aside_when_read_and_the_source_read_in_full(tmp_path):
    """Damage its header does not show (whole size, a sound first page): found by the first query."""
    artifacts = ArtifactStore(tmp_path)
    path = artifacts.source_store_path("notes")
    with SourceStore(path) as store, store.replacing_pages() as writer:
        for n in range(300):
            writer.add(
                {
                    "path": f"p{n}.md",
                    "url": "",
                    "content_hash": f"h{n}",
                    "commit": "",
                    "format": "markdown",
                    "version": "v",
                    "text": "x" * 2000,
                    "stat": "",
                }
            )
    data = bytearray(path.read_bytes())
    data[4096:] = np.random.default_rng(3).bytes(len(data) - 4096)
    path.write_bytes(bytes(data))
    source = SimpleNamespace(name="notes", on_empty="keep", include=(), exclude=())
    seen = []

    def read(known):
        seen.append(dict(known))
        row = {
            "path": "a.md",
            "url": "",
            "content_hash": "a",
            "commit": "",
            "format": "markdown",
            "version": "v",
            "text": "A.",
        }
        return ReadResult([row], PageStats(pages=1), "v", datetime.now(UTC))

    result, changes, _, moved = read_into_store(artifacts, source, read)

    assert moved is not None and moved.name.startswith("notes.sqlite.damaged-")
    assert seen[-1] == {} and changes.added == 1  # read again in full, into a new store
    with SourceStore(path) as store:
        assert store.page_count() == 1


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_embedding_cache_is_moved_aside_and_the_lookup_answers(tmp_path, damage):
    path = tmp_path / "cache.sqlite"
    cache = EmbeddingCache(path)
    cache.put_many({f"h{i}": np.full(384, i, np.float32) for i in range(300)})
    cache.close()
    DAMAGES[damage](path)

    cache = EmbeddingCache(path)
    found = cache.get_many(["h1", "h2"])
    cache.put_many({"h1": np.ones(384, np.float32)})

    assert found == {} and set(cache.get_many(["h1"])) == {"h1"}
    assert (cache.repaired is None) == (damage == "zero bytes")
    cache.close()


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_evaluation_parquet_reads_as_absent_and_is_moved_aside(tmp_path, damage):
    artifacts = ArtifactStore(tmp_path)
    path = artifacts.write("eval_queries", "notes", pd.DataFrame({"query": ["q"] * 100}))
    DAMAGES[damage](path)

    assert artifacts.load("eval_queries", "notes") is None
    assert not path.exists() and list(path.parent.glob("notes.parquet.damaged-*"))


# The files of a real deployment, each damaged in one of the ways above (two rounds: each file sees
# two kinds of damage).
ROUNDS = {
    "round 1": {"store": truncated, "cache": garbage, "parquet": zero_bytes, "record": garbage},
    "round 2": {"store": garbage, "cache": truncated, "parquet": truncated, "record": zero_bytes},
}


def derived_files(data) -> dict[str, list]:
    artifacts = data / "artifacts"
    return {
        "store": sorted((artifacts / "sources").glob("*.sqlite")),
        "cache": sorted((data / "cache" / "embeddings").glob("*.sqlite")),
        "parquet": sorted(artifacts.glob("*/*.parquet")),
        "record": sorted((artifacts / "ingest_state").glob("*.json")),
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("round_", ROUNDS)
def test_every_derived_file_damaged_and_the_next_ingest_converges(round_, env, workdir, docs_folder):
    other = workdir / "other"
    other.mkdir()
    (other / "other.md").write_text("# Other\n\nThe other source has one page about pools.\n")
    write_sources(
        workdir / "sources.yaml",
        [
            {"name": "notes", "kind": "local", "path": str(docs_folder)},
            {"name": "other", "kind": "local", "path": str(other)},
        ],
    )
    assert rag_assets("ingest", env=env).returncode == 0
    settings = Settings.from_env()
    page = docs_folder / "searching.md"
    page.write_text(page.read_text() + "\n## Damage\n\nA section added after the first ingest.\n")
    files = derived_files(settings.data_dir)
    assert all(files.values()), files
    for kind, damage in ROUNDS[round_].items():
        for path in files[kind]:
            for suffix in ("-wal", "-shm"):  # what SQLite left beside it goes with the damage
                path.with_name(path.name + suffix).unlink(missing_ok=True)
            damage(path)

    repaired = rag_assets("ingest", env=env)

    assert repaired.returncode == 0, repaired.stderr
    assert "Traceback" not in repaired.stderr + repaired.stdout
    for source, folder in (("notes", docs_folder), ("other", other)):
        rows = milvus_rows(settings, source)
        assert {i: (r["path"], r["heading"], r["text"]) for i, r in rows.items()} == expected_chunks(
            source, folder
        )
    store_lines = [line for line in repaired.stderr.splitlines() if "its store could not be read" in line]
    assert len(store_lines) == 2 and all("moved to" in line for line in store_lines)
    assert "embedding cache" in repaired.stderr and "moved to" in repaired.stderr
    # The repairing run could not fingerprint the damaged sources beforehand: the next one runs them
    # once more (nothing to do), and from then on they are skipped as unchanged.
    again = rag_assets("ingest", env=env)
    assert again.returncode == 0, again.stderr
    for line in (line.split() for line in again.stdout.splitlines() if line.startswith(("notes", "other"))):
        assert line[3:6] == ["0", "0", "0"], line  # embedded, written, deleted
    assert rag_assets("ingest", env=env).stdout.count("unchanged since the run") == 2
    pruned = rag_assets("prune-cache", env=env)
    assert pruned.returncode == 0 and "removed" in pruned.stdout, pruned.stderr


@pytest.mark.slow
def test_prune_cache_with_a_damaged_store_prunes_nothing_and_says_why(env, workdir, docs_folder):
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    assert rag_assets("ingest", env=env).returncode == 0
    settings = Settings.from_env()
    [cache] = derived_files(settings.data_dir)["cache"]
    vectors = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
    garbage(settings.artifacts_dir / "sources" / "notes.sqlite")

    result = rag_assets("prune-cache", env=env)

    assert result.returncode == 0
    assert (
        "notes: its store could not be read, moved to" in result.stdout and "nothing pruned" in result.stdout
    )
    assert sqlite3.connect(cache).execute("SELECT COUNT(*) FROM vectors").fetchone()[0] == vectors
    assert rag_assets("ingest", env=env).returncode == 0  # the source runs (its store is new) and lands
    assert milvus_rows(settings, "notes").keys() == expected_chunks("notes", docs_folder).keys()
    assert os.path.exists(settings.artifacts_dir / "sources" / "notes.sqlite")
