"""The `rag-assets` command: user mistakes give a clear message and exit 2, never a traceback.

The command's logic is tested in this process (rag_assets_tests.helpers.cli); what a user's shell sees
(ingest, then search) runs it as a process, against one ingest shared by those tests.
"""

import json

import pytest

from rag_assets_tests.helpers import SAMPLE_DOCS, cli, rag_assets, user_env, write_sources


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> dict[str, str]:
    """`rag-assets ingest` of the sample docs, run once as a user runs it; the tests using it only search."""
    folder = tmp_path_factory.mktemp("cli")
    env = user_env(folder)
    write_sources(folder / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(SAMPLE_DOCS)}])
    ingest = rag_assets("ingest", env=env)
    assert ingest.returncode == 0, ingest.stderr
    assert "notes" in ingest.stdout and "chunks" in ingest.stdout
    return env


def test_malformed_sources_file_fails_clearly_and_writes_nothing(env, workdir):
    (workdir / "sources.yaml").write_text("sources:\n  - name: notes\n    kind: gitlab\n")

    result = cli("ingest")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        f"{workdir / 'sources.yaml'}: source #1 ('notes'): field 'kind': unknown kind 'gitlab'"
        in result.stderr
    )
    assert not (workdir / "data").exists()


def test_unknown_source_name_lists_the_configured_ones(env, workdir, docs_folder):
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs_folder)}])

    result = cli("ingest", "--source", "nope")

    assert result.returncode == 2 and "no source named 'nope'" in result.stderr and "notes" in result.stderr


@pytest.mark.slow
def test_ingest_then_search_finds_the_section_that_answers(ingested):
    result = rag_assets(
        "search", "which variable points at the Milvus server?", "-k", "3", "--json", env=ingested
    )

    hits = json.loads(result.stdout)
    assert len(hits) == 3 and set(hits[0]) == {"score", "source", "path", "heading", "text", "url"}
    assert hits[0]["path"] == "configuration.md" and "MILVUS_URI" in hits[0]["text"]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]


@pytest.mark.slow
def test_queries_file_answers_each_line_in_order(ingested, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text("how do I add a source?\nwhat does the score mean?\n")

    result = rag_assets("search", "--queries-file", str(queries), "-k", "2", env=ingested)

    answers = json.loads(result.stdout)
    assert [len(hits) for hits in answers] == [2, 2]
    assert answers[0][0]["path"] == "sources.md" and answers[1][0]["heading"] == "Searching › Scores"


def test_search_before_any_ingest_says_what_to_do(env):
    result = cli("search", "anything")
    assert result.returncode == 2 and "run `rag-assets ingest` first" in result.stderr
