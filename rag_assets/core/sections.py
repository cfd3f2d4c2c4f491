"""Split a page into sections along its headings, keeping each section's heading breadcrumb.

Markdown is parsed with markdown-it-py and reStructuredText with docutils (the reference parsers),
so headings inside code blocks or literal blocks are never mistaken for structure. Both give line
numbers, and each section's body is sliced from the original text so nothing is rewritten.
"""

import re
from dataclasses import dataclass

import docutils.frontend
import docutils.nodes
import docutils.parsers.rst
import docutils.utils
from markdown_it import MarkdownIt

FORMATS = ("rst", "markdown", "text")
BREADCRUMB_SEPARATOR = " › "
_RST_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")
_RST_EXTENSIONS = (".rst", ".rest")
_MARKDOWN_EXTENSIONS = (".md", ".markdown", ".mdx")


@dataclass(frozen=True)
class Section:
    """The text under one heading (up to the next heading), with the headings above it."""

    breadcrumb: tuple[str, ...]
    body: str

    @property
    def heading(self) -> str:
        return BREADCRUMB_SEPARATOR.join(self.breadcrumb)


def detect_format(path: str, text: str, declared: str | None = None) -> str:
    """The page's markup: the declared format, else its extension, else what its headings look like."""
    if declared:
        return declared
    lower = path.lower()
    if lower.endswith(_RST_EXTENSIONS):
        return "rst"
    if lower.endswith(_MARKDOWN_EXTENSIONS):
        return "markdown"
    lines = text.splitlines()
    for above, line in zip(lines, lines[1:]):
        if above.strip() and _RST_ADORNMENT.match(line) and len(line.rstrip()) >= len(above.rstrip()):
            return "rst"
    if re.search(r"^#{1,6} \S", text, flags=re.MULTILINE):
        return "markdown"
    return "text"


def split_sections(text: str, fmt: str) -> list[Section]:
    """Sections in document order; text before the first heading is a section with an empty breadcrumb."""
    if fmt == "rst":
        headings = _rst_headings(text)
    elif fmt == "markdown":
        headings = _markdown_headings(text)
    else:
        headings = []
    return _slice(text.splitlines(keepends=True), headings)


@dataclass(frozen=True)
class _Heading:
    level: int
    title: str
    first_line: int  # first line of the heading markup (0-based)
    body_line: int  # first line after it


def _slice(lines: list[str], headings: list[_Heading]) -> list[Section]:
    sections, trail = [], []
    preamble_end = headings[0].first_line if headings else len(lines)
    if "".join(lines[:preamble_end]).strip():
        sections.append(Section((), "".join(lines[:preamble_end]).strip("\n")))
    for index, heading in enumerate(headings):
        trail = [h for h in trail if h.level < heading.level] + [heading]
        end = headings[index + 1].first_line if index + 1 < len(headings) else len(lines)
        body = "".join(lines[heading.body_line : end]).strip("\n")
        sections.append(Section(tuple(h.title for h in trail), body))
    return sections


def _markdown_headings(text: str) -> list[_Heading]:
    tokens = MarkdownIt("commonmark").parse(text)
    headings = []
    for token, inline in zip(tokens, tokens[1:]):
        if token.type == "heading_open" and token.map:
            start, end = token.map
            headings.append(_Heading(int(token.tag[1]), inline.content.strip(), start, end))
    return headings


_RST_PARSER = docutils.parsers.rst.Parser()
_RST_SETTINGS = docutils.frontend.get_default_settings(docutils.parsers.rst.Parser)
_RST_SETTINGS.update(
    {
        "report_level": 5,
        "halt_level": 5,
        "warning_stream": False,
        "file_insertion_enabled": False,
        "raw_enabled": False,
    },
    docutils.frontend.OptionParser(),
)


def _rst_headings(text: str) -> list[_Heading]:
    document = docutils.utils.new_document("<page>", _RST_SETTINGS)
    _RST_PARSER.parse(text, document)
    lines = text.splitlines()
    headings = []
    for section in document.findall(docutils.nodes.section):
        title = section.next_node(docutils.nodes.title)
        if title is None or title.line is None:
            continue
        underline = title.line - 1  # docutils reports the (last) adornment line, 1-based
        first = underline - 1
        if first >= 1 and _RST_ADORNMENT.match(lines[first - 1]):
            first -= 1  # an overline belongs to the heading too
        headings.append(_Heading(_rst_depth(section), title.astext().strip(), first, underline + 1))
    return sorted(headings, key=lambda h: h.first_line)


def _rst_depth(section: docutils.nodes.section) -> int:
    depth, node = 1, section.parent
    while node is not None:
        if isinstance(node, docutils.nodes.section):
            depth += 1
        node = node.parent
    return depth
