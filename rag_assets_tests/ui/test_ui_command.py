"""`rag-assets ui`: the UI on the instance the CLI uses, in one command, on a fresh clone, before and after
an ingest, without a warning; it stops cleanly on SIGINT and on SIGTERM.

The "clone" is a temp folder holding the repository's dagster.yaml and workspace.yaml and a sources
file; nothing else is set (no DAGSTER_HOME, no RAG_DATA_DIR): the README's situation.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rag_assets_tests.helpers import write_sources
from rag_assets_tests.ui.dagster_dev import REPO, DagsterDev, free_port

ASSETS = {"raw_pages", "chunks", "embeddings", "milvus_collection", "serving_collection"}
STOP_DEADLINE_SECONDS = 45
UNSET = (
    "DAGSTER_HOME",
    "RAG_DATA_DIR",
    "RAG_SOURCES_FILE",
    "MILVUS_URI",
    "MILVUS_COLLECTION",
    "EMBEDDING_MODEL",
)


def rag_assets_ui(clone: Path, env: dict, logs: Path, name: str, *flags: str) -> DagsterDev:
    """`rag-assets ui --port PORT [FLAGS]` in the clone; with `--host ADDRESS`, the UI is read there."""
    port = free_port()
    ui = DagsterDev(
        home=clone / ".rag_assets" / "dagster_home",
        env=env,
        log_path=logs / f"{name}.log",
        stderr_path=logs / f"{name}.err",
        port=port,
        command=[sys.executable, "-m", "rag_assets.cli", "ui", "--port", str(port), *flags],
        cwd=clone,
    )
    if "--host" in flags:
        ui.url = f"http://{flags[flags.index('--host') + 1]}:{port}"
    return ui


def serve_then_stop(ui: DagsterDev, sig: int) -> tuple[str, str, list[dict]]:
    """Start, wait for the assets, read the runs, stop with `sig`: (stdout, stderr, runs)."""
    ui.start()
    try:
        ui.wait_ready(ASSETS)
        runs = ui.runs()
        left = ui.signal_and_wait(sig, STOP_DEADLINE_SECONDS)
        assert not left, f"still running {STOP_DEADLINE_SECONDS}s after {sig.name}: {left}\n{ui.log_tail()}"
    finally:
        assert ui.stop() == []  # nothing of it survived outside its process group
    return ui.log_path.read_text(), ui.stderr_path.read_text(), runs


def assert_clean(stdout: str, stderr: str) -> None:
    assert "warning" not in (stdout + stderr).lower(), stdout + stderr
    assert stderr.strip() == "", stderr
    assert "Dagster services shut down." in stdout


@pytest.mark.slow
def test_rag_assets_ui_serves_the_cli_instance_before_and_after_an_ingest_and_stops_cleanly(tmp_path):
    clone, logs = tmp_path / "clone", tmp_path / "logs"
    clone.mkdir()
    logs.mkdir()
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copy(REPO / name, clone / name)
    write_sources(clone / "sources.yaml", [])
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    home = clone / ".rag_assets" / "dagster_home"

    # Before any ingest: the instance folder does not exist; the command creates it.
    stdout, stderr, runs = serve_then_stop(rag_assets_ui(clone, env, logs, "before"), signal.SIGINT)

    assert_clean(stdout, stderr)
    assert "rag-assets: the UI at http://127.0.0.1:" in stdout and str(home) in stdout
    assert (home / "dagster.yaml").is_file() and runs == []

    # An ingest with the CLI, then the UI again: it shows the CLI's run, on the same instance.
    docs = clone / "docs"
    docs.mkdir()
    (docs / "page.md").write_text("# Page\n\nOne page to ingest.\n")
    write_sources(clone / "sources.yaml", [{"name": "docs", "kind": "local", "path": "./docs"}])
    ingest = subprocess.run(
        [sys.executable, "-m", "rag_assets.cli", "ingest"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr

    # --host as docs/cli.md shows it: another loopback address, where the UI then answers.
    after = rag_assets_ui(clone, env, logs, "after", "--host", "127.0.0.2")
    stdout, stderr, runs = serve_then_stop(after, signal.SIGTERM)

    assert_clean(stdout, stderr)
    assert f"rag-assets: the UI at http://127.0.0.2:{after.port}" in stdout
    [run] = runs
    assert run["status"] == "SUCCESS" and run["tags"]["rag_assets/pid"]  # executed by `rag-assets ingest`
