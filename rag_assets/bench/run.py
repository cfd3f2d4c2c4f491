"""The benchmark: the same corpus, model and device through every stage, in one process.

Stages: bare_encode (SentenceTransformer.encode of exactly the pipeline's chunks: the limit),
cold (the Dagster materialization into an empty collection), warm (again, nothing changed),
incremental (the source moved to a newer snapshot), or incremental_cli (the same update, as
`rag-assets ingest` in its own process), naive (the page-at-a-time ancestor).
The corpus is served by the loopback GitHub server the tests use.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import dagster as dg
import numpy as np
import yaml

from rag_assets.bench.backends import BackendRun, compare_backends, format_backends
from rag_assets.bench.measure import StageResult, measured
from rag_assets.bench.naive import run_naive
from rag_assets.bench.split import latest_run_split
from rag_assets.core.artifacts import ArtifactStore
from rag_assets.core.chunking import PageToChunk, chunk_pages, embedding_input
from rag_assets.core.pages import PageStats, decode_page, path_selected
from rag_assets.core.sections import detect_format
from rag_assets.core.tarball import tarball_files
from rag_assets.resources.embedder import Embedder, release_free_heap
from rag_assets.resources.milvus import MilvusStore
from rag_assets.runtime.ingest import run_ingest
from rag_assets.runtime.instance import INSTANCE_CONFIG, ensure_pools
from rag_assets.settings import Settings
from rag_assets.sources import DEFAULT_INCLUDE
from rag_assets.testing.github_server import FakeGitHub

SOURCE = "bench"
REPO = "bench/docs"
BARE_BATCH_SIZE = 32


@dataclass(frozen=True)
class BenchOptions:
    corpus: Path
    update: Path | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    api_latency_ms: float = 0.0
    device: str = "auto"
    precision: str = "auto"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    stages: tuple[str, ...] = (
        "bare_encode",
        "bare_embed",
        "cold",
        "warm",
        "noop_cli",
        "incremental",
        "naive",
    )
    fp32_reference: bool = False
    workdir: Path | None = None
    backend: str = "torch"  # EMBEDDING_BACKEND of the pipeline stages
    backends: tuple[str, ...] = ()  # compared on the pipeline's chunks (bench/backends.py)


def run_bench(options: BenchOptions, log=print) -> dict:
    """Run the stages and return {"stages", "ratios", "env"} (what --out writes)."""
    workdir = Path(options.workdir or tempfile.mkdtemp(prefix="rag-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(
        options.model,
        device=options.device,
        precision=options.precision,
        backend=options.backend,
        exports_dir=workdir / "exports",
    )
    files = tarball_files(options.corpus)
    stages: dict[str, dict] = {}
    with FakeGitHub(latency_ms=options.api_latency_ms, rate_limit=10**9) as github:
        sha = github.add_repo(REPO, files)
        settings = _settings(workdir, options)
        _write_sources(settings.sources_file, github.url, options.include)
        instance = _instance(workdir / "dagster_home")
        chunks = _pipeline_chunks(files, options.include, embedder)
        texts = [c.embedding_input for c in chunks]
        log(
            f"corpus: {len(texts)} chunks from {options.corpus.name}; device {embedder.device}, "
            f"precision {embedder.precision}"
        )
        _warm_up(embedder, texts)
        # The other reduced-precision path (autocast when the weights are cast, and the reverse),
        # timed like bare_embed right after it, so the two are compared on this machine, in one run.
        other = _other_path(embedder, options) if "bare_embed" in options.stages else None
        wanted = {*options.stages, *([other_stage(other)] if other else [])}

        def stage(name: str, body) -> None:
            if name in wanted:
                log(f"stage {name}...")
                release_free_heap()  # a stage's peak RSS is its own, not the heap the last one left
                result = StageResult()
                _reset_gpu_peak(embedder)
                with measured(result):
                    body(result)
                result.extra["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine
                result.extra.update(_gpu_peak(embedder))
                stages[name] = result.as_dict()
                log(f"  {name}: {stages[name]['wall_s']} s")

        stage("bare_encode", lambda r: _bare_encode(embedder, texts, r))
        stage("bare_embed", lambda r: _bare_embed(embedder, texts, r))
        if other is not None:
            _warm_up(other, texts)
            stage(other_stage(other), lambda r: _bare_embed(other, texts, r))
        if options.fp32_reference:
            log("stage bare_encode_fp32...")
            fp32 = StageResult()
            reference = _bare_encode_fp32(options, texts, fp32)
            fp32.extra.update(
                _agreement_with_fp32(embedder, texts, reference), load_avg_1m=round(os.getloadavg()[0], 2)
            )
            if other is not None:
                fp32.extra.update(
                    _agreement_with_fp32(other, texts, reference, prefix="cosine_vs_other_path")
                )
            stages["bare_encode_fp32"] = fp32.as_dict()
            log(f"  bare_encode_fp32: {stages['bare_encode_fp32']['wall_s']} s")
        if {"cold", "cold_cli"} <= wanted:
            raise ValueError("bench: cold and cold_cli each fill the empty collection: choose one")
        stage("cold", lambda r: _ingest(settings, instance, r))
        # The same as `rag-assets ingest` in its own process: the command's imports and start included.
        stage("cold_cli", lambda r: _cli_ingest(settings, workdir, r, instance=instance))
        _check_same_chunks(settings, texts, bool({"cold", "cold_cli"} & wanted))
        stage("warm", lambda r: _ingest(settings, instance, r))
        stage("noop_cli_dagster", lambda r: _cli_ingest(settings, workdir, r))  # runs, then records
        stage("noop_cli", lambda r: _cli_ingest(settings, workdir, r))  # skips: the source is unchanged
        if options.update:
            if {"incremental", "incremental_cli"} <= wanted:
                raise ValueError("bench: incremental and incremental_cli each apply the update: choose one")
            stage(
                "incremental",
                lambda r: (github.push(REPO, tarball_files(options.update)), _ingest(settings, instance, r)),
            )
            stage(
                "incremental_cli",
                lambda r: (
                    github.push(REPO, tarball_files(options.update)),
                    _cli_ingest(settings, workdir, r, instance=instance),
                ),
            )
        stage("naive", lambda r: _naive(github, sha, options, embedder, workdir, r))
        instance.dispose()
    report = {"stages": stages, "ratios": ratios(stages), "env": environment(embedder, options)}
    if options.backends:
        runs = [
            BackendRun(b, options.model, options.device, options.precision, workdir / "exports")
            for b in options.backends
        ]
        report["backends"] = compare_backends(runs, chunks, log=log)
    return report


def _reset_gpu_peak(embedder: Embedder) -> None:
    if embedder.device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(embedder: Embedder) -> dict:
    """The stage's peak GPU memory held by torch in this process (CUDA only)."""
    if not embedder.device.startswith("cuda"):
        return {}
    import torch

    return {"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def other_stage(other: Embedder) -> str:
    return "bare_embed_autocast" if other.precision.endswith("-autocast") else "bare_embed_cast"


def _other_path(embedder: Embedder, options: BenchOptions) -> Embedder | None:
    """The same model, device and dtype on the other reduced-precision path; None at fp32."""
    if embedder.dtype is None:
        return None
    dtype = embedder.precision.split("-")[0]
    precision = f"{dtype}-autocast" if embedder.casts_weights else dtype
    return Embedder(options.model, device=options.device, precision=precision)


def ratios(stages: dict[str, dict]) -> dict[str, float]:
    pairs = {
        "bare_embed_autocast/bare_embed": ("bare_embed_autocast", "bare_embed"),
        "bare_embed_cast/bare_embed": ("bare_embed_cast", "bare_embed"),
        "cold/bare_encode": ("cold", "bare_encode"),
        "cold/bare_embed": ("cold", "bare_embed"),
        "cold_cli/bare_embed": ("cold_cli", "bare_embed"),
        "naive/cold": ("naive", "cold"),
        "warm/cold": ("warm", "cold"),
        "incremental/cold": ("incremental", "cold"),
        "incremental_cli/cold": ("incremental_cli", "cold"),
        "noop_cli/noop_cli_dagster": ("noop_cli", "noop_cli_dagster"),
        "noop_cli/cold": ("noop_cli", "cold"),
    }
    found = {
        name: round(stages[a]["wall_s"] / stages[b]["wall_s"], 3)
        for name, (a, b) in pairs.items()
        if a in stages and b in stages and stages[b]["wall_s"]
    }
    if "bare_encode_fp32" in stages and "cold" in stages and stages["bare_encode_fp32"]["tokens_per_s"]:
        found["cold_vs_fp32_bare_tokens_per_s"] = round(
            stages["cold"]["tokens_per_s"] / stages["bare_encode_fp32"]["tokens_per_s"], 3
        )
    return found


def environment(embedder: Embedder, options: BenchOptions) -> dict:
    import torch

    packages = ("torch", "sentence-transformers", "transformers", "dagster", "pymilvus", "milvus-lite")
    packages += tuple(p for p in ("onnxruntime", "openvino") if _installed(p))
    return {
        "model": embedder.identity,
        "device": embedder.device,
        "precision": embedder.precision,
        "backend": embedder.backend,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if embedder.device.startswith("cuda") else None,
        "python": platform.python_version(),
        "versions": {p: version(p) for p in packages},
        "corpus": options.corpus.name,
        "update": options.update.name if options.update else None,
        "include": list(options.include),
        "api_latency_ms": options.api_latency_ms,
    }


def _pipeline_chunks(files: dict, include: tuple[str, ...], embedder: Embedder) -> list:
    """The chunks the pipeline will produce for this corpus, by the pipeline's own code."""
    pages = []
    for path, data in sorted(files.items()):
        if path_selected(path, include, ()):
            page = decode_page(path, data if isinstance(data, bytes) else data.encode(), PageStats())
            if page is not None:
                pages.append(PageToChunk(path, page.text, detect_format(path, page.text)))
    chunked = chunk_pages(
        SOURCE,
        pages,
        model_dir=embedder.model_dir,
        max_tokens=embedder.chunk_token_limit,
        workers=os.cpu_count() or 1,
    )
    return [c for page_chunks in chunked for c in page_chunks]


def _warm_up(embedder: Embedder, texts: list[str]) -> None:
    """One untimed pass over a few batches, so no stage pays for kernel compilation or lazy imports."""
    with embedder.autocast():
        embedder.sentence_transformer.encode(texts[: 4 * BARE_BATCH_SIZE], batch_size=BARE_BATCH_SIZE)
    embedder.embed(texts[:BARE_BATCH_SIZE])


def _bare_encode(embedder: Embedder, texts: list[str], result: StageResult) -> None:
    model = embedder.sentence_transformer
    with embedder.autocast():
        model.encode(texts, batch_size=BARE_BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True)
    result.tokens = sum(len(e.ids) for e in embedder.tokenizer.encode_batch(texts))
    result.chunks_embedded = len(texts)


FP32_SAMPLE_EVERY = 4


def _bare_embed(embedder: Embedder, texts: list[str], result: StageResult) -> None:
    """The pipeline's own model loop (token-budget batches) on the same texts, without the pipeline:
    cold / bare_embed is what orchestration, fetching, chunking and writing cost on top of it."""
    before = (embedder.stats.tokens, embedder.stats.inputs, embedder.stats.batches)
    embedder.embed(texts)
    result.tokens = embedder.stats.tokens - before[0]
    result.chunks_embedded = embedder.stats.inputs - before[1]
    result.extra["forward_passes"] = embedder.stats.batches - before[2]


def _bare_encode_fp32(options: BenchOptions, texts: list[str], result: StageResult) -> np.ndarray:
    """fp32 reference on every 4th chunk: its throughput (only this encode is timed).

    A quarter of the corpus, taken evenly, has the same length mix as the whole; compare it by
    tokens/s (the ratio `cold_vs_fp32_bare_tokens_per_s`), not by wall time.
    """
    sample = texts[::FP32_SAMPLE_EVERY]
    fp32 = Embedder(options.model, device=options.device, precision="fp32")
    # Load and warm up off the clock.
    fp32.sentence_transformer.encode(sample[:BARE_BATCH_SIZE], batch_size=BARE_BATCH_SIZE)
    with measured(result):
        reference = fp32.sentence_transformer.encode(
            sample, batch_size=BARE_BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True
        )
    result.tokens = sum(len(e.ids) for e in fp32.tokenizer.encode_batch(sample))
    result.chunks_embedded = len(sample)
    result.extra["sample"] = f"every {FP32_SAMPLE_EVERY}th chunk"
    return reference


def _agreement_with_fp32(
    embedder: Embedder, texts: list[str], reference: np.ndarray, prefix: str = "cosine_vs_reduced"
) -> dict:
    """Cosine of the pipeline's (reduced-precision) vectors with the fp32 ones, chunk by chunk.

    Casting the weights is the default only while this stays at a mean of 0.999 or more."""
    cosines = (embedder.embed(texts[::FP32_SAMPLE_EVERY]) * reference).sum(axis=1)
    label = "reduced_precision" if prefix == "cosine_vs_reduced" else f"{prefix}_precision"
    return {
        f"{prefix}_mean": round(float(cosines.mean()), 6),
        f"{prefix}_min": round(float(cosines.min()), 6),
        label: embedder.precision,
    }


def _ingest(settings: Settings, instance: dg.DagsterInstance, result: StageResult) -> None:
    started = time.perf_counter()
    [summary] = run_ingest(settings, instance, [SOURCE])
    result.tokens = summary.counts.get("tokens", 0)
    result.chunks_embedded = summary.counts.get("embedded", 0)
    result.rows_written = summary.counts.get("written", 0)
    result.rows_deleted = summary.counts.get("deleted", 0)
    result.extra["chunks"] = summary.counts.get("chunks", 0)
    result.wall_s = time.perf_counter() - started
    result.extra["split"] = latest_run_split(instance, result.wall_s)


def _cli_ingest(
    settings: Settings, workdir: Path, result: StageResult, instance: dg.DagsterInstance | None = None
) -> None:
    """`rag-assets ingest` as a user runs it, in its own process. With nothing changed, the first one
    after a run of the pipeline that the CLI did not start runs Dagster's no-op (`noop_cli_dagster`)
    and records the source's fingerprint; the next skips the source without Dagster (`noop_cli`).
    Into the empty collection (`cold_cli`) or after the update (`incremental_cli`), its counts and the
    split of its run (given `instance`)."""
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_SOURCES_FILE": str(settings.sources_file),
        "DAGSTER_HOME": str(workdir / "dagster_home"),
        "MILVUS_COLLECTION": settings.collection,
        "EMBEDDING_MODEL": settings.embedding_model,
        "EMBEDDING_DEVICE": settings.embedding_device,
        "EMBEDDING_PRECISION": settings.embedding_precision,
        "EMBEDDING_BACKEND": settings.embedding_backend,
    }
    command = [sys.executable, "-m", "rag_assets.cli", "ingest"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=600)
    wall_s = time.perf_counter() - started
    result.extra["skipped"] = "unchanged since" in done.stdout
    counts = cli_counts(done.stdout, SOURCE)
    result.chunks_embedded = counts.get("embedded", 0)
    result.rows_written = counts.get("written", 0)
    result.rows_deleted = counts.get("deleted", 0)
    if instance is not None and not result.extra["skipped"]:
        result.extra["split"] = latest_run_split(instance, wall_s)


def cli_counts(stdout: str, source: str) -> dict[str, int]:
    """The counts of `rag-assets ingest`'s summary row for `source` (pages, chunks, embedded, written,
    deleted); empty when the source has no row (skipped)."""
    header, columns = None, ("pages", "chunks", "embedded", "written", "deleted")
    for line in stdout.splitlines():
        cells = line.split()
        if cells[:1] == ["source"]:
            header = cells[1:]
        elif header and cells[:1] == [source] and len(cells) == len(header) + 1:
            return {name: int(cells[1 + header.index(name)]) for name in columns if name in header}
    return {}


def _check_same_chunks(settings: Settings, texts: list[str], ran: bool) -> None:
    """bare_encode must have encoded exactly what the pipeline embedded, or the ratio means nothing."""
    if not ran:
        return
    store, _ = ArtifactStore(settings.artifacts_dir).open_source(SOURCE)
    with store:
        chunks = [c for batch in store.iter_chunks(("heading", "text")) for c in batch]
    pipeline = sorted(embedding_input(c["heading"], c["text"]) for c in chunks)
    if pipeline != sorted(texts):
        raise RuntimeError("bench: the pipeline's chunks differ from the bare_encode inputs")


def _naive(
    github: FakeGitHub,
    sha: str,
    options: BenchOptions,
    embedder: Embedder,
    workdir: Path,
    result: StageResult,
) -> None:
    store = MilvusStore(str(workdir / "naive" / "milvus.db"), "naive")
    try:
        chunker = embedder.chunker()
        run_naive(
            api_url=github.url,
            repo=REPO,
            sha=sha,
            include=options.include,
            embedder=embedder,
            chunker=chunker,
            store=store,
            result=result,
        )
    finally:
        store.close()


def _settings(workdir: Path, options: BenchOptions) -> Settings:
    data = workdir / "data"
    return Settings(
        data_dir=data,
        sources_file=workdir / "sources.yaml",
        milvus_uri=str(data / "milvus.db"),
        milvus_token_env="MILVUS_TOKEN",
        collection="bench",
        embedding_model=options.model,
        embedding_device=options.device,
        embedding_precision=options.precision,
        embedding_backend=options.backend,
        poll_interval_seconds=300,
    )


def _write_sources(path: Path, api_url: str, include: tuple[str, ...]) -> None:
    source = {
        "name": SOURCE,
        "kind": "github",
        "repo": REPO,
        "ref": "main",
        "include": list(include),
        "api_url": api_url,
    }
    path.write_text(yaml.safe_dump({"sources": [source]}))


def _instance(home: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE_CONFIG))
    instance = dg.DagsterInstance.from_config(str(home))
    ensure_pools(instance)
    return instance


def _installed(package: str) -> bool:
    try:
        version(package)
        return True
    except Exception:
        return False


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(report: dict) -> str:
    columns = [
        "wall_s",
        "tokens",
        "tokens_per_s",
        "chunks_embedded",
        "rows_written",
        "rows_deleted",
        "peak_rss_mb",
    ]
    lines = [f"{'stage':<18}" + "".join(f"{c:>16}" for c in columns)]
    for name, row in report["stages"].items():
        lines.append(f"{name:<18}" + "".join(f"{row.get(c, ''):>16}" for c in columns))
    for name, row in report["stages"].items():
        split = row.get("split")
        if split:
            steps = ", ".join(f"{k} {v}" for k, v in split["steps"].items())
            lines.append(
                f"split {name}: outside the run {split['outside_run_s']} s, between steps "
                f"{split['between_steps_s']} s; steps: {steps}"
            )
    lines.append("ratios: " + ", ".join(f"{k} = {v}" for k, v in report["ratios"].items()))
    if "backends" in report:
        lines.append(format_backends(report["backends"]))
    env = report["env"]
    lines.append(
        f"env: {env['model']} on {env['device']} ({env['precision']}, {env['backend']}), {env['cpu']} "
        f"x{env['cpu_count']}, api latency {env['api_latency_ms']} ms"
    )
    return "\n".join(lines)


def write_report(report: dict, out: Path) -> None:
    out.write_text(json.dumps(report, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))
