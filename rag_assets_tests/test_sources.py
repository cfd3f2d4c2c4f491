"""The sources file: valid files load; invalid ones fail naming the file, the entry and the field."""

import pytest

from rag_assets.sources import GitHubSource, LocalSource, SourcesFileError, load_sources


def load(tmp_path, text: str):
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path, lambda: load_sources(path)


def test_documented_example_loads_with_defaults_and_resolved_paths(tmp_path):
    _, read = load(
        tmp_path,
        """
sources:
  - name: django_docs
    kind: github
    repo: django/django
    ref: main
    include: ["docs/**/*.txt"]
    exclude: ["docs/releases/**"]
    format: rst
  - name: notes
    kind: local
    path: ./docs
    include: ["**/*.md"]
""",
    )
    github, local = read()
    assert isinstance(github, GitHubSource) and github.api_url == "https://api.github.com"
    assert (
        github.page_url("a" * 40, "docs/index.txt")
        == f"https://github.com/django/django/blob/{'a' * 40}/docs/index.txt"
    )
    assert isinstance(local, LocalSource) and local.path == (tmp_path / "docs").resolve()


@pytest.mark.parametrize(
    ("entries", "field", "words"),
    [
        ("- {name: a, kind: ftp}", "kind", "unknown kind 'ftp'"),
        (
            "- {name: a, kind: local, path: x}\n  - {name: a, kind: local, path: y}",
            "name",
            "duplicate name 'a'",
        ),
        ("- {name: 'Bad Name', kind: local, path: x}", "name", "lowercase letters"),
        ("- {name: a, kind: github}", "repo", "Field required"),
        ("- {name: a, kind: github, repo: '../../etc'}", "repo", "owner/name"),
        ("- {name: a, kind: github, repo: 'o/r', ref: '../x'}", "ref", "not a valid"),
        ("- {name: a, kind: local, path: x, include: ['/etc/*']}", "include", "relative pattern"),
        ("- {name: a, kind: local, path: x, format: pdf}", "format", "'rst', 'markdown' or 'text'"),
        ("- {name: 'x\" or 1==1', kind: local, path: x}", "name", "lowercase letters"),
        ("- {name: a, kind: local, path: x, colour: red}", "colour", "Extra inputs"),
    ],
)
def test_invalid_entry_is_named_with_its_field(tmp_path, entries, field, words):
    path, read = load(tmp_path, f"sources:\n  {entries}\n")
    with pytest.raises(SourcesFileError) as raised:
        read()
    message = str(raised.value)
    assert (
        str(path) in message and "source #" in message and f"field '{field}" in message and words in message
    )


def test_malformed_yaml_names_the_file(tmp_path):
    path, read = load(tmp_path, "sources: [\n")
    with pytest.raises(SourcesFileError, match="not valid YAML") as raised:
        read()
    assert str(path) in str(raised.value)


def test_missing_file_says_which_variable_sets_it(tmp_path):
    with pytest.raises(SourcesFileError, match="RAG_SOURCES_FILE"):
        load_sources(tmp_path / "absent.yaml")
