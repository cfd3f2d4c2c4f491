"""What the UI shows for a partition: the chunk preview (Markdown) and the numbers beside it."""

import dagster as dg
import pandas as pd
import pytest
from markdown_it import MarkdownIt

from rag_assets.assets.chunks import PREVIEW_CHARS, chunk_preview
from rag_assets.runtime.ingest import run_ingest
from rag_assets_tests.helpers import latest_materialization, write_sources


def chunk_frame(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"path": p, "heading": h, "text": t, "tokens": len(t.split())} for p, h, t in rows])


def test_preview_shows_the_first_chunk_of_each_page_with_its_breadcrumb():
    frame = chunk_frame(
        [
            ("a.md", "A", "First of a."),
            ("a.md", "A › Details", "Second of a."),
            ("b.md", "B", "First of b."),
        ]
    )

    preview = chunk_preview(frame, limit=2)

    assert preview.startswith("**2 of 3 chunks**")
    assert "**A** · `a.md` · 3 tokens" in preview and "First of b." in preview
    assert "Second of a." not in preview
    assert "A › Details" in chunk_preview(frame, limit=3)  # fewer pages than the limit: the next chunks


def test_preview_shows_chunk_text_literally_and_short():
    frame = chunk_frame(
        [
            (
                "guide.md",
                "Guide › *Setup*",
                "# Not a heading\n\n[not a link](http://x) <b>raw</b> " + "word " * 100,
            )
        ]
    )

    html = MarkdownIt("commonmark").render(chunk_preview(frame))

    assert "<h1>" not in html and "<a " not in html and "<b>" not in html and "<em>" not in html
    assert "# Not a heading [not a link](http://x) &lt;b&gt;raw&lt;/b&gt;" in html
    assert "Guide › *Setup*" in html
    quoted = html.split("<blockquote>")[1].split("</blockquote>")[0]
    assert "…" in quoted and len(quoted) < PREVIEW_CHARS + 100
    assert chunk_preview(frame.iloc[:0]) == "*No chunks.*"


@pytest.mark.slow
def test_a_chunks_partition_carries_its_preview_counts_and_token_numbers(settings, instance, docs_folder):
    write_sources(settings.sources_file, [{"name": "notes", "kind": "local", "path": str(docs_folder)}])

    run_ingest(settings, instance, ["notes"])

    metadata = latest_materialization(instance, "chunks", "notes").metadata
    assert isinstance(metadata["preview"], dg.MarkdownMetadataValue)
    assert "Architecture › The asset graph" in metadata["preview"].value
    assert 0 < metadata["tokens_max"].value <= metadata["token_limit"].value
    assert metadata["dagster/row_count"].value >= 5
