"""A source that did not change since its last successful `rag-assets ingest` is skipped: no run,
no write, no torch; any change to what its rows depend on brings the full run back."""

import os

import pytest

from rag_assets import change_detection as changes
from rag_assets.settings import Settings
from rag_assets.sources import load_sources
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import cli, milvus_rows, rag_assets, write_sources


def imported(stderr: str) -> set[str]:
    """Top-level module names in a `python -X importtime` report."""
    return {
        line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")
    }


def tree_state(folder) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_second_ingest_of_an_unchanged_folder_skips_it_then_an_edit_is_picked_up(env, workdir, docs_folder):
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    first = cli("ingest")  # in this process: only the second and third commands are under test
    assert first.returncode == 0, first.stderr
    data_before = tree_state(workdir / "data") | tree_state(workdir / "dagster_home")

    second = rag_assets("ingest", env=env, python_flags=("-X", "importtime"))

    assert second.returncode == 0, second.stderr
    assert "notes: unchanged since the run of" in second.stdout and "skipped" in second.stdout
    assert not {"torch", "dagster", "pymilvus", "pandas"} & imported(second.stderr)
    assert tree_state(workdir / "data") | tree_state(workdir / "dagster_home") == data_before

    # An edit that keeps the file's size and modification time is still an edit.
    page = docs_folder / "configuration.md"
    stat = page.stat()
    text = page.read_text()
    page.write_text(text.replace("MILVUS_URI", "MILVUS_URL", 1))
    os.utime(page, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    third = cli("ingest")

    assert third.returncode == 0, third.stderr
    assert "unchanged" not in third.stdout
    row = next(line.split() for line in third.stdout.splitlines() if line.startswith("notes"))
    assert int(row[3]) >= 1  # embedded
    rows = milvus_rows(Settings.from_env(), "notes")
    assert any("MILVUS_URL" in r["text"] for r in rows.values())


@pytest.mark.slow
def test_a_source_taken_out_of_the_file_is_removed_even_when_the_others_are_unchanged(
    env, workdir, docs_folder
):
    guide = workdir / "guide"
    guide.mkdir()
    (guide / "guide.md").write_text("# Guide\n\nHow to frobnicate a widget in three steps.\n")
    notes = {"name": "notes", "kind": "local", "path": str(docs_folder)}
    write_sources(workdir / "sources.yaml", [notes, {"name": "guide", "kind": "local", "path": str(guide)}])
    assert cli("ingest").returncode == 0
    assert milvus_rows(Settings.from_env(), "guide")
    notes_rows = milvus_rows(Settings.from_env(), "notes")

    write_sources(workdir / "sources.yaml", [notes])
    removal = rag_assets("ingest", env=env, python_flags=("-X", "importtime"))

    assert removal.returncode == 0, removal.stderr
    assert "notes: unchanged since the run of" in removal.stdout
    assert "removed source 'guide'" in removal.stdout
    assert "torch" not in imported(removal.stderr)
    assert milvus_rows(Settings.from_env(), "guide") == {}
    assert milvus_rows(Settings.from_env(), "notes") == notes_rows
    again = cli("ingest")
    assert "removed" not in again.stdout and "nothing changed" in again.stdout


@pytest.mark.slow
def test_forced_run_of_an_unchanged_source_runs_dagster_and_writes_nothing(env, workdir, docs_folder):
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    assert cli("ingest").returncode == 0

    forced = rag_assets("ingest", "--force", env=env, python_flags=("-X", "importtime"))

    assert forced.returncode == 0, forced.stderr
    row = next(line.split() for line in forced.stdout.splitlines() if line.startswith("notes"))
    assert row[3:6] == ["0", "0", "0"]  # embedded, written, deleted
    # --force goes through Dagster; its embedding step asks the device (auto precision), so it may load
    # torch: only the plain no-op is promised to stay clear of it.
    assert "dagster" in imported(forced.stderr)


def test_folder_digest_follows_content_and_selection_not_mtimes(tmp_path):
    (tmp_path / "a.md").write_text("alpha")
    (tmp_path / "b.bin").write_text("ignored")
    selected = lambda path: path.endswith(".md")  # noqa: E731
    before = changes.folder_digest(tmp_path, selected)

    (tmp_path / "b.bin").write_text("still ignored")
    os.utime(tmp_path / "a.md", (1, 1))
    assert changes.folder_digest(tmp_path, selected) == before

    (tmp_path / "a.md").write_text("alphA")
    assert changes.folder_digest(tmp_path, selected) != before
    (tmp_path / "a.md").write_text("alpha")
    (tmp_path / "c.md").write_text("")
    assert changes.folder_digest(tmp_path, selected) != before


def test_a_record_skips_only_its_own_fingerprint_and_forget_erases_it(tmp_path):
    changes.record(tmp_path, "notes", "f1", {"pages": 4, "chunks": 9})

    skipped, run = changes.split_unchanged(
        tmp_path, ["notes", "other", "site"], {"notes": "f1", "other": "f1"}
    )
    assert [s.source for s in skipped] == ["notes"] and run == ["other", "site"]
    assert "(4 pages, 9 chunks): skipped" in skipped[0].describe()
    assert changes.split_unchanged(tmp_path, ["notes"], {"notes": "f2"})[1] == ["notes"]
    assert changes.split_unchanged(tmp_path, ["notes"], {"notes": None})[1] == ["notes"]  # a website

    assert changes.forget(tmp_path, "notes") and not changes.forget(tmp_path, "notes")
    assert changes.split_unchanged(tmp_path, ["notes"], {"notes": "f1"})[1] == ["notes"]


def test_fingerprints_change_with_the_commit_the_definition_and_the_settings(env, workdir, docs_folder):
    with FakeGitHub() as github:
        github.add_repo("acme/docs", {"docs/a.md": "# A\n\nalpha\n"})
        entries = [
            {"name": "gh", "kind": "github", "repo": "acme/docs", "ref": "main", "api_url": github.url},
            {"name": "notes", "kind": "local", "path": str(docs_folder)},
            {"name": "site", "kind": "web", "start_url": "http://127.0.0.1:9/docs/"},
        ]
        write_sources(workdir / "sources.yaml", entries)
        settings = Settings.from_env()
        sources = load_sources(settings.sources_file)
        first = changes.current_fingerprints(settings, sources)
        assert first == changes.current_fingerprints(settings, sources)
        assert first["site"] is None and first["gh"] and first["notes"]

        github.push("acme/docs", {"docs/a.md": "# A\n\nalpha, edited\n"})
        pushed = changes.current_fingerprints(settings, sources)
        assert pushed["gh"] != first["gh"] and pushed["notes"] == first["notes"]

    write_sources(workdir / "sources.yaml", [{**entries[1], "exclude": ["searching.md"]}])
    narrowed = changes.current_fingerprints(settings, load_sources(settings.sources_file))
    assert narrowed["notes"] != first["notes"]
    other_model_settings = Settings.from_env({**env, "RAG_EVAL_K": "3"})
    assert changes.current_fingerprints(other_model_settings, load_sources(settings.sources_file)) != narrowed
    unreachable = {**entries[0], "api_url": "http://127.0.0.1:9"}
    write_sources(workdir / "sources.yaml", [unreachable])
    assert changes.current_fingerprints(settings, load_sources(settings.sources_file)) == {"gh": None}


@pytest.mark.slow
def test_a_run_started_outside_the_cli_erases_the_record_so_the_next_command_runs(env, workdir, docs_folder):
    from rag_assets.runtime.ingest import run_ingest
    from rag_assets.runtime.instance import cli_instance

    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])
    assert cli("ingest").returncode == 0
    settings = Settings.from_env()
    assert changes.recorded(settings.artifacts_dir, "notes") is not None

    instance = cli_instance(settings)  # as the UI or a sensor would: a run, not the command
    try:
        run_ingest(settings, instance, ["notes"])
    finally:
        instance.dispose()

    assert changes.recorded(settings.artifacts_dir, "notes") is None
    after = cli("ingest")
    assert after.returncode == 0 and "unchanged" not in after.stdout and "notes" in after.stdout
