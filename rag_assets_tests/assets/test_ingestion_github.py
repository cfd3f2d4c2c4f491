"""End to end on a GitHub source served by a loopback server that speaks the REST API."""

import pytest

from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import latest_metadata, milvus_rows, write_sources

FILES = {
    "docs/index.txt": (
        "=====\nIndex\n=====\n\nWelcome to the documentation of the frobnicator.\n\n"
        "Install\n=======\n\nRun the installer twice.\n"
    ),
    "docs/topics/models.txt": (
        "Models\n======\n\nA model is the single source of truth about your data.\n\n"
        "Fields\n------\n\nEach field is a class attribute.\n"
    ),
    "docs/releases/1.0.txt": "1.0 notes\n=========\n\nExcluded by the glob.\n",
    "docs/logo.txt": b"\x89PNG\r\n\x1a\n\x00\x00binary",
    "README.md": "# Not selected\n",
}


def github_source(github: FakeGitHub, **extra) -> dict:
    return {
        "name": "frob",
        "kind": "github",
        "repo": "acme/frob",
        "ref": "main",
        "include": ["docs/**/*.txt"],
        "exclude": ["docs/releases/**"],
        "api_url": github.url,
        **extra,
    }


@pytest.mark.slow
def test_github_source_costs_one_ref_lookup_and_one_tarball(settings, instance, github):
    sha = github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])

    [summary] = run_ingest(settings, instance, ["frob"])

    api_calls = [r.path for r in github.requests if not r.path.startswith("/_codeload")]
    assert api_calls == ["/repos/acme/frob/commits/main", f"/repos/acme/frob/tarball/{sha}"]
    assert github.count("/_codeload/") == 1
    rows = milvus_rows(settings, "frob").values()
    assert {r["path"] for r in rows} == {"docs/index.txt", "docs/topics/models.txt"}
    assert {r["heading"] for r in rows} == {"Index", "Index › Install", "Models", "Models › Fields"}
    assert {r["commit"] for r in rows} == {sha}
    assert f"{github.url}/acme/frob/blob/{sha}/docs/topics/models.txt" in {r["url"] for r in rows}
    assert summary.counts["pages"] == 2


def test_binary_files_are_skipped_and_counted(settings, instance, github):
    github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])
    run_ingest(settings, instance, ["frob"])

    metadata = latest_metadata(instance, "raw_pages", "frob")
    assert metadata["binary_skipped"] == 1 and metadata["pages"] == 2


@pytest.mark.slow
def test_new_commit_replaces_the_edited_section_only(settings, instance, github):
    github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])
    run_ingest(settings, instance, ["frob"])
    before = milvus_rows(settings, "frob")

    edited = dict(
        FILES,
        **{
            "docs/topics/models.txt": FILES["docs/topics/models.txt"].replace("class attribute", "descriptor")
        },
    )
    github.push("acme/frob", edited)
    [summary] = run_ingest(settings, instance, ["frob"])

    after = milvus_rows(settings, "frob")
    assert summary.counts["written"] == 1 and summary.counts["deleted"] == 1
    [new] = [r for i, r in after.items() if i not in before]
    assert new["heading"] == "Models › Fields" and "descriptor" in new["text"]
    assert len(set(before) & set(after)) == len(before) - 1


def test_unknown_repository_fails_the_run_and_keeps_stored_rows(settings, instance, github):
    github.add_repo("acme/frob", FILES)
    write_sources(settings.sources_file, [github_source(github)])
    run_ingest(settings, instance, ["frob"])
    before = milvus_rows(settings, "frob")

    write_sources(settings.sources_file, [github_source(github, repo="acme/gone")])
    with pytest.raises(IngestFailed, match=r"acme/gone@main: HTTP 404"):
        run_ingest(settings, instance, ["frob"])

    assert milvus_rows(settings, "frob") == before
