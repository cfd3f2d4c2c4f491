"""The pure evaluation logic: queries from headings and from a file, recall@k and MRR, relevance by
overlap.
"""

import json

import pytest

from rag_assets.core.evaluation import (
    FILE,
    EvalQuery,
    Span,
    answers,
    file_queries,
    first_relevant_rank,
    heading_queries,
    locate,
    score_ranks,
    stable_sample,
)

CHUNKS = [  # (id, path, breadcrumb)
    ("a1", "install.md", "Install › Requirements"),
    ("a2", "install.md", "Install › Requirements"),
    ("b1", "install.md", "Install › Examples"),
    ("c1", "usage.md", "Usage › examples"),
    ("d1", "usage.md", ""),
    ("e1", "usage.md", "Usage › 1."),
]


def test_each_section_title_is_a_query_answered_by_its_sections_chunks():
    queries = heading_queries((i, h) for i, _, h in CHUNKS)

    assert queries == [
        EvalQuery("Requirements", frozenset({"a1", "a2"})),
        EvalQuery(
            "Examples", frozenset({"b1", "c1"})
        ),  # one query for a title two pages share: either answers it
    ]  # no query for text before any heading, nor for a title too short to ask about


def test_a_queries_file_matches_paths_breadcrumbs_and_titles_and_reports_references_that_match_nothing():
    lines = [
        json.dumps({"query": "what do I need first?", "relevant": ["Requirements"]}),
        "",
        json.dumps({"query": "how is it used?", "relevant": ["usage.md"]}),
        json.dumps({"query": "show me", "relevant": "Install › Examples"}),
        json.dumps({"query": "gone", "relevant": ["removed.md"]}),
    ]

    queries, skipped = file_queries(lines, CHUNKS, name="notes.jsonl")

    assert queries == [
        EvalQuery("what do I need first?", frozenset({"a1", "a2"}), FILE),
        EvalQuery("how is it used?", frozenset({"c1", "d1", "e1"}), FILE),
        EvalQuery("show me", frozenset({"b1"}), FILE),
    ]
    assert skipped == ["notes.jsonl:5: no chunk matches ['removed.md']"]


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '["a list"]',
        '{"query": "no refs"}',
        '{"query": "", "relevant": ["x"]}',
        '{"query": "q", "relevant": [1]}',
    ],
)
def test_a_malformed_queries_file_line_is_an_error_naming_the_line(line):
    with pytest.raises(ValueError, match=r"^q\.jsonl:2: "):
        file_queries(['{"query": "fine", "relevant": ["usage.md"]}', line], CHUNKS, name="q.jsonl")


def test_the_sample_is_the_same_run_after_run_and_keeps_document_order():
    queries = [EvalQuery(f"title {n}", frozenset({str(n)})) for n in range(50)]

    sample = stable_sample(queries, 10)

    assert sample == stable_sample(list(queries), 10) and len(sample) == 10
    assert sample == sorted(sample, key=queries.index)
    assert stable_sample(queries, 100) == queries


def test_recall_at_k_and_mrr_from_first_relevant_ranks():
    assert first_relevant_rank(["x", "a2", "a1"], {"a1", "a2"}) == 2
    assert first_relevant_rank(["x", "y"], {"a1"}) is None

    scores = score_ranks([1, 2, 6, None], ks=(1, 5, 10))

    assert scores.recall_at == {1: 0.25, 5: 0.5, 10: 0.75}
    assert scores.mrr == round((1 + 1 / 2 + 1 / 6) / 4, 4)
    assert scores.as_metadata() == {
        "queries": 4,
        "recall_at_1": 0.25,
        "recall_at_5": 0.5,
        "recall_at_10": 0.75,
        "mrr_at_10": scores.mrr,
    }


def test_no_queries_is_nothing_missed_and_too_shallow_a_search_is_refused():
    assert score_ranks([], ks=(1, 5)).recall_at == {1: 1.0, 5: 1.0}
    with pytest.raises(ValueError, match="recall@10"):
        score_ranks([1], ks=(1, 10), depth=5)


@pytest.mark.parametrize(
    ("chunk", "body", "relevant"),
    [
        (Span(100, 300), Span(0, 1000), True),  # a piece of the section
        (Span(0, 1000), Span(900, 1400), True),  # a window holding 100 characters of the body
        (Span(0, 1000), Span(950, 2000), False),  # only 50 characters of a long body
        (Span(0, 1000), Span(960, 1020), True),  # 40 characters: most of a short body
        (Span(900, 1000), Span(0, 960), True),  # more than half of a short chunk
        (Span(0, 100), Span(100, 200), False),  # adjacent, nothing shared
    ],
)
def test_a_chunk_answers_a_section_by_the_body_text_they_share(chunk, body, relevant):
    assert answers(chunk, body) is relevant


def test_pieces_are_located_in_order_even_when_they_repeat():
    text = "alpha beta alpha gamma"

    assert locate(text, ["alpha", "alpha gamma"]) == [Span(0, 5), Span(11, 22)]
    with pytest.raises(ValueError, match="not found"):
        locate(text, ["gamma", "alpha"])
