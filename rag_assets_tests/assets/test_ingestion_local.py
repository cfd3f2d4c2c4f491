"""End to end on a local folder: the four assets materialize and Milvus holds exactly the chunks."""

import pytest

from rag_assets.runtime.ingest import run_ingest
from rag_assets_tests.helpers import expected_chunks, milvus_rows, write_sources


def test_local_source_lands_in_milvus_as_exactly_its_chunks(settings, instance, docs_folder):
    write_sources(
        settings.sources_file,
        [{"name": "notes", "kind": "local", "path": str(docs_folder), "include": ["**/*.md"]}],
    )

    [summary] = run_ingest(settings, instance, ["notes"])

    rows = milvus_rows(settings, "notes")
    expected = expected_chunks("notes", docs_folder)
    assert {i: (r["path"], r["heading"], r["text"]) for i, r in rows.items()} == expected
    assert summary.counts.pop("tokens") > len(expected)
    assert summary.counts == {
        "pages": 4,
        "chunks": len(expected),
        "embedded": len(expected),
        "written": len(expected),
        "deleted": 0,
    }
    assert "Architecture › The asset graph › embeddings" in {r["heading"] for r in rows.values()}
    assert all(r["url"].startswith("file://") and r["url"].endswith(r["path"]) for r in rows.values())


@pytest.mark.slow
def test_deleted_file_loses_its_rows_and_nothing_else(settings, instance, docs_folder, warm):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"], resources=warm(settings))
    before = milvus_rows(settings, "notes")

    (docs_folder / "searching.md").unlink()
    [summary] = run_ingest(settings, instance, ["notes"], resources=warm(settings))

    after = milvus_rows(settings, "notes")
    gone = {i for i, r in before.items() if r["path"] == "searching.md"}
    assert gone and set(after) == set(before) - gone
    assert all(after[i] == before[i] for i in after)
    assert summary.counts["deleted"] == len(gone) and summary.counts["written"] == 0


@pytest.mark.slow
def test_two_sources_never_touch_each_others_rows(settings, instance, docs_folder, warm, workdir):
    other = workdir / "other"
    other.mkdir()
    (other / "guide.md").write_text("# Guide\n\nThe other source has its own page.\n")
    write_sources(
        settings.sources_file,
        [
            {"name": "notes", "kind": "local", "path": str(docs_folder)},
            {"name": "guide", "kind": "local", "path": str(other)},
        ],
    )
    run_ingest(settings, instance, ["notes", "guide"], resources=warm(settings))
    notes_before = milvus_rows(settings, "notes")

    (other / "guide.md").unlink()
    (other / "new.md").write_text("# New\n\nReplaced.\n")
    run_ingest(settings, instance, ["guide"], resources=warm(settings))

    assert milvus_rows(settings, "notes") == notes_before
    assert {r["path"] for r in milvus_rows(settings, "guide").values()} == {"new.md"}


@pytest.mark.slow
def test_same_input_twice_gives_identical_ids_and_writes_nothing(settings, instance, docs_folder, warm):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    run_ingest(settings, instance, ["notes"], resources=warm(settings))
    first = milvus_rows(settings, "notes")

    [summary] = run_ingest(settings, instance, ["notes"], resources=warm(settings))

    assert milvus_rows(settings, "notes") == first
    assert (
        summary.counts["embedded"] == 0 and summary.counts["written"] == 0 and summary.counts["deleted"] == 0
    )
