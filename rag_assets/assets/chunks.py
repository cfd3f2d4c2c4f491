"""chunks: pages cut along their headings into pieces that fit the embedding model."""

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from rag_assets.assets.raw_pages import raw_pages
from rag_assets.core.chunking import NOT_CHUNKED, PARSED_AS_TEXT, PageToChunk, chunking_pool
from rag_assets.core.fitting import fit_rows
from rag_assets.core.progress import Reporter
from rag_assets.core.source_store import PageToRechunk, SourceStore, SourceStoreDamaged
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.embedder import EmbedderResource
from rag_assets.resources.milvus import VARCHAR_LIMITS
from rag_assets.resources.sources import SourcesResource

PREVIEW_CHUNKS = 5  # chunks shown in the UI's `preview` metadata: the first of each page, in page order
PREVIEW_CHARS = 200
PREVIEW_ROWS = 100  # the source's first chunks (in page order) the preview is chosen from
PAGE_BATCH = 256  # pages chunked, then swapped in the store, at a time: what a step holds in memory
LOGGED_NOTES = 20


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"python", "sqlite"},
    deps=[raw_pages],
)
def chunks(
    context: dg.AssetExecutionContext,
    embedder: EmbedderResource,
    sources: SourcesResource,
    artifacts: ArtifactsResource,
) -> dg.MaterializeResult:
    """Heading-aware chunks of every page (Markdown, reStructuredText or plain text), in the source's
    store (`chunks`).

    Each chunk carries its breadcrumb (`Models › Fields › Field options`) and is at most the
    model's max sequence length in the model's own tokens. Ids come from source, path, heading
    and text, so editing one section leaves the other sections' ids alone. Only the pages whose
    text or chunking settings changed since their chunks were made are chunked, PAGE_BATCH at a time
    over every core; each page's chunks are swapped in one transaction that records which ids
    Milvus must write and delete. At most the source's `limits.max_chunks` chunks are kept, whole
    pages in page order; the cut is logged and recorded as `limit_hit`.
    """
    fingerprint = embedder.chunking_fingerprint()
    source_named = sources.lookup()
    progress = Reporter("chunks", "pages", log=context.log.info)
    embedding = embedder.get()
    with chunking_pool(
        model_dir=embedding.model_dir,
        max_tokens=embedder.chunk_token_limit,
        overlap_tokens=embedder.chunk_overlap_tokens,
        workers=os.cpu_count() or 1,
    ) as chunk:
        for key in context.partition_keys:
            started = time.perf_counter()
            with open_store(context, artifacts, key) as store:
                report = chunk_source(
                    key, store, chunk, fingerprint, source_named(key).limits.max_chunks, progress
                )
                count, tokens, largest = store.chunk_stats()
                access = store.access_metadata()  # before the preview's read: the change's own work
                preview = chunk_preview(pd.DataFrame(next(store.iter_chunks(batch=PREVIEW_ROWS), [])), count)
            for path, (problem, error) in report.problems.items():
                what = "chunked as plain text" if problem == PARSED_AS_TEXT else "left out"
                context.log.warning(f"source {key!r}: page {path!r} could not be parsed, {what}: {error}")
            for note in report.notes[:LOGGED_NOTES]:
                context.log.warning(f"source {key!r}: {note}")
            if report.limit_hit:
                context.log.warning(f"source {key!r}: {report.limit_hit}")
            problems = Counter(problem for problem, _ in report.problems.values())
            context.add_asset_metadata(
                {
                    "limit_hit": report.limit_hit or "none",
                    "chunks_added": report.added,
                    "chunks_removed": report.removed,
                    "chunks_unchanged": count - report.added,
                    "pages_chunked": report.pages_chunked,
                    "pages_removed": report.pages_removed,
                    "pages_parsed_as_text": problems[PARSED_AS_TEXT],
                    "pages_not_chunked": problems[NOT_CHUNKED],
                    "rows_skipped": sum(report.skipped.values()),
                    "rows_skipped_reasons": dg.MetadataValue.json(dict(report.skipped)),
                    "tokens": tokens,
                    "tokens_max": largest,
                    "token_limit": embedder.chunk_token_limit,
                    "dagster/row_count": count,
                    "preview": dg.MetadataValue.md(preview),
                    "seconds": round(time.perf_counter() - started, 3),
                    **access,
                },
                partition_key=key,
            )
    progress.finish()
    return dg.MaterializeResult()


@contextlib.contextmanager
def open_store(context, artifacts: ArtifactsResource, source: str) -> Iterator[SourceStore]:
    """The source's store for a step after raw_pages. One SQLite cannot read (at open, or on any
    query) is moved aside and the step fails for it in one line naming the file: raw_pages reads
    the source in full into a new one on the next run."""
    with artifacts.store.damage_named(source):
        store, moved = artifacts.store.open_source(source)
        if moved:
            store.close()
            raise SourceStoreDamaged(
                f"source {source!r}: its store could not be read and was moved to {moved}; the next "
                "run reads the source again in full",
                moved,
            )
        try:
            yield store
        finally:
            store.close()


@dataclass
class ChunkReport:
    """What chunking one source's changed pages did."""

    pages_chunked: int = 0
    pages_removed: int = 0
    added: int = 0
    removed: int = 0
    limit_hit: str = ""
    pages_left_out: int = 0
    chunks_left_out: int = 0
    problems: dict[str, tuple[str, str]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)


def chunk_source(
    source: str,
    store: SourceStore,
    chunk,
    fingerprint: str,
    max_chunks: int,
    progress: Reporter | None = None,
    batch: int = PAGE_BATCH,
) -> ChunkReport:
    """Chunk the pages of a source whose chunks are out of date, `batch` pages at a time, and swap
    their chunks in the store. `chunk(source, pages)` chunks a batch (core/chunking.chunking_pool)."""
    report = ChunkReport()
    todo = store.pages_to_rechunk(fingerprint)
    if progress:
        progress.expect(len(todo))
    budget = max_chunks - store.chunk_count()
    for start in range(0, len(todo), batch):
        paths = todo[start : start + batch]
        pages = store.pages_by_path(paths)
        present = [pages[p] for p in paths if p in pages]
        results = chunk(source, [PageToChunk(p.path, p.text, p.format) for p in present])
        swaps: dict[str, tuple[str, str, list[dict]]] = {p: ("", "", []) for p in paths if p not in pages}
        report.pages_removed += len(swaps)
        for page, chunked in zip(present, results):
            if chunked.problem:
                report.problems[page.path] = (chunked.problem, chunked.error)
            rows = chunk_rows(page, chunked.chunks, report)
            budget += store.chunk_count(page.path)
            if report.limit_hit or len(rows) > budget:
                swaps[page.path] = ("", "", [])  # left out whole: tried again on the next run
                report.limit_hit = report.limit_hit or f"max_chunks={max_chunks} reached"
                report.pages_left_out += 1
                report.chunks_left_out += len(rows)
                continue
            budget -= len(rows)
            swaps[page.path] = (page.content_hash, fingerprint, rows)
            report.pages_chunked += 1
        added, removed = store.replace_chunks(swaps)
        report.added, report.removed = report.added + added, report.removed + removed
        if progress:
            progress.advance(len(paths))
    if report.limit_hit:
        report.limit_hit += f"; {report.chunks_left_out} chunks of {report.pages_left_out} pages not kept"
    return report


def chunk_rows(page: PageToRechunk, chunked: list, report: ChunkReport) -> list[dict]:
    """A page's chunks as store rows, each fitted to its Milvus fields; a row that cannot fit is
    left out and counted (core/fitting.py), so the store holds exactly what Milvus will."""
    if not chunked:
        return []
    frame = pd.DataFrame([{**c.__dict__, "url": page.url, "commit": page.commit} for c in chunked])
    fitted = fit_rows(frame, VARCHAR_LIMITS)
    report.skipped.update(fitted.skipped)
    report.notes += fitted.notes
    return fitted.rows.to_dict("records")


def cap_chunks(frame: pd.DataFrame, max_chunks: int) -> tuple[pd.DataFrame, str]:
    """The chunks of the first pages (in frame order) that fit in `max_chunks` together, and the
    reason when some were left out. Whole pages only: a page is never half in the index, so raising
    the cap later chunks the left-out pages afresh instead of reusing a truncated page."""
    if len(frame) <= max_chunks:
        return frame, ""
    per_page = frame.groupby("path", sort=False).size()
    fits = per_page[per_page.cumsum() <= max_chunks].index
    kept = frame[frame["path"].isin(set(fits))]
    left_out = per_page.drop(fits)
    reason = (
        f"max_chunks={max_chunks} reached; {int(left_out.sum())} chunks of {len(left_out)} pages not kept"
    )
    return kept.reset_index(drop=True), reason


def chunk_preview(frame: pd.DataFrame, total: int | None = None, limit: int = PREVIEW_CHUNKS) -> str:
    """Markdown for the UI: the first chunk of each of the first `limit` pages (then the next chunks),
    each with its path, breadcrumb, token count and the start of its text."""
    if frame.empty:
        return "*No chunks.*"
    firsts = frame.groupby("path", sort=False).head(1)
    shown = pd.concat([firsts, frame.drop(firsts.index)]).head(limit).sort_index()
    lines = [
        f"**{len(shown)} of {total if total is not None else len(frame)} chunks** (breadcrumb, page, tokens, "
        "start of text)",
        "",
    ]
    for number, chunk in enumerate(shown.itertuples(index=False), start=1):
        text = " ".join(str(chunk.text).split())
        text = text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
        breadcrumb = f"**{_escape(chunk.heading)}**" if chunk.heading else "*(no heading)*"
        lines += [
            f"{number}. {breadcrumb} · `{chunk.path}` · {chunk.tokens} tokens",
            f"   > {_escape(text)}",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _escape(text: str) -> str:
    """One line shown literally in Markdown: inline markup escaped, and a start that would open a block."""
    text = re.sub(r"([\\`*_\[\]<>|~])", r"\\\1", text)
    text = re.sub(r"^(\d+)([.)])", r"\1\\\2", text)  # "1. " would start a list
    return re.sub(r"^([#+\-=])", r"\\\1", text)  # a heading, a list, a setext underline
