"""Pool `gpu` = 1: embedding steps of runs launched at once in separate processes never overlap."""

import os
import random
import subprocess
import sys
from pathlib import Path

import dagster as dg

from rag_assets.instance import ensure_pools
from rag_assets_tests.conftest import milvus_rows, write_sources

WORDS = [
    "model",
    "vector",
    "chunk",
    "source",
    "page",
    "heading",
    "index",
    "search",
    "query",
    "batch",
    "token",
    "commit",
]


def write_distinct_docs(folder: Path, name: str, pages: int = 6, sections: int = 12) -> None:
    """Pages of text no other source shares, so nothing comes from the embedding cache."""
    rng = random.Random(name)
    folder.mkdir(parents=True)
    for page in range(pages):
        body = [f"# {name} page {page}\n"]
        for section in range(sections):
            sentence = " ".join(rng.choice(WORDS) for _ in range(120))
            body.append(f"## Section {section}\n\n{name} {page}.{section}: {sentence}.\n")
        (folder / f"page{page}.md").write_text("\n".join(body))


def step_window(instance: dg.DagsterInstance, run_id: str, step_key: str) -> tuple[float, float]:
    events = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    )
    times = {e.dagster_event.event_type: e.timestamp for e in events if e.step_key == step_key}
    return times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]


def test_embedding_steps_of_concurrent_runs_never_overlap(settings, env, workdir):
    for name in ("alpha", "beta"):
        write_distinct_docs(workdir / name, name)
    write_sources(
        settings.sources_file,
        [
            {"name": "alpha", "kind": "local", "path": str(workdir / "alpha")},
            {"name": "beta", "kind": "local", "path": str(workdir / "beta")},
        ],
    )
    with dg.DagsterInstance.get() as instance:
        ensure_pools(
            instance
        )  # create the schema and pools once, as an operator would before starting workers
    command = [sys.executable, "-m", "rag_assets.cli", "ingest", "--source"]
    processes = [
        subprocess.Popen([*command, name], env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
        for name in ("alpha", "beta")
    ]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()

    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert len(runs) == 2 and all(r.is_success for r in runs)
        (start_a, end_a), (start_b, end_b) = sorted(
            step_window(instance, r.run_id, "embeddings") for r in runs
        )
        (write_a, _), (write_b, _) = sorted(
            step_window(instance, r.run_id, "milvus_collection") for r in runs
        )
    assert end_a <= start_b, "the second embedding step started before the first one finished"
    assert write_a != write_b
    assert (
        len(milvus_rows(settings, "alpha")) == len(milvus_rows(settings, "beta")) == 6 * 12
    )  # a page title with no text under it makes no chunk
