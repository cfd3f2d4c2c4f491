"""`rag-assets eval-chunkers` on a tiny corpus: every arm judged on the same queries, by the same text."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from rag_assets.bench.chunkers import ArmChunks, fixed_arm, relevant_chunks, section_bodies, title_queries
from rag_assets.core.chunking import PageToChunk
from rag_assets.core.evaluation import Span
from rag_assets_tests.helpers import SAMPLE_DOCS

PAGE = PageToChunk(
    "guide.md",
    "# Guide\n\nIntro text here.\n\n## Install\n\nRun pip install.\n\n## Use\n\nCall it.\n",
    "markdown",
)


def test_sections_are_located_by_their_body_and_titles_become_queries():
    bodies = section_bodies(PAGE)

    assert [(t, PAGE.text[s.start : s.end]) for t, s in bodies] == [
        ("Guide", "Intro text here."),
        ("Install", "Run pip install."),
        ("Use", "Call it."),
    ]
    titles, sections = title_queries([PAGE, PAGE])
    assert titles == ["Guide", "Install", "Use"] and all(len(s) == 2 for s in sections)


def test_a_window_over_several_sections_answers_each_of_them_and_a_breadcrumb_alone_answers_nothing():
    window = fixed_arm([PAGE], chars=1000, overlap=0)
    assert len(window.inputs) == 1
    assert all(relevant_chunks(window, s) == {0} for s in title_queries([PAGE])[1])
    heading_only = ArmChunks("x", [0], [Span(0, 7)], ["# Guide"])  # the title line, no body
    assert relevant_chunks(heading_only, title_queries([PAGE])[1][0]) == set()


@pytest.mark.slow
def test_the_command_reports_recall_and_mrr_per_arm_on_a_seeded_sample(workdir):
    corpus = workdir / "docs.tar.gz"
    with tarfile.open(corpus, "w:gz") as archive:
        archive.add(SAMPLE_DOCS, arcname="top/docs")
    out = workdir / "report.json"

    command = [
        sys.executable,
        "-m",
        "rag_assets.cli",
        "eval-chunkers",
        "--corpus",
        str(corpus),
        "--include",
        "docs/**/*.md",
    ]
    result = subprocess.run(
        [*command, "--sample", "3", "--seed", "1", "--chars", "400", "--overlap", "80", "--out", str(out)],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["pages"] == 3 and report["queries"] > 5
    assert set(report["arms"]) == {"project", "project_text_only", "fixed_400"}
    for arm in report["arms"].values():
        assert (
            arm["queries"] == report["queries"]
            and arm["queries_without_relevant"] == 0
            and arm["unlocated_chunks"] == 0
        )
        assert 0 <= arm["recall_at_1"] <= arm["recall_at_5"] <= arm["recall_at_10"] <= 1
    assert "fixed_400" in result.stdout and "recall_at_5" in result.stdout
