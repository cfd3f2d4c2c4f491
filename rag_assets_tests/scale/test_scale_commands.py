"""The commands of a source of any size as the docs show them: `rag-assets ingest --reconcile` and
`rag-assets bench --scale`, each a process with its settings in its environment."""

import json

import pytest

from rag_assets.bench.scale import SECTIONS_PER_PAGE, UPDATE_EDITED
from rag_assets.resources.milvus import MilvusResource
from rag_assets.settings import Settings
from rag_assets_tests.helpers import milvus_rows, rag_assets, write_sources


@pytest.mark.slow
def test_ingest_reconcile_restores_rows_changed_behind_the_stores_back(env, workdir, docs_folder):
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    assert rag_assets("ingest", env=env).returncode == 0
    settings = Settings.from_env()
    before = milvus_rows(settings, "notes")
    victim, kept = sorted(before)[:2]
    milvus = MilvusResource.from_settings(settings, busy_wait_seconds=0).open()
    try:  # one row lost, one foreign row added: the count is the same, the rows are not
        milvus.delete_ids([victim])
        milvus.upsert_rows(
            [{**milvus.query_rows(f'id == "{kept}"', fields=["*"], limit=1)[0], "id": "orphan"}]
        )
    finally:
        milvus.close()

    plain = rag_assets("ingest", env=env)
    reconciled = rag_assets("ingest", "--reconcile", env=env)

    assert "unchanged since the run" in plain.stdout  # nothing changed in the folder: skipped
    assert reconciled.returncode == 0, reconciled.stderr
    [line] = [line.split() for line in reconciled.stdout.splitlines() if line.startswith("notes")]
    assert line[4:6] == ["1", "1"]  # written, deleted
    assert milvus_rows(settings, "notes") == before


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_scale_reports_cold_noop_and_update_with_their_peak_memory(workdir):
    out = workdir / "scale.json"

    result = rag_assets(
        "bench", "--scale", "40", "--workdir", str(workdir / "bench"), "--out", str(out), env={}
    )

    assert result.returncode == 0, result.stderr[-3000:]
    header, rule, *rows = result.stdout.strip().splitlines()
    assert header.startswith("| pages | chunks | cold s | cold peak RSS MB") and len(rows) == 1
    report = json.loads(out.read_text())
    assert [r["pages"] for r in report] == [40]
    for row in report:
        # After the update: a chunk per section, and the edited pages' new section.
        assert row["chunks"] == SECTIONS_PER_PAGE * row["pages"] + UPDATE_EDITED
        assert all(row[stage]["returncode"] == 0 for stage in ("cold", "noop", "update"))
        assert row["cold"]["peak_rss_mb"] > 100 and row["noop"]["seconds"] < row["cold"]["seconds"]
