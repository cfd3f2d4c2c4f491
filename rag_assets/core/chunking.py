"""Turn pages into chunks: sections along headings, then pieces that fit the model's token budget.

Within a section, semantic-text-splitter (Rust, tokenizer-aware) cuts at the largest semantic unit
that fits (paragraphs, then sentences, then words), counting with the embedding model's tokenizer.
Pieces are bounded by characters too: the tokenizer turns any word over 100 characters into one
`[UNK]` token, so an unbroken 70,000-character line (a hex dump, a minified file) would otherwise be
one chunk larger than the collection's text field. Breadcrumbs are shortened to fit the same way.

One page never stops the others: a page whose markup cannot be parsed (a `RecursionError` in
docutils on deeply indented reStructuredText) is chunked as plain text, and a page that still
cannot be chunked is left out; `chunk_pages_reporting` says which, and why.
"""

import contextlib
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from semantic_text_splitter import TextSplitter
from tokenizers import Tokenizer

from rag_assets.core.hashing import content_hash, stable_id
from rag_assets.core.model_files import load_tokenizer
from rag_assets.core.sections import BREADCRUMB_SEPARATOR, split_sections

SPECIAL_TOKENS = 2  # [CLS] and [SEP] (or <s> and </s>) around every input
MIN_BODY_TOKENS = 32
CHUNKER_VERSION = "2"  # bump when a change to this module changes the chunks it makes
MAX_CHUNK_CHARS = 16_000  # 4 UTF-8 bytes a character at most: well inside Milvus's 65,535-byte text field
CHARS_PER_TOKEN_BOUND = 16  # no natural text comes near this; degenerate text is cut by characters
MAX_HEADING_CHARS = 512  # a breadcrumb's last heading is cut to this (and to half the token budget)
ELLIPSIS = "…"
PARSED_AS_TEXT = "parsed_as_text"
NOT_CHUNKED = "not_chunked"
PARALLEL_MIN_PAGES = 64  # below this, starting worker processes costs more than it saves
CHUNK_COLUMNS = [
    "id",
    "source",
    "path",
    "url",
    "heading",
    "text",
    "content_hash",
    "commit",
    "position",
    "tokens",
    "page_hash",
]


@dataclass(frozen=True)
class Chunk:
    """One piece of a page, small enough for the model, with the headings it sits under."""

    id: str
    path: str
    heading: str
    text: str
    content_hash: str
    position: int
    tokens: int

    @property
    def embedding_input(self) -> str:
        return embedding_input(self.heading, self.text)


def embedding_input(heading: str, text: str) -> str:
    """What the model reads: the breadcrumb gives a section's text its context."""
    return f"{heading}\n\n{text}" if heading else text


class Chunker:
    """Splits pages for one tokenizer and token budget."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, overlap_tokens: int = 0):
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens

    def split_page(self, source: str, path: str, text: str, fmt: str) -> list[Chunk]:
        """The chunks of one page, in order. Ids depend on source, path, heading and text only."""
        chunks, seen = [], Counter()
        for section in split_sections(text, fmt):
            heading = self._fit_heading(section.breadcrumb)
            for piece in self._pieces(section.body, heading):
                key = (heading, piece)
                seen[key] += 1
                model_input = embedding_input(heading, piece)
                chunks.append(
                    Chunk(
                        id=stable_id(source, path, heading, piece, str(seen[key])),
                        path=path,
                        heading=heading,
                        text=piece,
                        content_hash=content_hash(model_input),
                        position=len(chunks),
                        tokens=self.count_tokens(model_input),
                    )
                )
        return chunks

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=True).ids)

    @property
    def max_chars(self) -> int:
        """The most characters one chunk's text may have, whatever its token count."""
        return min(MAX_CHUNK_CHARS, CHARS_PER_TOKEN_BOUND * self.max_tokens)

    def _fit_heading(self, breadcrumb: tuple[str, ...]) -> str:
        """Drop outer headings until the breadcrumb leaves room for a body; a last heading that is
        still too long (in tokens or characters) is cut, and ends with an ellipsis."""
        crumbs = list(breadcrumb)
        while len(crumbs) > 1 and self._count(BREADCRUMB_SEPARATOR.join(crumbs)) > self.max_tokens // 2:
            crumbs.pop(0)
        heading = BREADCRUMB_SEPARATOR.join(crumbs)
        if len(heading) <= MAX_HEADING_CHARS and self._count(heading) <= self.max_tokens // 2:
            return heading
        encoding = self.tokenizer.encode(heading[: MAX_HEADING_CHARS * 2], add_special_tokens=False)
        keep = max(self.max_tokens // 2 - 2, 1)  # room for the ellipsis
        if len(encoding.offsets) > keep:
            heading = heading[: encoding.offsets[keep - 1][1]]
        return heading[: MAX_HEADING_CHARS - 1].rstrip() + ELLIPSIS

    def _pieces(self, body: str, heading: str) -> list[str]:
        if not body.strip():
            return []
        room = self.max_tokens - SPECIAL_TOKENS - (self._count(heading) + 1 if heading else 0)
        splitter = _splitter(self.tokenizer, max(room, MIN_BODY_TOKENS), self.overlap_tokens)
        return [
            short
            for piece in splitter.chunks(body)
            for short in (
                _char_splitter(self.max_chars).chunks(piece) if len(piece) > self.max_chars else [piece]
            )
            if short.strip()
        ]

    def _count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=1024)
def _splitter(tokenizer: Tokenizer, capacity: int, overlap: int) -> TextSplitter:
    return TextSplitter.from_huggingface_tokenizer(tokenizer, capacity, overlap=min(overlap, capacity - 1))


@lru_cache(maxsize=8)
def _char_splitter(capacity: int) -> TextSplitter:
    return TextSplitter(capacity)


@dataclass(frozen=True)
class PageToChunk:
    path: str
    text: str
    format: str


@dataclass(frozen=True)
class ChunkedPage:
    """The chunks of one page, and what went wrong on the way: `problem` is empty, PARSED_AS_TEXT
    (its markup could not be parsed, so it was chunked as plain text) or NOT_CHUNKED (no chunk)."""

    chunks: list[Chunk]
    problem: str = ""
    error: str = ""


def chunk_pages(
    source: str,
    pages: list[PageToChunk],
    *,
    model_dir: Path,
    max_tokens: int,
    overlap_tokens: int = 0,
    workers: int = 1,
    on_page: Callable[[], None] | None = None,
) -> list[list[Chunk]]:
    """The chunks of each page, in page order (see `chunk_pages_reporting`)."""
    return [
        page.chunks
        for page in chunk_pages_reporting(
            source,
            pages,
            model_dir=model_dir,
            max_tokens=max_tokens,
            overlap_tokens=overlap_tokens,
            workers=workers,
            on_page=on_page,
        )
    ]


def chunk_pages_reporting(
    source: str,
    pages: list[PageToChunk],
    *,
    model_dir: Path,
    max_tokens: int,
    overlap_tokens: int = 0,
    workers: int = 1,
    on_page: Callable[[], None] | None = None,
) -> list[ChunkedPage]:
    """The chunks of each page, in page order, split over `workers` processes when there are many pages.

    This is where the "many CPU workers" of the design live: parsing and tokenizing are CPU-bound
    Python, so processes (not threads) share the work; each worker loads the tokenizer once.
    `on_page` is called as each page's chunks arrive (progress).
    """
    tell = on_page or (lambda: None)
    args = (str(model_dir), max_tokens, overlap_tokens)
    if workers <= 1 or len(pages) < PARALLEL_MIN_PAGES:
        _init_worker(*args)
        return [_told(_chunk_one(source, page), tell) for page in pages]
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=args) as pool:
        results = pool.map(
            _chunk_one, [source] * len(pages), pages, chunksize=max(1, len(pages) // (workers * 8))
        )
        return [_told(result, tell) for result in results]


@contextlib.contextmanager
def chunking_pool(
    *, model_dir: Path, max_tokens: int, overlap_tokens: int = 0, workers: int = 1
) -> Iterator[Callable[[str, list[PageToChunk]], list[ChunkedPage]]]:
    """A function that chunks a batch of pages (in page order), backed by `workers` processes that
    live as long as the block: a source streamed batch by batch starts its workers (and loads their
    tokenizers) once. Small batches are chunked here, without a round trip to the workers."""
    args = (str(model_dir), max_tokens, overlap_tokens)
    _init_worker(*args)
    if workers <= 1:
        yield lambda source, pages: [_chunk_one(source, page) for page in pages]
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold a CUDA context
    pool: ProcessPoolExecutor | None = None

    def chunk(source: str, pages: list[PageToChunk]) -> list[ChunkedPage]:
        nonlocal pool
        if len(pages) < PARALLEL_MIN_PAGES:
            return [_chunk_one(source, page) for page in pages]
        if pool is None:
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=args)
        size = max(1, len(pages) // (workers * 8))
        return list(pool.map(_chunk_one, [source] * len(pages), pages, chunksize=size))

    try:
        yield chunk
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _told(result, tell: Callable[[], None]):
    tell()
    return result


_WORKER_CHUNKER: Chunker | None = None


def _init_worker(model_dir: str, max_tokens: int, overlap_tokens: int) -> None:
    global _WORKER_CHUNKER
    _WORKER_CHUNKER = Chunker(load_tokenizer(Path(model_dir)), max_tokens, overlap_tokens)


def _chunk_one(source: str, page: PageToChunk) -> ChunkedPage:
    return chunk_page_isolated(_WORKER_CHUNKER, source, page)


def chunk_page_isolated(chunker: Chunker, source: str, page: PageToChunk) -> ChunkedPage:
    """One page's chunks; its own failure (a parser's RecursionError included) stays its own."""
    try:
        return ChunkedPage(chunker.split_page(source, page.path, page.text, page.format))
    except (Exception, RecursionError) as error:  # any parser failure: try the page as plain text
        first = f"{type(error).__name__}: {error}"[:300]
    try:
        return ChunkedPage(chunker.split_page(source, page.path, page.text, "text"), PARSED_AS_TEXT, first)
    except (Exception, RecursionError) as error:
        return ChunkedPage([], NOT_CHUNKED, f"{type(error).__name__}: {error}"[:300])
