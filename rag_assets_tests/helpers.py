"""Helpers the tests share: writing inputs (sources files, docs, models) and reading back what a run did.

Fixtures live in the conftest files; plain functions live here, so no test module imports another.
"""

import io
import os
import random
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import dagster as dg
import yaml

from rag_assets.metadata import latest_record, plain_metadata
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.instance import INSTANCE_CONFIG
from rag_assets.settings import Settings

SAMPLE_DOCS = Path(__file__).parents[1] / "rag_assets" / "sample_docs"
MINILM = "all-MiniLM-L6-v2"
# Variables of the developer's shell that would point a test at their own services or model.
USER_ENV_UNSET = ("MILVUS_URI", "MILVUS_COLLECTION", "EMBEDDING_MODEL", "GITHUB_TOKEN", "MILVUS_TOKEN")


def user_env(folder: Path) -> dict[str, str]:
    """The variables a user would set to keep everything under `folder`; its Dagster home is made here."""
    home = folder / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_CONFIG))
    return {
        "RAG_DATA_DIR": str(folder / "data"),
        "RAG_SOURCES_FILE": str(folder / "sources.yaml"),
        "DAGSTER_HOME": str(home),
    }


def cli(*args: str) -> subprocess.CompletedProcess:
    """`rag-assets ARGS` called in this process (rag_assets.cli.main), in the environment as it is now.

    For tests of the command's logic, or that only read a result through it: no interpreter start, no
    second import of dagster and torch. Tests of what a user's shell sees run the command as a process.
    """
    from rag_assets.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return subprocess.CompletedProcess(["rag-assets", *args], code, out.getvalue(), err.getvalue())


def rag_assets(
    *args: str, env: dict, python_flags: tuple[str, ...] = (), timeout: float = 300
) -> subprocess.CompletedProcess:
    """`rag-assets ARGS` as a user runs it: a new process, with `env` over this one's environment (less
    the user's own Milvus, model and token variables, which `env` sets when a test needs them)."""
    inherited = {k: v for k, v in os.environ.items() if k not in USER_ENV_UNSET}
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "rag_assets.cli", *args],
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rows_in(settings: Settings, collection: str, source: str) -> list[dict]:
    """The ids of a source's rows in one collection (not the serving name)."""
    store = MilvusStore(settings.milvus_uri, collection)
    try:
        return store.source_rows(source, ("id",))
    finally:
        store.close()


def write_sources(path: Path, sources: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"sources": sources}, sort_keys=False))
    return path


def milvus_rows(settings: Settings, source: str) -> dict[str, dict]:
    """Every row Milvus holds for a source, by id (opened and closed here: Milvus Lite is one process)."""
    store = MilvusStore(settings.milvus_uri, settings.collection)
    try:
        fields = ("id", "source", "path", "heading", "text", "content_hash", "commit", "url", "model")
        return {r["id"]: r for r in store.source_rows(source, fields)}
    finally:
        store.close()


def latest_materialization(
    instance: dg.DagsterInstance, asset: str, partition: str
) -> dg.AssetMaterialization:
    """The newest materialization of one partition of an asset."""
    record = latest_record(instance, asset, partition)
    assert record is not None, f"{asset} was never materialized for {partition!r}"
    return record.asset_materialization


def latest_metadata(instance: dg.DagsterInstance, asset: str, partition: str) -> dict:
    """The metadata of that materialization, as plain values (it must exist)."""
    return plain_metadata(latest_materialization(instance, asset, partition))


def expected_chunks(source: str, folder: Path) -> dict[str, tuple[str, str, str]]:
    """What the chunker makes of every Markdown file of a folder: id -> (path, heading, text)."""
    from rag_assets.core.chunking import Chunker
    from rag_assets.core.model_files import load_tokenizer, max_seq_length, resolve_model_dir
    from rag_assets.core.sections import detect_format

    model_dir = resolve_model_dir(MINILM)
    chunker = Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))
    expected = {}
    for path in sorted(folder.rglob("*.md")):
        relative = path.relative_to(folder).as_posix()
        text = path.read_text()
        for chunk in chunker.split_page(source, relative, text, detect_format(relative, text)):
            expected[chunk.id] = (relative, chunk.heading, chunk.text)
    return expected


def perturbed_copy_of_minilm(folder: Path) -> Path:
    """A second, genuinely different model: MiniLM with one weight matrix nudged."""
    from safetensors.torch import load_file, save_file

    from rag_assets.core.model_files import resolve_model_dir

    shutil.copytree(resolve_model_dir(MINILM), folder)
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("attention.self.query.weight"))
    weights[name] = weights[name] * 1.5
    save_file(weights, folder / "model.safetensors")
    return folder


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
    """When a step started and when it succeeded."""
    events = instance.all_logs(
        run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    )
    times = {e.dagster_event.event_type: e.timestamp for e in events if e.step_key == step_key}
    return times[dg.DagsterEventType.STEP_START], times[dg.DagsterEventType.STEP_SUCCESS]


def github_source(github, name: str, repo: str, **extra) -> dict:
    """A sources-file entry for `repo` on a loopback GitHub server (its Markdown pages on main)."""
    return {
        "name": name,
        "kind": "github",
        "repo": repo,
        "ref": "main",
        "include": ["**/*.md"],
        "api_url": github.url,
        **extra,
    }
