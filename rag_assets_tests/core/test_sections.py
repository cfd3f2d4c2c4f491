"""Sections along headings, with breadcrumbs, for reStructuredText, Markdown and plain text."""

from rag_assets.core.sections import detect_format, split_sections

RST = """\
=====
Title
=====

Intro text.

First
=====

Under first.

Nested
------

Deep text.

.. code-block:: rst

    Not a heading
    =============

Second
======

Last words.
"""


def test_rst_sections_carry_their_breadcrumbs_and_bodies():
    sections = split_sections(RST, "rst")
    assert [(s.heading, s.body.splitlines()[0]) for s in sections] == [
        ("Title", "Intro text."),
        ("Title › First", "Under first."),
        ("Title › First › Nested", "Deep text."),
        ("Title › Second", "Last words."),
    ]
    assert "Not a heading" in sections[2].body


def test_markdown_headings_in_code_fences_are_not_structure():
    text = "Preamble.\n\n# A\n\none\n\n```\n# no\n```\n\n## B\n\ntwo\n\n# C\nthree\n"
    assert [(s.breadcrumb, s.body) for s in split_sections(text, "markdown")] == [
        ((), "Preamble."),
        (("A",), "one\n\n```\n# no\n```"),
        (("A", "B"), "two"),
        (("C",), "three"),
    ]


def test_format_is_declared_then_extension_then_content():
    assert detect_format("a.txt", "Title\n=====\n\nx") == "rst"
    assert detect_format("a.txt", "# Title\n\nx") == "markdown"
    assert detect_format("a.txt", "just words") == "text"
    assert detect_format("a.md", "Title\n=====\n") == "markdown"
    assert detect_format("a.txt", "# Title", declared="text") == "text"


def test_text_without_headings_is_one_section():
    assert [s.body for s in split_sections("one\n\ntwo\n", "text")] == ["one\n\ntwo"]
