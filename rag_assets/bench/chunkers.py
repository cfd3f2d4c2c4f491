"""`rag-assets eval-chunkers`: this project's chunker against a fixed-size character splitter.

The same pages (a seeded sample of a docs tarball), the same model, the same queries; only the
chunks differ. Three arms:

- `project`: sections along headings, pieces within the model's token limit, embedded as the
  pipeline embeds them (breadcrumb + text);
- `project_text_only`: the same chunks embedded without their breadcrumb, to show how much of the
  project's result comes from the breadcrumb, which repeats the words of a heading query;
- `fixed_<chars>`: semantic-text-splitter's `TextSplitter(chars, overlap)` by characters over the raw
  page (heading lines included), embedded as is: the usual fixed-size baseline.

Queries are the distinct section titles of the sampled pages. Relevance is judged by text, never
by headings: a chunk answers a section when it holds enough of the section's body
(`core.evaluation.answers`), so a fixed window straddling two sections answers both, and a
breadcrumb earns nothing by itself. Search is exact cosine over every chunk of the arm (NumPy), what
Milvus Lite's FLAT index computes; recall@k and MRR are `core.evaluation.score_ranks`.
"""

import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from semantic_text_splitter import TextSplitter

from rag_assets.core.chunking import PageToChunk, chunk_pages
from rag_assets.core.evaluation import DEFAULT_KS, Span, answers, first_relevant_rank, score_ranks
from rag_assets.core.pages import PageStats, decode_page, path_selected
from rag_assets.core.sections import detect_format, split_sections
from rag_assets.core.tarball import tarball_files
from rag_assets.resources.embedder import Embedder

SOURCE = "experiment"
MIN_TITLE_CHARS = 3


@dataclass(frozen=True)
class ChunkerExperiment:
    corpus: Path
    include: tuple[str, ...]
    sample: int = 0  # pages; 0: all
    seed: int = 0
    chars: int = 1000
    overlap: int = 200
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    device: str = "auto"
    precision: str = "auto"
    ks: tuple[int, ...] = DEFAULT_KS


@dataclass(frozen=True)
class ArmChunks:
    """One arm's chunks over all pages: page index, span in the page, and the model's input."""

    name: str
    pages: list[int]
    spans: list[Span | None]
    inputs: list[str]


def load_pages(experiment: ChunkerExperiment) -> list[PageToChunk]:
    files = tarball_files(experiment.corpus)
    paths = sorted(p for p in files if path_selected(p, experiment.include, ()))
    if experiment.sample and experiment.sample < len(paths):
        paths = sorted(random.Random(experiment.seed).sample(paths, experiment.sample))
    pages = []
    for path in paths:
        data = files[path]
        page = decode_page(path, data if isinstance(data, bytes) else data.encode(), PageStats())
        if page is not None and page.text.strip():
            pages.append(PageToChunk(path, page.text, detect_format(path, page.text)))
    return pages


def section_bodies(page: PageToChunk) -> list[tuple[str, Span]]:
    """(title, span of the body) of each titled section with a body, in page order."""
    found, cursor = [], 0
    for section in split_sections(page.text, page.format):
        if not section.body.strip():
            continue
        start = page.text.find(section.body, cursor)
        if start < 0:
            continue
        cursor = start + len(section.body)
        title = section.breadcrumb[-1].strip() if section.breadcrumb else ""
        if len(title) >= MIN_TITLE_CHARS:
            found.append((title, Span(start, cursor)))
    return found


def lenient_spans(text: str, pieces: list[str]) -> list[Span | None]:
    """Where each piece lies, searching forward from the previous one; None if it cannot be found."""
    spans, cursor = [], 0
    for piece in pieces:
        start = text.find(piece, cursor)
        start = start if start >= 0 else text.find(piece)
        spans.append(Span(start, start + len(piece)) if start >= 0 else None)
        cursor = start + 1 if start >= 0 else cursor
    return spans


def project_arms(pages: list[PageToChunk], embedder: Embedder) -> tuple[ArmChunks, ArmChunks]:
    chunked = chunk_pages(
        SOURCE,
        pages,
        model_dir=embedder.model_dir,
        max_tokens=embedder.max_seq_length,
        workers=os.cpu_count() or 1,
    )
    index, spans, with_crumbs, text_only = [], [], [], []
    for number, (page, chunks) in enumerate(zip(pages, chunked)):
        index += [number] * len(chunks)
        spans += lenient_spans(page.text, [c.text for c in chunks])
        with_crumbs += [c.embedding_input for c in chunks]
        text_only += [c.text for c in chunks]
    return ArmChunks("project", index, spans, with_crumbs), ArmChunks(
        "project_text_only", index, spans, text_only
    )


def fixed_arm(pages: list[PageToChunk], chars: int, overlap: int) -> ArmChunks:
    splitter = TextSplitter(chars, overlap=overlap)
    index, spans, inputs = [], [], []
    for number, page in enumerate(pages):
        for start, text in splitter.chunk_indices(page.text):
            index.append(number)
            spans.append(Span(start, start + len(text)))
            inputs.append(text)
    return ArmChunks(f"fixed_{chars}", index, spans, inputs)


def title_queries(pages: list[PageToChunk]) -> tuple[list[str], list[list[tuple[int, Span]]]]:
    """Distinct titles (case and spacing folded) and, for each, every (page, body span) it heads."""
    titles, bodies = {}, {}
    for number, page in enumerate(pages):
        for title, body in section_bodies(page):
            key = " ".join(title.casefold().split())
            titles.setdefault(key, title)
            bodies.setdefault(key, []).append((number, body))
    return list(titles.values()), list(bodies.values())


def relevant_chunks(arm: ArmChunks, sections: list[tuple[int, Span]]) -> set[int]:
    by_page = {}
    for chunk, (page, span) in enumerate(zip(arm.pages, arm.spans)):
        if span is not None:
            by_page.setdefault(page, []).append((chunk, span))
    return {chunk for page, body in sections for chunk, span in by_page.get(page, []) if answers(span, body)}


def evaluate_arm(
    arm: ArmChunks, queries: np.ndarray, sections: list, embedder: Embedder, ks: tuple[int, ...]
) -> dict:
    started = time.perf_counter()
    vectors = embedder.embed_documents(arm.inputs)
    seconds = time.perf_counter() - started
    depth = max(ks)
    top = np.argsort(-(queries @ vectors.T), axis=1)[:, :depth]
    relevant = [relevant_chunks(arm, s) for s in sections]
    ranks = [first_relevant_rank([int(i) for i in hits], rel) for hits, rel in zip(top, relevant)]
    scores = score_ranks(ranks, ks, depth)
    lengths = [len(e.ids) for e in embedder.tokenizer.encode_batch(arm.inputs)]
    return {
        **scores.as_metadata(),
        "chunks": len(arm.inputs),
        "mean_chars": round(float(np.mean([len(t) for t in arm.inputs])), 1),
        "over_token_limit": round(sum(n > embedder.max_seq_length for n in lengths) / len(lengths), 4),
        "mean_relevant_per_query": round(float(np.mean([len(r) for r in relevant])), 2),
        "queries_without_relevant": sum(not r for r in relevant),
        "unlocated_chunks": sum(s is None for s in arm.spans),
        "embed_seconds": round(seconds, 1),
    }


def run_experiment(experiment: ChunkerExperiment, log=print) -> dict:
    embedder = Embedder(experiment.model, device=experiment.device, precision=experiment.precision)
    pages = load_pages(experiment)
    titles, sections = title_queries(pages)
    log(
        f"{len(pages)} pages, {len(titles)} queries; model {embedder.identity} on {embedder.device} "
        f"({embedder.precision})"
    )
    queries = embedder.embed_queries(titles)
    arms = [*project_arms(pages, embedder), fixed_arm(pages, experiment.chars, experiment.overlap)]
    results = {}
    for arm in arms:
        log(f"arm {arm.name}: embedding {len(arm.inputs)} chunks...")
        results[arm.name] = evaluate_arm(arm, queries, sections, embedder, experiment.ks)
        log(f"  {arm.name}: {results[arm.name]}")
    return {
        "arms": results,
        "pages": len(pages),
        "queries": len(titles),
        "experiment": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(experiment).items()},
        "model": embedder.identity,
        "device": embedder.device,
        "precision": embedder.precision,
    }


def format_report(report: dict) -> str:
    ks = report["experiment"]["ks"]
    depth = max(ks)
    columns = [
        *(f"recall_at_{k}" for k in ks),
        f"mrr_at_{depth}",
        "chunks",
        "mean_chars",
        "over_token_limit",
        "mean_relevant_per_query",
    ]
    lines = [f"{'arm':<20}" + "".join(f"{c:>14}" for c in columns)]
    for name, row in report["arms"].items():
        lines.append(f"{name:<20}" + "".join(f"{row[c]:>14}" for c in columns))
    lines.append(
        f"{report['pages']} pages, {report['queries']} queries; {report['model']} on {report['device']} "
        f"({report['precision']})"
    )
    return "\n".join(lines)
