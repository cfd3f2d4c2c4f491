"""Chunks fit the model, carry breadcrumbs, and have ids that depend only on place and content."""

import pytest

from rag_assets.core.chunking import Chunker
from rag_assets.core.model_files import load_tokenizer, max_seq_length, resolve_model_dir


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    return Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))


def long_page(sections: int = 3, sentences: int = 80) -> str:
    return "\n\n".join(
        f"## Part {s}\n\n"
        + " ".join(f"Sentence {i} of part {s} explains one more detail." for i in range(sentences))
        for s in range(sections)
    )


def test_every_chunk_fits_the_models_max_sequence_length(chunker):
    chunks = chunker.split_page("src", "a.md", "# Guide\n\n" + long_page(), "markdown")
    assert len(chunks) > 6
    for chunk in chunks:
        ids = chunker.tokenizer.encode(chunk.embedding_input, add_special_tokens=True).ids
        assert len(ids) == chunk.tokens <= chunker.max_tokens
    assert {c.heading for c in chunks} == {"Guide › Part 0", "Guide › Part 1", "Guide › Part 2"}


def test_editing_one_section_keeps_the_other_sections_ids(chunker):
    page = "# Guide\n\n" + long_page()
    edited = page.replace("Sentence 3 of part 1 ", "Sentence three of part 1 ")
    before = {c.id: c.heading for c in chunker.split_page("src", "a.md", page, "markdown")}
    after = {c.id: c.heading for c in chunker.split_page("src", "a.md", edited, "markdown")}
    changed = set(before) ^ set(after)
    assert changed and {before.get(i) or after.get(i) for i in changed} == {"Guide › Part 1"}


def test_ids_are_stable_and_distinct_across_sources_paths_and_repeats(chunker):
    page = "# A\n\nsame\n\n# A\n\nsame\n"
    first = [c.id for c in chunker.split_page("src", "a.md", page, "markdown")]
    assert first == [c.id for c in chunker.split_page("src", "a.md", page, "markdown")]
    assert len(set(first)) == 2
    other_source = {c.id for c in chunker.split_page("other", "a.md", page, "markdown")}
    other_path = {c.id for c in chunker.split_page("src", "b.md", page, "markdown")}
    assert not set(first) & other_source and not set(first) & other_path


def test_empty_and_heading_only_pages_make_no_chunks(chunker):
    assert chunker.split_page("src", "a.md", "", "markdown") == []
    assert chunker.split_page("src", "a.md", "# Only a title\n", "markdown") == []
