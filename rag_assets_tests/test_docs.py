"""The README stays a README (at most 250 lines: what it is, the two commands, the configuration, the
architecture) and every link from it and between the `docs/` pages reaches a file and, with `#anchor`,
a heading of that file, as GitHub renders it."""

import re
from pathlib import Path

from rag_assets.definitions import defs

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def headings(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (code blocks skipped)."""
    anchors, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def local_links(path: Path) -> list[tuple[Path, str]]:
    """(target file, anchor or '') of every relative link in a Markdown file."""
    found = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s) and mailto: not followed (no network in tests)
        file, _, anchor = target.partition("#")
        found.append(((path.parent / file).resolve() if file else path, anchor))
    return found


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target for target, _ in local_links(README)}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert pages <= linked, f"not linked from README.md: {sorted(p.name for p in pages - linked)}"


def test_every_link_in_the_readme_and_docs_reaches_a_file_and_its_heading():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        links = local_links(page)
        assert links or page != README, "README.md links to no docs/ page"
        for target, anchor in links:
            if not target.is_file():
                broken.append(f"{page.name}: {target} does not exist")
            elif anchor and anchor not in headings(target):
                broken.append(f"{page.name}: no heading '#{anchor}' in {target.name}")
    assert not broken, "\n".join(broken)


def test_the_readme_architecture_names_every_asset():
    architecture = README.read_text().partition("## Architecture")[2].partition("\n## ")[0]
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert len(keys) == 7
    assert [k for k in sorted(keys) if f"**{k}**" not in architecture] == []
    diagram = architecture.partition("```\n")[2].partition("```")[0]
    assert [k for k in sorted(keys) if k not in diagram] == []
