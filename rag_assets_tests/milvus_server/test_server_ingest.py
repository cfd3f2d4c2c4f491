"""The CLI against a real Milvus server, `MILVUS_URI=http://127.0.0.1:PORT` in its environment as the README
shows it: a cold ingest, a warm one that writes nothing, a deleted page losing its rows while
`rag-assets search` runs beside the ingest (Milvus Lite admits one process per file; a server does
not), and a model swap moving the serving alias.

One server for the session (conftest.py) and one cold ingest for this module; each test reads the
state it starts from, so each holds on its own. Run them with `pytest -m milvus_server`.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from rag_assets.bench.scale import measure_command
from rag_assets.resources.milvus import MilvusStore
from rag_assets.settings import Settings
from rag_assets.testing.tiny_model import make_tiny_model
from rag_assets_tests.evaluation.helpers import collections, model_collection, serving
from rag_assets_tests.helpers import SAMPLE_DOCS, milvus_rows, perturbed_copy_of_minilm, write_sources

pytestmark = [pytest.mark.milvus_server, pytest.mark.slow]

QUESTION = "which variable points at the Milvus server?"
UNSET = ("DAGSTER_HOME", "MILVUS_TOKEN", "EMBEDDING_MODEL", "GITHUB_TOKEN")
COLUMNS = ("pages", "chunks", "embedded", "written", "deleted")
COMMAND_TIMEOUT_SECONDS = 600


@dataclass
class Deployment:
    """A data folder, a sources file with one local source (`notes`), and a collection of its own."""

    env: dict[str, str]
    docs: Path
    cold: subprocess.CompletedProcess | None = None

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rag_assets.cli", *args]

    def cli(self, *args: str, **overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args),
            env={**self.env, **overrides},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_SECONDS,
        )

    def rows(self) -> dict[str, dict]:
        return milvus_rows(self.settings, "notes")


def counts(stdout: str, source: str = "notes") -> dict[str, int]:
    """The summary table's numbers for one source."""
    [line] = [line for line in stdout.splitlines() if line.split()[:1] == [source]]
    return dict(zip(COLUMNS, map(int, line.split()[1:6])))


@pytest.fixture(scope="module")
def deployment(milvus_server_url, tmp_path_factory) -> Deployment:
    workdir = tmp_path_factory.mktemp("server-deployment")
    docs = Path(shutil.copytree(SAMPLE_DOCS, workdir / "docs"))
    write_sources(workdir / "sources.yaml", [{"name": "notes", "kind": "local", "path": str(docs)}])
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    env.update(
        MILVUS_URI=milvus_server_url,
        MILVUS_COLLECTION=f"rag_test_{uuid.uuid4().hex[:10]}",
        RAG_DATA_DIR=str(workdir / "data"),
        RAG_SOURCES_FILE=str(workdir / "sources.yaml"),
    )
    deployment = Deployment(env, docs)
    deployment.cold = deployment.cli("ingest")
    yield deployment
    _drop(deployment.settings)


def _drop(settings: Settings) -> None:
    """Leave nothing on the server: the alias, then every collection behind it."""
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        store.drop_family(settings.collection)
    finally:
        store.close()


def test_cold_ingest_writes_every_chunk_to_the_server(deployment, milvus_server_url):
    cold, settings = deployment.cold, deployment.settings
    assert cold.returncode == 0, cold.stderr

    written = counts(cold.stdout)
    assert written["chunks"] > 0 and written["written"] == written["embedded"] == written["chunks"]
    assert f"collection {settings.collection!r} at {milvus_server_url}" in cold.stdout
    a = model_collection(settings)
    assert f"serving {settings.collection!r} -> {a}" in cold.stdout and serving(settings) == a
    rows = deployment.rows()
    assert len(rows) == written["chunks"]
    assert {r["path"] for r in rows.values()} == {p.name for p in deployment.docs.glob("*.md")}


def test_warm_reingest_embeds_and_writes_nothing(deployment):
    before = deployment.rows()

    unchanged = deployment.cli("ingest")  # nothing changed: skipped before Dagster starts
    warm = deployment.cli("ingest", "--force")  # the whole graph runs, over the server

    assert unchanged.returncode == 0, unchanged.stderr
    assert "unchanged since the run of" in unchanged.stdout and "nothing changed" in unchanged.stdout
    assert warm.returncode == 0, warm.stderr
    numbers = counts(warm.stdout)
    assert numbers["chunks"] == len(before) > 0
    assert (numbers["embedded"], numbers["written"], numbers["deleted"]) == (0, 0, 0)
    assert deployment.rows() == before


def test_a_deleted_page_loses_its_rows_while_searches_run_beside_the_ingest(deployment):
    before = deployment.rows()
    page = deployment.docs / "searching.md"
    page_ids = {i for i, r in before.items() if r["path"] == page.name}
    assert page_ids
    page.unlink()

    ingest = subprocess.Popen(
        deployment.command("ingest"),
        env=deployment.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    searches, deadline = [], time.monotonic() + COMMAND_TIMEOUT_SECONDS
    try:
        while ingest.poll() is None and time.monotonic() < deadline:  # back to back until it ends
            started = time.time()
            search = deployment.cli("search", QUESTION, "--json", "-k", "3")
            searches.append((started, time.time(), search))
        stdout, stderr = ingest.communicate(timeout=COMMAND_TIMEOUT_SECONDS)
    finally:
        ingest.kill()

    assert ingest.returncode == 0, stderr
    assert counts(stdout)["deleted"] == len(page_ids) and counts(stdout)["written"] == 0
    assert set(deployment.rows()) == set(before) - page_ids
    assert searches and all(s.returncode == 0 and s.stdout.count('"score"') == 3 for _, _, s in searches), [
        s.stderr[-2000:] for _, _, s in searches
    ]
    write_start, write_end = write_step_window(deployment.settings)
    assert any(start < write_end and end > write_start for start, end, _ in searches), (
        f"no search overlapped the write step ({write_start:.1f}-{write_end:.1f}): "
        f"{[(round(s), round(e)) for s, e, _ in searches]}"
    )


def write_step_window(settings: Settings) -> tuple[float, float]:
    """When the latest ingest run's `milvus_collection` step started and succeeded (epoch seconds)."""
    instance = dg.DagsterInstance.from_config(str(settings.data_dir / "dagster_home"))
    try:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name="ingest_job"), limit=1)
        events = instance.all_logs(
            run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        )
        times = [e.timestamp for e in events if e.step_key == "milvus_collection"]
    finally:
        instance.dispose()
    return min(times), max(times)


def test_a_model_swap_moves_the_serving_alias_on_the_server(deployment, tmp_path):
    settings_a = deployment.settings
    a = model_collection(settings_a)
    assert serving(settings_a) == a
    model_b = str(perturbed_copy_of_minilm(tmp_path / "model-b"))

    swap = deployment.cli("ingest", EMBEDDING_MODEL=model_b)

    assert swap.returncode == 0, swap.stderr
    settings_b = Settings.from_env({**deployment.env, "EMBEDDING_MODEL": model_b})
    b = model_collection(settings_b)
    assert f"serving {settings_a.collection!r} -> {b} (moved from {a}: complete and evaluated)" in swap.stdout
    assert serving(settings_b) == b
    assert a in collections(settings_b)  # kept for rollback


def test_rag_test_milvus_url_points_the_tier_at_a_server_you_already_run(milvus_server_url, tmp_path):
    """docs/tests.md: `RAG_TEST_MILVUS_URL=http://host:19530` uses that server instead of starting one.
    This session's server stands in for yours; one could not start beside it (etcd's fixed port)."""
    test = f"{Path(__file__)}::test_cold_ingest_writes_every_chunk_to_the_server"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-n0", "-q", "-p", "no:cacheprovider"]
        + ["--basetemp", str(tmp_path / "inner"), "-o", "addopts="],
        env={**os.environ, "RAG_TEST_MILVUS_URL": milvus_server_url, "RAG_NO_SKIPS": "1"},
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr[-2000:]
    assert not list((tmp_path / "inner").glob("milvus-server*"))  # no server of its own


@pytest.mark.timeout(600)
def test_a_cold_runs_peak_memory_does_not_grow_with_the_source(milvus_server_url, tmp_path):
    """`rag-assets ingest` of N and of 4N pages (a tiny model made on the spot), each in its own
    process tree measured by psutil: the pipeline streams pages, chunks and vectors in batches, so
    the larger source's peak stays within a few MB of the smaller's. Against a Milvus server: Milvus
    Lite serves a collection from the process's own memory, which grows with the collection."""
    model = make_tiny_model(tmp_path / "tiny")
    page_text = "\n\n".join(
        f"Paragraph {n}: " + " ".join(f"term{(n * 7 + k) % 503}" for k in range(80)) for n in range(12)
    )

    def peak_mb(pages: int) -> float:
        root = tmp_path / f"docs{pages}"
        for number in range(pages):
            path = root / f"p{number:05d}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"Page {number}.\n\n{page_text}\n")
        source = {"name": "mem", "kind": "local", "path": str(root), "include": ["**/*.txt"]}
        env = {
            **{k: v for k, v in os.environ.items() if k not in UNSET},
            "MILVUS_URI": milvus_server_url,
            "MILVUS_COLLECTION": f"rag_mem_{uuid.uuid4().hex[:10]}",
            "RAG_DATA_DIR": str(tmp_path / f"data{pages}"),
            "RAG_SOURCES_FILE": str(write_sources(tmp_path / f"sources{pages}.yaml", [source])),
            "EMBEDDING_MODEL": str(model),
            "RAG_MIN_RECALL": "0",  # a random model finds nothing
            # bf16 weights on a CPU make torch's oneDNN cache a primitive per batch shape, a few MB
            # more for a source with more batches (bounded by the cache, docs/benchmarks.md): fp32
            # keeps what is measured the pipeline's own.
            "EMBEDDING_PRECISION": "fp32",
        }
        measured = measure_command(
            [sys.executable, "-m", "rag_assets.cli", "ingest"], env, tmp_path / f"ingest{pages}.log"
        )
        assert measured.returncode == 0, (tmp_path / f"ingest{pages}.log").read_text()[-3000:]
        return measured.peak_rss_mb

    small, large = peak_mb(300), peak_mb(1200)
    held_whole_mb = 900 * len(page_text) * 3 / 2**20  # 900 more pages, as text, chunks and a frame

    # Holding the 900 more pages would add well over held_whole_mb (18 MB of text, chunks and a frame:
    # pandas and arrow copies make it several times that). Measured here: 10 to 19 MB of growth,
    # mostly in the chunking workers, not yet explained (docs/storage.md, Memory); the bound leaves
    # room for it and still fails a pipeline that holds the source.
    assert large - small < max(30, held_whole_mb * 1.5), (small, large)
