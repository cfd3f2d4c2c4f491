"""Scenarios 1-4: the source misbehaves (loopback GitHub server with fault injection, retries of
milliseconds). Each test ends by comparing the collection with the chunker's exact ids and hashes."""

import pytest

from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets_tests.helpers import write_sources
from rag_assets_tests.reliability.helpers import collection_rows, expected_rows

REPO = "acme/frob"
OLD = {
    "docs/index.md": "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun the installer twice.\n",
    "docs/usage.md": "# Usage\n\nCall frob() with a widget.\n\n## Options\n\nSet `speed` to go faster.\n",
    "docs/old.md": "# Old\n\nThis page is removed by the next commit.\n",
    "README.txt": "not selected",
}
NEW = {
    "docs/index.md": OLD["docs/index.md"].replace("twice", "three times"),
    "docs/usage.md": OLD["docs/usage.md"],
    "docs/new.md": "# New\n\nAdded by the next commit.\n\n## Details\n\nMore words about it.\n",
    "README.txt": "not selected",
}


@pytest.fixture
def source(settings, github) -> str:
    github.add_repo(REPO, OLD)
    write_sources(
        settings.sources_file,
        [
            {
                "name": "frob",
                "kind": "github",
                "repo": REPO,
                "ref": "main",
                "include": ["docs/**/*.md"],
                "api_url": github.url,
            },
        ],
    )
    return "frob"


def ingested_then_pushed(settings, instance, github, source: str) -> None:
    """OLD is in the collection, exactly; NEW is the branch's new head."""
    run_ingest(settings, instance, [source])
    assert collection_rows(settings, source) == expected_rows(source, OLD)
    github.push(REPO, NEW)


@pytest.mark.slow
def test_5xx_beyond_the_retry_budget_fails_keeping_old_rows_and_after_recovery_the_rerun_is_exact(
    settings, instance, github, source, fast_retries
):
    ingested_then_pushed(settings, instance, github, source)
    github.fail_next("/tarball/", [503] * fast_retries)

    with pytest.raises(
        IngestFailed, match=rf"source 'frob'.*gave up after {fast_retries} tries; last answer: HTTP 503"
    ):
        run_ingest(settings, instance, [source])
    assert collection_rows(settings, source) == expected_rows(source, OLD)

    github.fail_next("/commits/", [502, 500])  # transient again, but within the budget this time
    run_ingest(settings, instance, [source])

    assert [r.status for r in github.requests if "/commits/" in r.path][-3:] == [502, 500, 200]
    assert collection_rows(settings, source) == expected_rows(source, NEW)


@pytest.mark.slow
def test_429_with_retry_after_is_waited_out_and_the_run_is_exact(settings, instance, github, source):
    github.fail_next("/tarball/", [(429, {"retry-after": "1"})])

    run_ingest(settings, instance, [source])

    tarball = [r for r in github.requests if "/tarball/" in r.path]
    assert [r.status for r in tarball] == [429, 302]
    assert tarball[1].time - tarball[0].time >= 0.95
    assert collection_rows(settings, source) == expected_rows(source, OLD)


@pytest.mark.slow
def test_connection_reset_mid_tarball_restarts_the_download_and_the_run_is_exact(
    settings, instance, github, source
):
    ingested_then_pushed(settings, instance, github, source)
    github.reset_connection_mid_tarball(times=2)

    run_ingest(settings, instance, [source])

    assert github.count("/_codeload/") == 1 + 3  # OLD once; NEW reset twice, then whole
    assert collection_rows(settings, source) == expected_rows(source, NEW)


@pytest.mark.slow
def test_corrupt_tarball_fails_clearly_keeps_old_rows_and_the_rerun_after_the_fix_is_exact(
    settings, instance, github, source
):
    ingested_then_pushed(settings, instance, github, source)

    for mode in ("truncated", "garbage"):  # half an archive; bytes that are not gzip
        github.serve_corrupt_tarball(REPO, mode)
        with pytest.raises(IngestFailed, match=r"step raw_pages failed: .*archive is truncated or corrupt"):
            run_ingest(settings, instance, [source])
        assert collection_rows(settings, source) == expected_rows(source, OLD), mode

    github.serve_corrupt_tarball(REPO, None)
    run_ingest(settings, instance, [source])

    assert collection_rows(settings, source) == expected_rows(source, NEW)
