"""`rag-assets`: ingest sources through Dagster, and search the collection."""

import argparse
import atexit
import gc
import json
import signal
import sys
from pathlib import Path

from rag_assets.core.backends import BACKENDS
from rag_assets.runtime.interrupts import Interrupts
from rag_assets.settings import Settings, SettingsError, milvus_token

# A command runs once and exits: collect young objects less often (imports of dagster, torch and
# transformers make millions; Python's default 700 cost 1.5-2 s of a 12 s update), and at exit
# freeze what is left, so finalization does not walk torch's and dagster's objects (2.4 s).
COMMAND_GC_THRESHOLDS = (10_000, 20, 20)


INTERRUPTED = "rag-assets: interrupted ({signal})"


def main(argv: list[str] | None = None) -> int:
    gc.set_threshold(*COMMAND_GC_THRESHOLDS)
    atexit.register(gc.freeze)
    parser = _parser()
    args = parser.parse_args(argv)
    # Ctrl-C or SIGTERM: one line (the command's own, saying what was kept), exit 130 or 143, no
    # traceback (rag_assets/runtime/interrupts.py).
    with Interrupts() as interrupts:
        args.interrupts = interrupts
        try:
            return _run(args)
        except KeyboardInterrupt:
            name = signal.Signals(interrupts.received() or signal.SIGINT).name
            print(getattr(args, "interrupted", INTERRUPTED).format(signal=name), file=sys.stderr, flush=True)
            return interrupts.exit_code()


def _run(args) -> int:
    try:  # before anything heavy is imported: a setting that cannot work fails at once
        settings = Settings.from_env()
    except SettingsError as error:
        for line in str(error).splitlines():
            print(f"rag-assets: error: {line}", file=sys.stderr)
        return 2
    from rag_assets.core.model_files import ModelNotFoundError
    from rag_assets.errors import InstanceUnavailable, MilvusUnavailable
    from rag_assets.sources import SourcesFileError

    # Exit 2: nothing was done (a setting, the sources file, Milvus or the model is not usable: one
    # line says which and what to do). Exit 1: a run failed (rag_assets/runtime/ingest.py).
    try:
        return args.handler(args, settings)
    except (
        SourcesFileError,
        ModelNotFoundError,
        FileNotFoundError,
        ValueError,
        MilvusUnavailable,
        InstanceUnavailable,
    ) as error:
        print(f"rag-assets: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-assets", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    ingest = commands.add_parser(
        "ingest", help="materialize raw_pages -> chunks -> embeddings -> milvus_collection"
    )
    ingest.add_argument(
        "--source", action="append", help="only this source (repeatable); default: every source"
    )
    ingest.add_argument("--verbose", action="store_true", help="show Dagster's step logs")
    ingest.add_argument(
        "--force", action="store_true", help="run even the sources that did not change since their last run"
    )
    ingest.add_argument(
        "--reconcile",
        action="store_true",
        help="compare every row of each source with Milvus and fix what differs (implies --force)",
    )
    ingest.set_defaults(handler=_ingest, interrupted=INGEST_INTERRUPTED)

    ui = commands.add_parser(
        "ui", help="open the Dagster UI (dagster dev) on the instance `rag-assets ingest` uses"
    )
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    ui.add_argument("--port", "-p", type=int, default=3000, help="port to serve on (default 3000)")
    ui.add_argument(
        "--workspace", "-w", type=Path, help="workspace file (default: ./workspace.yaml, else the module's)"
    )
    ui.set_defaults(handler=_ui)

    search = commands.add_parser("search", help="embed a question and print the closest chunks")
    search.add_argument("query", nargs="?", help="the question")
    search.add_argument("--source", help="only hits from this source")
    search.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    search.add_argument(
        "--queries-file", type=Path, help="one query per line; prints a JSON list of hit lists"
    )
    search.set_defaults(handler=_search)

    cache = commands.add_parser("prune-cache", help="drop cached vectors that no current chunk uses")
    cache.set_defaults(handler=_prune_cache)

    listing = commands.add_parser(
        "collections", help="the collections behind MILVUS_COLLECTION: model, rows, which one serves"
    )
    listing.set_defaults(handler=_collections)

    prune = commands.add_parser(
        "prune-collections", help="drop collections that neither serve nor belong to EMBEDDING_MODEL"
    )
    prune.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    prune.set_defaults(handler=_prune_collections)

    chunkers = commands.add_parser(
        "eval-chunkers", help="recall@k and MRR of this project's chunker vs a fixed-size splitter"
    )
    chunkers.add_argument(
        "--corpus", type=Path, required=True, help="tarball of a docs tree under one top folder"
    )
    chunkers.add_argument(
        "--include", action="append", help="glob of pages (repeatable; default .md .rst .txt)"
    )
    chunkers.add_argument(
        "--sample", type=int, default=0, help="evaluate this many pages, drawn with --seed (default: all)"
    )
    chunkers.add_argument("--seed", type=int, default=0, help="seed of the page sample (default 0)")
    chunkers.add_argument(
        "--chars", type=int, default=1000, help="fixed-size splitter: characters per chunk (default 1000)"
    )
    chunkers.add_argument(
        "--overlap", type=int, default=200, help="fixed-size splitter: overlap in characters (default 200)"
    )
    chunkers.add_argument("--model", default=None, help="default: EMBEDDING_MODEL")
    chunkers.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    chunkers.add_argument(
        "--precision",
        default="auto",
        help="fp32, bf16, fp16 (weights cast), bf16-autocast, fp16-autocast or auto (default)",
    )
    chunkers.add_argument("--out", type=Path, help="write the report as JSON here")
    chunkers.set_defaults(handler=_eval_chunkers)

    bench = commands.add_parser("bench", help="time the pipeline against bare encode and the naive pipeline")
    bench.add_argument("--corpus", type=Path, help="tarball of a docs tree under one top folder")
    bench.add_argument(
        "--scale",
        help="page counts, comma-separated (e.g. 1000,10000,100000): the scale benchmark on a synthetic "
        "local source, with a tiny model made on the spot unless --model names one (docs/benchmarks.md)",
    )
    bench.add_argument(
        "--update", type=Path, help="a newer snapshot of the same tree, for the incremental stage"
    )
    bench.add_argument(
        "--include", action="append", help="glob of pages to ingest (repeatable; default .md .rst .txt)"
    )
    bench.add_argument(
        "--api-latency-ms", type=float, default=0.0, help="added to every loopback API request"
    )
    bench.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    bench.add_argument(
        "--precision",
        default="auto",
        help="fp32, bf16, fp16 (weights cast), bf16-autocast, fp16-autocast or auto (default)",
    )
    bench.add_argument("--model", default=None, help="default: EMBEDDING_MODEL")
    bench.add_argument(
        "--stages",
        default="bare_encode,bare_embed,cold,warm,noop_cli_dagster,noop_cli,incremental,naive",
        help="comma-separated subset",
    )
    bench.add_argument(
        "--fp32-reference", action="store_true", help="also time fp32 bare encode and report cosine agreement"
    )
    bench.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="EMBEDDING_BACKEND of the pipeline stages (default torch)",
    )
    bench.add_argument(
        "--backends",
        default="",
        help="comma-separated backends (torch, onnx, onnx-int8, openvino) to compare on the pipeline's "
        "chunks: tokens/s, cosine with fp32 torch, recall of the heading queries",
    )
    bench.add_argument("--workdir", type=Path, help="where to keep the run's data (default: a temp dir)")
    bench.add_argument("--out", type=Path, help="write the report as JSON here")
    bench.set_defaults(handler=_bench)
    return parser


INGEST_INTERRUPTED = (
    "rag-assets: interrupted ({signal}); vectors embedded so far are kept in the embedding cache and "
    "the collection keeps the rows it had; run `rag-assets ingest` again to resume"
)


def _ingest(args, settings: Settings) -> int:
    import contextlib

    from rag_assets.change_detection import record_successes, skip_unchanged, stored_sources
    from rag_assets.errors import IngestFailed
    from rag_assets.runtime.console import ProgressDisplay
    from rag_assets.runtime.preflight import check_local_folders, check_milvus
    from rag_assets.sources import find_source, load_sources

    sources = load_sources(settings.sources_file)
    selected = [find_source(sources, n) for n in args.source] if args.source else sources
    names = [s.name for s in selected]
    if not names:
        raise ValueError(f"{settings.sources_file}: no sources configured")
    # Preflight (rag_assets/runtime/preflight.py), before anything is fetched or embedded; Milvus is asked
    # only when there is something to write.
    check_local_folders(settings, selected)
    settings.check_runtime()
    skipped, names, fingerprints = skip_unchanged(settings, selected, force=args.force or args.reconcile)
    for unchanged in skipped:  # rag_assets/change_detection.py: no run, no import of the pipeline
        print(unchanged.describe())
    listed = {s.name for s in sources}
    if not names and not stored_sources(settings.artifacts_dir) - listed:
        print(f"nothing changed: collection {settings.collection!r} at {settings.milvus_uri} left as it is")
        return 0
    check_milvus(settings)
    from rag_assets.runtime.ingest import run_ingest
    from rag_assets.runtime.instance import cli_instance
    from rag_assets.runtime.interrupts import start_log_helpers_in_their_own_process_group

    instance = cli_instance(settings)
    start_log_helpers_in_their_own_process_group()
    if not names:  # only removals: a source taken out of the sources file still has stored data
        from rag_assets.runtime.source_removal import remove_unlisted_sources

        for removed in remove_unlisted_sources(settings, instance):
            print(removed.describe(settings.sources_file))
        return 0
    display = contextlib.nullcontext() if args.verbose else ProgressDisplay()
    try:
        with display:
            summaries = run_ingest(
                settings,
                instance,
                names,
                verbose=args.verbose,
                reconcile=args.reconcile,
                on_reclaimed=_say_reclaimed,
                on_removed=lambda removed: print(removed.describe(settings.sources_file)),
                on_warning=lambda line: print(f"rag-assets: warning: {line}", file=sys.stderr),
                interrupted=lambda: args.interrupts.received() is not None,
            )
    except IngestFailed as failed:
        if failed.summaries:
            record_successes(settings, failed.summaries, fingerprints)
            _print_summaries(failed.summaries)
        for failure in failed.failures:
            print(f"rag-assets: {failure.describe()}", file=sys.stderr)
        return 1
    record_successes(settings, summaries, fingerprints)
    _print_summaries(summaries)
    print(f"collection {settings.collection!r} at {settings.milvus_uri}")
    print(_serving_line(instance, names[-1]))
    return 0


def _print_summaries(summaries) -> None:
    columns = ["pages", "chunks", "embedded", "written", "deleted"]
    print(f"{'source':<24}" + "".join(f"{c:>10}" for c in columns) + f"{'seconds':>10}")
    for summary in summaries:
        cells = "".join(f"{summary.counts.get(c, 0):>10}" for c in columns)
        print(f"{summary.source:<24}{cells}{summary.seconds:>10.1f}")


def _serving_line(instance, source: str) -> str:
    """What the last run's serving_collection step found: which collection serves, what the new one
    waits for.
    """
    from rag_assets import metadata as m

    meta = m.latest_metadata(instance, "serving_collection", source)
    if not meta:
        return "serving: not evaluated yet"
    line = f"serving {meta[m.ALIAS]!r} -> {meta[m.SERVING]}"
    if meta[m.MOVED]:
        return f"{line} (moved from {meta[m.PREVIOUS]}: {meta[m.REASON]})"
    if meta[m.SERVING] != meta[m.CANDIDATE]:
        waits = meta[m.BELOW_THRESHOLD] if meta[m.BELOW_THRESHOLD] != "none" else meta[m.WAITING_FOR]
        return f"{line}; {meta[m.CANDIDATE]} (EMBEDDING_MODEL) not yet: {meta[m.REASON]} ({waits})"
    return line


def _say_reclaimed(run) -> None:
    """A run of this host whose process died (kill -9, OOM killer) was failed and its pool slots freed
    before this command's first run (rag_assets/runtime/reclaim.py): say so, it explains a red run in
    the UI."""
    print(f"rag-assets: {run.describe()}", file=sys.stderr)


def _ui(args, settings: Settings) -> int:
    from rag_assets.runtime.ui import run_ui

    run_ui(settings, host=args.host, port=args.port, workspace=args.workspace)
    return 1  # only reached if the exec failed


def _search(args, settings: Settings) -> int:
    from rag_assets.resources.milvus import MilvusStore

    if args.queries_file:
        queries = [q.strip() for q in args.queries_file.read_text().splitlines() if q.strip()]
    elif args.query:
        queries = [args.query]
    else:
        raise ValueError("give a query, or --queries-file")
    if args.k < 1:
        raise ValueError("-k must be at least 1")
    settings.check_runtime()
    store = MilvusStore(
        settings.milvus_uri, settings.collection, token=milvus_token(settings.milvus_token_env)
    )
    try:
        if store.dimension() is None:
            raise ValueError(
                f"collection {settings.collection!r} does not exist yet: run `rag-assets ingest` first"
            )
        # The alias may still serve the previous model while EMBEDDING_MODEL's collection is built:
        # queries are embedded by the model of the collection they search.
        embedder = served_embedder(store, settings)
        vectors = embedder.embed_queries(queries)
        results = [store.search(v, limit=args.k, source=args.source) for v in vectors]
    finally:
        store.close()
    if args.queries_file:
        print(json.dumps(results, indent=1))
    elif args.json:
        print(json.dumps(results[0], indent=1))
    else:
        _print_hits(queries[0], results[0])
    return 0


def served_embedder(store, settings: Settings):
    """The embedder of the model whose vectors `store`'s name resolves to, with the prompts and backend
    that made them (recorded on the collection); EMBEDDING_MODEL and the settings' prompts for a
    collection that records none."""
    from rag_assets.resources.embedder import Embedder

    model, identity = store.recorded_model()
    recorded = store.recorded_spec()
    embedder = Embedder(
        model or settings.embedding_model,
        device=settings.embedding_device,
        precision=settings.embedding_precision,
        query_prompt=recorded.get("query_prompt", settings.query_prompt),
        document_prompt=recorded.get("document_prompt", settings.document_prompt),
        backend=recorded.get("backend", settings.embedding_backend),
        exports_dir=settings.cache_dir / "exports",
    )
    if identity and embedder.identity != identity:
        raise ValueError(
            f"{store.collection!r} was embedded by {identity}, but {model} is now {embedder.identity}"
        )
    return embedder


def _milvus(settings: Settings):
    from rag_assets.resources.milvus import MilvusResource

    return MilvusResource.from_settings(settings, busy_wait_seconds=0)  # a busy file: said at once


def _collections(args, settings: Settings) -> int:
    milvus = _milvus(settings)
    store = milvus.open()
    try:
        infos = store.describe_family(settings.collection)
    finally:
        store.close()
    print(
        f"serving name {settings.collection!r} at {settings.milvus_uri} (* serves readers, + "
        "EMBEDDING_MODEL's)"
    )
    for info in infos:  # store.collection: EMBEDDING_MODEL's collection, its weights hashed once
        marks = ("*" if info.serving else " ") + ("+" if info.name == store.collection else " ")
        print(f"{marks} {info.name:<60}{info.rows:>9} rows  {info.identity or 'model not recorded'}")
    if not infos:
        print("  no collection yet: run `rag-assets ingest` first")
    return 0


def _prune_collections(args, settings: Settings) -> int:
    milvus = _milvus(settings)
    store = milvus.open()
    try:
        dropped = store.prune_family(settings.collection, {milvus.model_collection}, dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would drop" if args.dry_run else "dropped"
    for name in dropped:
        print(f"{verb} {name}")
    print(f"{len(dropped)} collection(s) {verb}; kept the serving one and EMBEDDING_MODEL's")
    return 0


def _eval_chunkers(args, settings: Settings) -> int:
    from rag_assets.bench.chunkers import ChunkerExperiment, format_report, run_experiment
    from rag_assets.sources import DEFAULT_INCLUDE

    if not args.corpus.is_file():
        raise FileNotFoundError(f"corpus tarball {args.corpus} does not exist")
    experiment = ChunkerExperiment(
        corpus=args.corpus,
        include=tuple(args.include or DEFAULT_INCLUDE),
        sample=args.sample,
        seed=args.seed,
        chars=args.chars,
        overlap=args.overlap,
        model=args.model or settings.embedding_model,
        device=args.device,
        precision=args.precision,
    )
    report = run_experiment(experiment, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def _prune_cache(args, settings: Settings) -> int:
    from rag_assets.core.artifacts import SOURCE_STORE_ASSETS, ArtifactStore
    from rag_assets.resources.embedder import EmbedderResource

    settings.check_runtime()
    resource = EmbedderResource(  # the cache of the vectors ingest makes: model and precision path
        model=settings.embedding_model,
        device=settings.embedding_device,
        precision=settings.embedding_precision,
        cache_dir=str(settings.cache_dir),
        query_prompt=settings.query_prompt,
        document_prompt=settings.document_prompt,
        backend=settings.embedding_backend,
    )
    keep = set()
    artifacts = ArtifactStore(settings.artifacts_dir)
    for source in sorted(artifacts.sources(SOURCE_STORE_ASSETS[0])):
        store, moved = artifacts.open_source(source)
        with store:
            if moved:  # what the damaged store's chunks used is unknown until a run rebuilds it
                print(
                    f"{source}: its store could not be read, moved to {moved}; nothing pruned: "
                    "run `rag-assets ingest`, then prune again"
                )
                return 0
            keep.update(c["content_hash"] for batch in store.iter_chunks(("content_hash",)) for c in batch)
    cache = resource.open_cache()
    try:
        before = len(cache)
        removed = cache.prune(keep)
    finally:
        cache.close()
    print(f"{cache.path}: kept {before - removed} vectors, removed {removed}")
    return 0


def _bench(args, settings: Settings) -> int:
    if args.scale:
        return _bench_scale(args)
    if args.corpus is None:
        raise ValueError("rag-assets bench needs --corpus TARBALL (or --scale PAGES)")
    from rag_assets.bench.run import BenchOptions, format_table, run_bench, write_report
    from rag_assets.sources import DEFAULT_INCLUDE

    for tarball in filter(None, (args.corpus, args.update)):
        if not tarball.is_file():
            raise FileNotFoundError(f"corpus tarball {tarball} does not exist")
    options = BenchOptions(
        corpus=args.corpus,
        update=args.update,
        include=tuple(args.include or DEFAULT_INCLUDE),
        api_latency_ms=args.api_latency_ms,
        device=args.device,
        precision=args.precision,
        model=args.model or settings.embedding_model,
        stages=tuple(s for s in args.stages.split(",") if s),
        fp32_reference=args.fp32_reference,
        workdir=args.workdir,
        backend=args.backend,
        backends=_backends(args.backends),
    )
    report = run_bench(options, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(report))
    if args.out:
        write_report(report, args.out)
    return 0


def _bench_scale(args) -> int:
    import tempfile

    from rag_assets.bench.scale import as_json, format_rows, run_scale

    sizes = [int(n) for n in args.scale.split(",")]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rag-scale-"))
    rows = run_scale(sizes, args.model, workdir, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_rows(rows))
    if args.out:
        args.out.write_text(json.dumps(as_json(rows), indent=2))
    return 0


def _backends(raw: str) -> tuple[str, ...]:
    """--backends: known names, each with its extra installed; else one line saying which is not."""
    from rag_assets.core.backends import missing_extra

    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if name not in BACKENDS:
            raise ValueError(f"--backends: {name!r} is not one of {', '.join(BACKENDS)}")
        missing = missing_extra(name)
        if missing:
            raise ValueError(f"--backends: {name} {missing}")
    return names


def _print_hits(query: str, hits: list[dict]) -> None:
    print(f"query: {query}")
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit["text"].split())[:160]
        print(f"{rank}. {hit['score']:.3f}  {hit['source']}  {hit['path']}  [{hit['heading']}]")
        print(f"   {snippet}")


if __name__ == "__main__":
    sys.exit(main())
