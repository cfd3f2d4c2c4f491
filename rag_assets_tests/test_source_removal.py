"""`rag-assets ingest` treats the sources file as the registry, as the sources sensor does: a source taken
out of the file loses its rows (in every collection of the serving name), its partition and its
artifacts, the command says so, and the source no longer holds the serving alias back from a new model.
No daemon runs here: only the CLI, as a subprocess."""

import dagster as dg
import pytest

from rag_assets.settings import Settings
from rag_assets_tests.evaluation.helpers import model_collection, serving
from rag_assets_tests.helpers import milvus_rows, perturbed_copy_of_minilm, rag_assets, rows_in, write_sources


def local(name: str, folder) -> dict:
    return {"name": name, "kind": "local", "path": str(folder), "include": ["**/*.md"]}


@pytest.mark.slow
def test_ingest_removes_a_source_taken_out_of_the_file_and_a_model_swap_is_not_blocked_by_it(
    env, settings, workdir, docs_folder
):
    guide = workdir / "guide"
    guide.mkdir()
    (guide / "guide.md").write_text("# Guide\n\nThe guide has one page.\n\n## Usage\n\nUse it.\n")
    write_sources(settings.sources_file, [local("notes", docs_folder), local("guide", guide)])
    first = rag_assets("ingest", env=env)
    assert first.returncode == 0, first.stderr
    assert "removed source" not in first.stdout
    a = model_collection(settings)
    guide_rows, notes_rows = milvus_rows(settings, "guide"), milvus_rows(settings, "notes")
    assert guide_rows and notes_rows and serving(settings) == a
    assert len(list(settings.artifacts_dir.glob("*/guide.parquet"))) == 2  # the evaluation's values
    assert (settings.artifacts_dir / "sources" / "guide.sqlite").is_file()  # pages, chunks, vectors

    # The source leaves the file, and the next ingest is also a model swap.
    write_sources(settings.sources_file, [local("notes", docs_folder)])
    model_b = perturbed_copy_of_minilm(workdir / "model-b")
    env_b = {**env, "EMBEDDING_MODEL": str(model_b)}
    second = rag_assets("ingest", env=env_b)

    assert second.returncode == 0, second.stderr
    assert (
        f"removed source 'guide' (no longer in {settings.sources_file}): {len(guide_rows)} Milvus rows, "
        "4 files, its partition"  # its store, 2 parquet artefacts and the CLI's record of its last run
    ) in second.stdout
    settings_b = Settings.from_env(env_b)
    b = model_collection(settings_b)
    assert f"serving 'rag_chunks' -> {b} (moved from {a}: complete and evaluated)" in second.stdout
    assert serving(settings_b) == b
    assert rows_in(settings_b, a, "guide") == [] and rows_in(settings_b, b, "guide") == []
    assert len(rows_in(settings_b, a, "notes")) == len(notes_rows)  # kept for rollback, whole
    assert not list(settings.artifacts_dir.glob("*/guide.parquet"))
    assert not (settings.artifacts_dir / "sources" / "guide.sqlite").exists()
    with dg.DagsterInstance.get() as instance:
        assert instance.get_dynamic_partitions("sources") == ["notes"]
        [cleanup] = instance.get_runs(filters=dg.RunsFilter(job_name="source_cleanup_job"))
        assert cleanup.status == dg.DagsterRunStatus.SUCCESS
        assert cleanup.tags["rag_assets/removed_sources"] == "guide"
