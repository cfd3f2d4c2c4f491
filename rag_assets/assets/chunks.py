"""chunks: pages cut along their headings into pieces that fit the embedding model."""

import os
import re
import time
from collections import Counter

import dagster as dg
import pandas as pd

from rag_assets.core.chunking import (
    CHUNK_COLUMNS,
    NOT_CHUNKED,
    PARSED_AS_TEXT,
    PageToChunk,
    chunk_pages_reporting,
)
from rag_assets.core.diffing import diff_chunks
from rag_assets.core.progress import Reporter
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.embedder import EmbedderResource
from rag_assets.resources.sources import SourcesResource

PREVIEW_CHUNKS = 5  # chunks shown in the UI's `preview` metadata: the first of each page, in page order
PREVIEW_CHARS = 200


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"python", "pandas"},
    io_manager_key="parquet_io_manager",
)
def chunks(
    context: dg.AssetExecutionContext,
    raw_pages: dict[str, pd.DataFrame],
    embedder: EmbedderResource,
    sources: SourcesResource,
    artifacts: ArtifactsResource,
) -> dict[str, pd.DataFrame]:
    """Heading-aware chunks of every page (Markdown, reStructuredText or plain text).

    Each chunk carries its breadcrumb (`Models › Fields › Field options`) and is at most the
    model's max sequence length in the model's own tokens. Ids come from source, path, heading
    and text, so editing one section leaves the other sections' ids alone. A page whose content
    and chunking settings are unchanged keeps its previous chunks without being parsed again.
    At most the source's `limits.max_chunks` chunks are kept, whole pages in page order; the cut
    is logged and recorded as `limit_hit`.
    """
    fingerprint = embedder.chunking_fingerprint()
    source_named = sources.lookup()
    progress = Reporter("chunks", "pages", sum(len(p) for p in raw_pages.values()), log=context.log.info)
    frames = {}
    for key, pages in raw_pages.items():
        started = time.perf_counter()
        previous = artifacts.store.load(context.asset_key.to_user_string(), key)
        frame, rechunked, problems = chunk_source(key, pages, previous, embedder, fingerprint, progress)
        for path, (problem, error) in problems.items():
            what = "chunked as plain text" if problem == PARSED_AS_TEXT else "left out"
            context.log.warning(f"source {key!r}: page {path!r} could not be parsed, {what}: {error}")
        counts = Counter(problem for problem, _ in problems.values())
        frame, limit_hit = cap_chunks(frame, source_named(key).limits.max_chunks)
        if limit_hit:
            context.log.warning(f"source {key!r}: {limit_hit}")
        frames[key] = frame
        context.add_asset_metadata(
            {
                "limit_hit": limit_hit or "none",
                **diff_chunks(previous, frame).as_metadata("chunks"),
                "pages_chunked": rechunked,
                "pages_parsed_as_text": counts[PARSED_AS_TEXT],
                "pages_not_chunked": counts[NOT_CHUNKED],
                "pages_reused": len(pages) - rechunked,
                "tokens": int(frame["tokens"].sum()),
                "tokens_max": int(frame["tokens"].max()) if len(frame) else 0,
                "token_limit": embedder.chunk_token_limit,
                "dagster/row_count": len(frame),
                "preview": dg.MetadataValue.md(chunk_preview(frame)),
                "seconds": round(time.perf_counter() - started, 3),
            },
            partition_key=key,
        )
    progress.finish()
    return frames


def chunk_source(
    source: str,
    pages: pd.DataFrame,
    previous: pd.DataFrame | None,
    embedder: EmbedderResource,
    fingerprint: str,
    progress: Reporter | None = None,
) -> tuple[pd.DataFrame, int, dict[str, tuple[str, str]]]:
    """The source's chunk frame, in page order, how many pages had to be chunked afresh, and the
    pages whose markup failed (path -> (PARSED_AS_TEXT or NOT_CHUNKED, the error))."""
    if previous is not None and "chunker" in previous and len(previous):
        previous = previous[previous["chunker"] == fingerprint]
        kept = previous.merge(
            pages[["path", "content_hash"]].rename(columns={"content_hash": "page_hash"}),
            on=["path", "page_hash"],
        )
    else:
        kept = pd.DataFrame(columns=[*CHUNK_COLUMNS, "chunker"])
    todo = pages[~pages["path"].isin(set(kept["path"]))]
    if progress:
        progress.advance(len(pages) - len(todo), reused=True)
    results = chunk_pages_reporting(
        source,
        [PageToChunk(p.path, p.text, p.format) for p in todo.itertuples(index=False)],
        model_dir=embedder.get().model_dir,
        max_tokens=embedder.chunk_token_limit,
        overlap_tokens=embedder.chunk_overlap_tokens,
        workers=os.cpu_count() or 1,
        on_page=progress.advance if progress else None,
    )
    fresh = [
        {
            **chunk.__dict__,
            "source": source,
            "url": page.url,
            "commit": page.commit,
            "page_hash": page.content_hash,
            "chunker": fingerprint,
        }
        for page, chunked in zip(todo.itertuples(index=False), results)
        for chunk in chunked.chunks
    ]
    problems = {
        page.path: (chunked.problem, chunked.error)
        for page, chunked in zip(todo.itertuples(index=False), results)
        if chunked.problem
    }
    frame = pd.concat([kept, pd.DataFrame(fresh, columns=kept.columns)], ignore_index=True) if fresh else kept
    order = {path: i for i, path in enumerate(pages["path"])}
    frame = frame.assign(_page=frame["path"].map(order)).sort_values(["_page", "position"], kind="stable")
    return (
        frame.drop(columns="_page").reset_index(drop=True)[[*CHUNK_COLUMNS, "chunker"]],
        len(todo),
        problems,
    )


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


def chunk_preview(frame: pd.DataFrame, limit: int = PREVIEW_CHUNKS) -> str:
    """Markdown for the UI: the first chunk of each of the first `limit` pages (then the next chunks),
    each with its path, breadcrumb, token count and the start of its text."""
    if frame.empty:
        return "*No chunks.*"
    firsts = frame.groupby("path", sort=False).head(1)
    shown = pd.concat([firsts, frame.drop(firsts.index)]).head(limit).sort_index()
    lines = [f"**{len(shown)} of {len(frame)} chunks** (breadcrumb, page, tokens, start of text)", ""]
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
