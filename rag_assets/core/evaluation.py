"""Retrieval evaluation, pure: queries made from a source's own sections, relevance, recall@k and MRR.

Plain data in, plain data out: no dagster, no Milvus, no model. The assets (`eval_queries`,
`retrieval_eval`) and the chunker experiment (`rag-assets eval-chunkers`) both use it.

- **Queries from headings.** Each distinct section title is a query; the chunks of every section
  carrying that title are relevant. Titles that repeat across pages ("Examples") become one query
  whose relevant set is the union, so any of them is a correct answer.
- **Queries from a file.** JSON lines `{"query": ..., "relevant": [path or heading, ...]}`; a
  reference matches a chunk whose path, breadcrumb or section title equals it.
- **recall@k** is the share of queries with at least one relevant chunk among the top k hits (a
  section is found when any of its pieces is); **MRR** is the mean of 1/rank of the first relevant
  hit within the depth searched (0 when none). Both lie in [0, 1].
- **Relevance by text overlap** (for comparing chunkers): a chunk answers a section when it holds a
  substantial part of the section's body, whatever the chunk's boundaries or breadcrumb.
"""

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rag_assets.core.sections import BREADCRUMB_SEPARATOR

DEFAULT_KS = (1, 5, 10)
MIN_QUERY_CHARS = 3  # shorter titles ("A", "1.") say nothing a reader would ask
OVERLAP_MIN_CHARS = 100
HEADING, FILE = "heading", "file"


@dataclass(frozen=True)
class EvalQuery:
    """One query and the ids of the chunks that answer it."""

    text: str
    relevant: frozenset[str]
    origin: str = HEADING


def section_title(heading: str) -> str:
    """The last title of a breadcrumb: `Models › Fields › Field options` -> `Field options`."""
    return heading.split(BREADCRUMB_SEPARATOR)[-1].strip()


def _key(text: str) -> str:
    return " ".join(text.casefold().split())


def heading_queries(chunks: Iterable[tuple[str, str]]) -> list[EvalQuery]:
    """One query per distinct section title of `(chunk id, breadcrumb)` pairs, in order of first
    appearance.
    """
    titles: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for chunk_id, heading in chunks:
        title = section_title(heading or "")
        if len(title) < MIN_QUERY_CHARS:
            continue
        key = _key(title)
        titles.setdefault(key, title)
        relevant.setdefault(key, set()).add(chunk_id)
    return [EvalQuery(titles[key], frozenset(ids)) for key, ids in relevant.items()]


def file_queries(
    lines: Iterable[str], chunks: Iterable[tuple[str, str, str]], *, name: str = "queries file"
) -> tuple[list[EvalQuery], list[str]]:
    """Queries of a JSON-lines file over `(chunk id, path, breadcrumb)` triples.

    Returns the queries and, for each line left out because no chunk matches its references (the
    docs moved on), a note naming the line. A line that is not a query object raises ValueError:
    a broken file is for its author to fix, not to shrink silently.
    """
    index: dict[str, set[str]] = {}
    for chunk_id, path, heading in chunks:
        for reference in {path, heading, section_title(heading or "")}:
            if reference:
                index.setdefault(_key(reference), set()).add(chunk_id)
    queries, skipped = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        query, references = _parse_line(line, f"{name}:{number}")
        relevant = set().union(*(index.get(_key(r), set()) for r in references))
        if relevant:
            queries.append(EvalQuery(query, frozenset(relevant), FILE))
        else:
            skipped.append(f"{name}:{number}: no chunk matches {references!r}")
    return queries, skipped


def _parse_line(line: str, where: str) -> tuple[str, list[str]]:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not JSON: {error}") from None
    if not isinstance(item, dict) or not isinstance(item.get("query"), str) or not item["query"].strip():
        raise ValueError(f'{where}: expected {{"query": "...", "relevant": ["path or heading", ...]}}')
    references = item.get("relevant")
    if isinstance(references, str):
        references = [references]
    if not isinstance(references, list) or not references or not all(isinstance(r, str) for r in references):
        raise ValueError(f"{where}: 'relevant' must be a non-empty list of paths or headings")
    return item["query"].strip(), references


def stable_sample(queries: Sequence[EvalQuery], limit: int) -> list[EvalQuery]:
    """At most `limit` queries, the same ones run after run (ordered by a hash of their text)."""
    if len(queries) <= limit:
        return list(queries)
    chosen = sorted(range(len(queries)), key=lambda i: hashlib.sha256(queries[i].text.encode()).hexdigest())[
        :limit
    ]
    return [queries[i] for i in sorted(chosen)]


def first_relevant_rank(ranked_ids: Sequence[str], relevant: frozenset[str] | set[str]) -> int | None:
    """1-based rank of the first relevant id, or None when no hit is relevant."""
    return next((rank for rank, hit in enumerate(ranked_ids, start=1) if hit in relevant), None)


@dataclass(frozen=True)
class RetrievalScores:
    """recall@k for several k, and MRR within `depth` hits, over `queries` queries."""

    queries: int
    recall_at: dict[int, float]
    mrr: float
    depth: int

    def recall(self, k: int) -> float:
        return self.recall_at[k]

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "queries": self.queries,
            **{f"recall_at_{k}": v for k, v in sorted(self.recall_at.items())},
            f"mrr_at_{self.depth}": self.mrr,
        }


def score_ranks(
    ranks: Sequence[int | None], ks: Iterable[int] = DEFAULT_KS, depth: int | None = None
) -> RetrievalScores:
    """Scores from the rank of each query's first relevant hit (None: not within the depth searched)."""
    ks = sorted(set(ks))
    depth = depth or max(ks)
    if ks[-1] > depth:
        raise ValueError(f"recall@{ks[-1]} needs at least {ks[-1]} hits per query, searched {depth}")
    count = len(ranks)
    if not count:
        return RetrievalScores(0, dict.fromkeys(ks, 1.0), 1.0, depth)  # nothing to find, nothing missed
    recall = {k: round(sum(r is not None and r <= k for r in ranks) / count, 4) for k in ks}
    mrr = round(sum(1 / r for r in ranks if r is not None and r <= depth) / count, 4)
    return RetrievalScores(count, recall, mrr, depth)


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of a page."""

    start: int
    end: int

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def overlap(self, other: "Span") -> int:
        return max(0, min(self.end, other.end) - max(self.start, other.start))


def answers(chunk: Span, body: Span, min_chars: int = OVERLAP_MIN_CHARS) -> bool:
    """Does a chunk answer a section? When the text they share is at least `min_chars`, or half of
    the section's body, or half of the chunk. Symmetric in the chunker: a section-aligned chunk and a
    fixed window are judged by the same characters, never by a breadcrumb or a heading line."""
    shared = chunk.overlap(body)
    return shared > 0 and shared >= min(min_chars, len(body) / 2, len(chunk) / 2)


def locate(text: str, pieces: Sequence[str], start: int = 0) -> list[Span]:
    """Where each piece (substrings of `text`, in document order, possibly overlapping) lies in `text`."""
    spans, cursor = [], start
    for piece in pieces:
        found = text.find(piece, cursor)
        if found < 0:
            raise ValueError(f"piece not found in order in the text: {piece[:60]!r}")
        spans.append(Span(found, found + len(piece)))
        cursor = found + 1
    return spans
