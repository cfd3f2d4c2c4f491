"""What the reliability tests compare and how they drive runs: expected rows from the chunker, the
collection's rows as stored (duplicates included), and `rag-assets ingest` as a process to kill."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg

from rag_assets.core.chunking import Chunker
from rag_assets.core.model_files import load_tokenizer, max_seq_length, resolve_model_dir
from rag_assets.core.sections import detect_format
from rag_assets.resources.milvus import MilvusStore
from rag_assets.settings import Settings

STEP_WAIT_SECONDS = 180
REPO = Path(__file__).parents[2]
DOCKER_INSTANCE = REPO / "docker" / "dagster.yaml"


def folder_pages(folder: Path) -> dict[str, str]:
    """Every Markdown file of a folder, by path relative to it."""
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*.md"))}


def expected_rows(source: str, pages: dict[str, str]) -> dict[str, str]:
    """What the chunker makes of these Markdown pages: chunk id -> content hash."""
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    chunker = Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))
    return {
        chunk.id: chunk.content_hash
        for path, text in sorted(pages.items())
        if path.endswith(".md")
        for chunk in chunker.split_page(source, path, text, detect_format(path, text))
    }


def collection_rows(settings: Settings, source: str) -> dict[str, str]:
    """The source's rows in Milvus, id -> content hash; fails on a duplicated id."""
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        rows = store.source_rows(source, ("id", "content_hash"))
    finally:
        store.close()
    duplicated = [i for i, n in Counter(r["id"] for r in rows).items() if n > 1]
    assert not duplicated, f"ids stored more than once: {duplicated}"
    return {r["id"]: r["content_hash"] for r in rows}


def start_ingest(env: dict[str, str], *sources: str) -> subprocess.Popen:
    """`rag-assets ingest --source ...` in its own process group (so its children can be cleaned up)."""
    arguments = [a for s in sources for a in ("--source", s)]
    return subprocess.Popen(
        [sys.executable, "-m", "rag_assets.cli", "ingest", *arguments],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Wait for an ingest process; returns its exit code and stderr."""
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def stop_group(process: subprocess.Popen) -> None:
    """Kill what is left of a process group this test started (e.g. a Milvus Lite server it spawned)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(timeout=10)


def wait_for_step_start(
    instance: dg.DagsterInstance, process: subprocess.Popen, step_key: str
) -> dg.DagsterRun:
    """The run of `process` once `step_key` has started in it (read from the instance's event log)."""
    deadline = time.monotonic() + STEP_WAIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"ingest exited ({process.returncode}) before {step_key} started: {process.stderr.read()}"
            )
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"rag_assets/pid": str(process.pid)})):
            events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)
            if any(e.step_key == step_key for e in events):
                return run
        time.sleep(0.05)
    raise AssertionError(f"{step_key} did not start within {STEP_WAIT_SECONDS} s")


def slot_holders(instance: dg.DagsterInstance, pool: str) -> set[str]:
    """Run ids holding a slot of `pool`."""
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(pool).claimed_slots}
