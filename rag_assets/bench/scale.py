"""The scale benchmark: what `rag-assets ingest` costs as a source grows, as a user runs it.

For each size N, a deterministic synthetic local source of N Markdown pages is written, then
`rag-assets ingest` runs in its own process three times: cold (an empty data directory), no-op
(nothing changed) and update (UPDATE_EDITED pages edited, one deleted, one added). Each run's wall
time and the peak RSS of its process tree (the command, its chunking workers) are measured by
polling psutil. The model is a tiny one made on the spot (rag_assets/testing/tiny_model.py) unless
another is named, so the figures are the pipeline's own, not the model's.
"""

import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import yaml

SOURCE = "scale"
UPDATE_EDITED = 5
SECTIONS_PER_PAGE = 4
WORDS_PER_SECTION = 120
POLL_SECONDS = 0.1
# The user's variables that would send the bench's runs to their own instance, data or collection.
BENCH_OWNS = ("DAGSTER_HOME", "RAG_DATA_DIR", "RAG_SOURCES_FILE", "MILVUS_COLLECTION", "EMBEDDING_MODEL")
WORDS = (
    "asset",
    "partition",
    "source",
    "chunk",
    "vector",
    "embedding",
    "model",
    "collection",
    "milvus",
    "dagster",
    "sensor",
    "schedule",
    "page",
    "heading",
    "section",
    "text",
    "token",
    "batch",
    "worker",
    "process",
    "store",
    "record",
    "change",
    "update",
    "delete",
    "write",
    "query",
    "search",
    "recall",
    "index",
    "alias",
    "serving",
    "pool",
    "gpu",
    "cpu",
    "memory",
    "disk",
    "cache",
    "sqlite",
    "parquet",
    "run",
    "step",
)


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    returncode: int


@dataclass
class ScaleRow:
    pages: int
    chunks: int
    cold: Measured
    noop: Measured
    update: Measured


def page_text(number: int, edit: int = 0) -> str:
    """Page `number`'s Markdown: a title and SECTIONS_PER_PAGE sections of seeded words."""
    rng = random.Random(number)
    parts = [f"# Page {number}\n"]
    for section in range(SECTIONS_PER_PAGE):
        words = " ".join(rng.choice(WORDS) for _ in range(WORDS_PER_SECTION))
        parts.append(f"## Section {number}.{section}\n\n{words.capitalize()}.\n")
    if edit:
        parts.append(f"## Edit {edit}\n\nThis page was edited ({edit}) by the scale benchmark.\n")
    return "\n".join(parts)


def page_path(root: Path, number: int) -> Path:
    return root / f"part{number // 1000:03d}" / f"page{number:06d}.md"


def write_corpus(root: Path, pages: int) -> None:
    """The N pages (written once: an existing corpus of that size is kept)."""
    marker = root / ".pages"
    if marker.exists() and marker.read_text() == str(pages):
        return
    for number in range(pages):
        path = page_path(root, number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page_text(number))
    marker.write_text(str(pages))


def update_corpus(root: Path, pages: int) -> dict[str, int]:
    """Edit UPDATE_EDITED pages spread over the source, delete one, add one."""
    step = max(1, pages // (UPDATE_EDITED + 2))
    for k in range(UPDATE_EDITED):
        number = k * step
        page_path(root, number).write_text(page_text(number, edit=1))
    page_path(root, pages - 1).unlink()
    added = page_path(root, pages + 1)
    added.parent.mkdir(parents=True, exist_ok=True)
    added.write_text(page_text(pages + 1))
    (root / ".pages").unlink()  # no longer the pristine corpus of N pages
    return {"edited": UPDATE_EDITED, "deleted": 1, "added": 1}


def measure_command(command: list[str], env: dict, log_file: Path) -> Measured:
    """Run a command to its end; its wall time and the peak RSS of its process tree."""
    started = time.perf_counter()
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak = [0]
        done = threading.Event()

        def poll() -> None:
            root = psutil.Process(process.pid)
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    peak[0] = max(peak[0], sum(_rss(p) for p in tree))
                except psutil.NoSuchProcess:
                    return
                time.sleep(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        returncode = process.wait()
        done.set()
        poller.join()
    return Measured(round(time.perf_counter() - started, 2), round(peak[0] / 2**20, 1), returncode)


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def run_size(pages: int, model: str, workdir: Path, log) -> ScaleRow:
    root, data = workdir / f"corpus-{pages}", workdir / f"data-{pages}"
    log(f"scale: writing {pages} pages")
    write_corpus(root, pages)
    sources = workdir / f"sources-{pages}.yaml"
    sources.write_text(yaml.safe_dump({"sources": [{"name": SOURCE, "kind": "local", "path": str(root)}]}))
    env = {
        **{k: v for k, v in os.environ.items() if k not in BENCH_OWNS},
        "RAG_DATA_DIR": str(data),
        "RAG_SOURCES_FILE": str(sources),
        "EMBEDDING_MODEL": model,
        "RAG_MIN_RECALL": "0",  # the tiny model's random vectors find nothing: evaluation only measures
    }
    command = [sys.executable, "-m", "rag_assets.cli", "ingest"]
    log_file = workdir / f"ingest-{pages}.log"
    runs = {}
    for stage in ("cold", "noop", "update"):
        if stage == "update":
            update_corpus(root, pages)
        log(f"scale: {pages} pages, {stage}")
        runs[stage] = measure_command(command, env, log_file)
        if runs[stage].returncode:
            raise RuntimeError(f"scale: {stage} ingest of {pages} pages failed; see {log_file}")
    return ScaleRow(pages, _chunks(data), runs["cold"], runs["noop"], runs["update"])


def _chunks(data: Path) -> int:
    from rag_assets.core.artifacts import ArtifactStore

    store, _ = ArtifactStore(data / "artifacts").open_source(SOURCE)
    with store:
        return store.chunk_count()


def run_scale(sizes: list[int], model: str | None, workdir: Path, log=print) -> list[ScaleRow]:
    if model is None:
        from rag_assets.testing.tiny_model import make_tiny_model

        model = str(make_tiny_model(workdir / "tiny-model"))
    return [run_size(pages, model, workdir, log) for pages in sizes]


def format_rows(rows: list[ScaleRow]) -> str:
    lines = [
        "| pages | chunks | cold s | cold peak RSS MB | no-op s | update s | update peak RSS MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.pages:,} | {r.chunks:,} | {r.cold.seconds} | {r.cold.peak_rss_mb:,.0f} | "
            f"{r.noop.seconds} | {r.update.seconds} | {r.update.peak_rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def as_json(rows: list[ScaleRow]) -> list[dict]:
    return [asdict(r) for r in rows]
