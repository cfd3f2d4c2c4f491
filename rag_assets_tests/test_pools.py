"""Pool `gpu` = 1: embedding steps of runs launched at once in separate processes never overlap."""

import os
import subprocess
import sys

import dagster as dg
import pytest

from rag_assets.runtime.instance import ensure_pools
from rag_assets_tests.helpers import milvus_rows, step_window, write_distinct_docs, write_sources

# Ingest processes started together, each importing dagster and torch: on 2 cores they wait for each
# other; their own deadline is 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


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
