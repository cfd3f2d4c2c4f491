"""Names that are not valid UTF-8 never fail a step or a command (issue 21).

On Linux a file name is bytes: a Latin-1 `caf\\xe9.md` in a folder, or in a tarball made by `git
archive` (which keeps names as bytes), reaches Python as a str with lone surrogates. Such a name is
stored with each invalid byte written as `%XX` (rag_assets/core/names.py), so it names one page on
every run and everything downstream (Milvus, parquet, the JSON metadata) gets valid UTF-8.

Real folders, a real `git archive`, a loopback GitHub and website, the CLI as a process.
"""

import io
import os
import subprocess
from pathlib import Path

import pytest

from rag_assets.change_detection import folder_digest
from rag_assets.core.chunking import Chunker
from rag_assets.core.local_folder import iter_folder_pages
from rag_assets.core.model_files import load_tokenizer, max_seq_length, resolve_model_dir
from rag_assets.core.names import portable_name
from rag_assets.core.pages import PageStats, path_selected
from rag_assets.core.registry import folder_fingerprint
from rag_assets.core.sections import detect_format
from rag_assets.core.tarball import iter_tar_pages
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import github_source, milvus_rows, rag_assets, write_sources
from rag_assets_tests.web_site import FakeSite

CAFE = b"caf\xe9.md"  # Latin-1: not valid UTF-8
DUR = b"d\xfcr"  # a folder named in Latin-1
CAFE_PAGE = "# Caf\u00e9\n\nA page whose file name is Latin-1.\n"
DUR_PAGE = "# D\u00fcr\n\nA page in a folder whose name is Latin-1.\n"
UTF8_PAGE = "# Na\u00efve\n\nA page whose name is valid UTF-8: stored as it is.\n"
PLAIN_PAGE = "# Plain\n\nA healthy source beside the odd ones.\n"
INDEX_PAGE = "# Index\n\nThe repository's own index.\n"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        (b"caf\xe9.md", "caf%E9.md"),
        (b"d\xfcr/x.md", "d%FCr/x.md"),
        ("na\u00efve.md".encode(), "na\u00efve.md"),  # valid UTF-8: unchanged
        (b"\xc3\xa9\xff.md", "\u00e9%FF.md"),  # valid bytes kept, the invalid one escaped
        (b"100%.md", "100%.md"),  # a valid name is never touched, '%' included
    ],
)
def test_portable_name_writes_only_the_invalid_bytes_as_percent_escapes(raw, stored):
    assert portable_name(os.fsdecode(raw)) == stored
    assert portable_name(stored) == stored
    stored.encode("utf-8")  # valid UTF-8


def test_a_lone_surrogate_that_no_file_system_made_is_escaped_too():
    assert portable_name("a\ud800b.md") == "a%ED%A0%80b.md"


def test_a_folder_with_latin1_names_yields_escaped_pages_and_one_page_per_stored_name(tmp_path):
    root = tmp_path / "docs"
    (root / os.fsdecode(DUR)).mkdir(parents=True)
    (root / os.fsdecode(CAFE)).write_text(CAFE_PAGE)
    (root / os.fsdecode(DUR) / "x.md").write_text(DUR_PAGE)
    (root / "caf%E9.md").write_text(PLAIN_PAGE)  # literally the stored name of the Latin-1 one
    stats = PageStats()
    pages = list(iter_folder_pages(root, include=("**/*.md",), exclude=(), stats=stats))
    # The literal name sorts first and is kept; the Latin-1 file with the same stored name is a duplicate.
    assert [(p.path, p.text) for p in pages] == [("caf%E9.md", PLAIN_PAGE), ("d%FCr/x.md", DUR_PAGE)]
    assert pages[1].url == (root.resolve() / os.fsdecode(DUR) / "x.md").as_uri()
    assert pages[1].url.endswith("/d%FCr/x.md")
    assert (stats.names_escaped, stats.duplicate_skipped, stats.pages) == (1, 1, 2)  # d%FCr/x.md only


def test_a_git_archive_with_latin1_names_yields_escaped_pages(tmp_path):
    archive = git_archive(tmp_path / "repo", {CAFE: CAFE_PAGE, b"index.md": INDEX_PAGE})
    stats = PageStats()
    pages = list(iter_tar_pages(io.BytesIO(archive), include=("**/*.md",), exclude=(), stats=stats))
    assert sorted((p.path, p.text) for p in pages) == [("caf%E9.md", CAFE_PAGE), ("index.md", INDEX_PAGE)]
    assert stats.names_escaped == 1


def test_a_folder_selects_by_the_stored_name_so_globs_can_name_an_escaped_file(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / os.fsdecode(CAFE)).write_text(CAFE_PAGE)
    (root / "keep.md").write_text(PLAIN_PAGE)
    stats = PageStats()
    pages = list(iter_folder_pages(root, include=("**/*.md",), exclude=("caf%E9.md",), stats=stats))
    assert [p.path for p in pages] == ["keep.md"]
    assert stats.names_escaped == 0  # not selected: not read, not counted


def test_the_change_fingerprints_of_a_folder_with_a_latin1_name_work_and_see_its_edits(tmp_path):
    """The CLI's skip check and the sources sensor fingerprint the folder before any run: an encode
    error there failed every command and every sensor tick."""
    root = tmp_path / "docs"
    root.mkdir()
    cafe = root / os.fsdecode(CAFE)
    cafe.write_text(CAFE_PAGE)
    selected = ("**/*.md",)
    before = (
        folder_digest(root, lambda p: path_selected(p, selected, ())),
        folder_fingerprint(root, selected, ()),
    )
    cafe.write_text(CAFE_PAGE + "\nOne more line.\n")
    os.utime(cafe, ns=(1, 1))
    after = (
        folder_digest(root, lambda p: path_selected(p, selected, ())),
        folder_fingerprint(root, selected, ()),
    )
    assert before[0] != after[0] and before[1] != after[1]


@pytest.mark.slow
def test_latin1_names_in_a_folder_a_tarball_and_urls_land_escaped_beside_a_healthy_source(
    workdir, env, settings
):
    odd = workdir / "odd"
    (odd / os.fsdecode(DUR)).mkdir(parents=True)
    (odd / os.fsdecode(CAFE)).write_text(CAFE_PAGE)
    (odd / os.fsdecode(DUR) / "x.md").write_text(DUR_PAGE)
    (odd / "na\u00efve.md").write_text(UTF8_PAGE)
    plain = workdir / "plain"
    plain.mkdir()
    (plain / "plain.md").write_text(PLAIN_PAGE)
    archive = git_archive(workdir / "repo", {b"docs/" + CAFE: CAFE_PAGE, b"docs/index.md": INDEX_PAGE})
    tarball = workdir / "repo.tar.gz"
    tarball.write_bytes(archive)
    with FakeGitHub() as github, FakeSite() as site:
        sha, api = github.add_repo_from_tarball("acme/odd", tarball), github.url
        serve_odd_urls(site)
        write_sources(
            settings.sources_file,
            [
                {"name": "odd", "kind": "local", "path": str(odd)},
                {"name": "plain", "kind": "local", "path": str(plain)},
                github_source(github, "repo", "acme/odd"),
                {"name": "site", "kind": "web", "start_url": f"{site.url}/docs/", "requests_per_second": 100},
            ],
        )
        first = rag_assets("ingest", env=env)
        unchanged = rag_assets("ingest", "--source", "odd", "--source", "repo", env=env)
        again = rag_assets("ingest", "--force", env=env)

    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    warnings = [line for line in first.stderr.splitlines() if "not valid UTF-8" in line]
    assert sorted(warnings) == [
        f"rag-assets: warning: source {name!r}: {path}: the name is not valid UTF-8; stored with each "
        "invalid byte as %XX"
        for name, path in (("odd", "caf%E9.md"), ("odd", "d%FCr/x.md"), ("repo", "docs/caf%E9.md"))
    ]
    first_rows = {name: [c[0], c[1], c[3], c[4]] for name, c in summary_rows(first.stdout).items()}
    assert first_rows == {  # pages, chunks, written, deleted
        "odd": ["3", "3", "3", "0"],
        "plain": ["1", "1", "1", "0"],
        "repo": ["2", "2", "2", "0"],
        "site": ["3", "3", "3", "0"],
    }
    chunker = minilm_chunker()
    assert stored(settings, "odd") == expected(
        chunker, "odd", {"caf%E9.md": CAFE_PAGE, "d%FCr/x.md": DUR_PAGE, "na\u00efve.md": UTF8_PAGE}
    )
    assert stored(settings, "plain") == expected(chunker, "plain", {"plain.md": PLAIN_PAGE})
    assert stored(settings, "repo") == expected(
        chunker, "repo", {"docs/caf%E9.md": CAFE_PAGE, "docs/index.md": INDEX_PAGE}
    )
    assert sorted((r["path"], r["heading"], r["text"]) for r in milvus_rows(settings, "site").values()) == [
        ("/docs/", "Docs", "[caf](caf%E9.html) <old>"),
        ("/docs/caf%E9.html", "Caf", "Linked by a Latin-1 byte."),
        ("/docs/na\u00efve", "Naive", "Reached by a redirect."),
    ]
    urls = {r["path"]: r["url"] for r in milvus_rows(settings, "odd").values()}
    assert urls["caf%E9.md"] == (odd.resolve() / os.fsdecode(CAFE)).as_uri()  # the file's own URL
    assert urls["caf%E9.md"].endswith("/odd/caf%E9.md")
    repo_urls = {r["path"]: r["url"] for r in milvus_rows(settings, "repo").values()}
    assert repo_urls["docs/caf%E9.md"] == f"{api}/acme/odd/blob/{sha}/docs/caf%E9.md"

    # The change check fingerprints the same names: nothing changed, nothing run.
    assert unchanged.returncode == 0, unchanged.stderr
    assert [line.split(":")[0] for line in unchanged.stdout.splitlines() if "unchanged since" in line] == [
        "odd",
        "repo",
    ]
    # The same names on the next full run: nothing to write, nothing to delete.
    assert again.returncode == 0, again.stderr
    assert summary_rows(again.stdout) == {
        "odd": ["3", "3", "0", "0", "0"],
        "plain": ["1", "1", "0", "0", "0"],
        "repo": ["2", "2", "0", "0", "0"],
        "site": ["3", "3", "0", "0", "0"],
    }


def serve_odd_urls(site: FakeSite) -> None:
    """A site whose links and redirects carry names that are not UTF-8: a link percent-encoding a
    Latin-1 byte, and a redirect whose Location header holds a raw Latin-1 byte."""
    links = '<a href="caf%E9.html">caf</a> <a href="old">old</a>'
    site.set_page("/docs/", f"<html><head><title>Docs</title></head><body><h1>Docs</h1>{links}</body></html>")
    site.set_page(
        "/docs/caf%E9.html", "<html><body><h1>Caf</h1><p>Linked by a Latin-1 byte.</p></body></html>"
    )
    site.redirect("/docs/old", "/docs/na\u00efve")  # sent as the Latin-1 byte 0xEF
    site.set_page("/docs/na%C3%AFve", "<html><body><h1>Naive</h1><p>Reached by a redirect.</p></body></html>")


def git_archive(folder: Path, files: dict[bytes, str]) -> bytes:
    """`git archive --format=tar.gz` of a real repository holding `files` (names as bytes)."""
    folder.mkdir(parents=True)
    for name, text in files.items():
        path = Path(os.fsdecode(bytes(folder) + b"/" + name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(folder)]
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "odd names"]):
        subprocess.run(git + command, check=True, timeout=60)
    return subprocess.run(
        git + ["archive", "--format=tar.gz", "--prefix=acme-odd/", "HEAD"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def minilm_chunker() -> Chunker:
    model_dir = resolve_model_dir("all-MiniLM-L6-v2")
    return Chunker(load_tokenizer(model_dir), max_seq_length(model_dir))


def expected(chunker: Chunker, source: str, pages: dict[str, str]) -> dict:
    return {
        c.id: (path, c.heading, c.text)
        for path, text in pages.items()
        for c in chunker.split_page(source, path, text, detect_format(path, text))
    }


def stored(settings, source: str) -> dict:
    return {i: (r["path"], r["heading"], r["text"]) for i, r in milvus_rows(settings, source).items()}


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The CLI's summary table: source -> pages, chunks, embedded, written, deleted."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("source "))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("collection "):
            break
        cells = line.split()
        rows[cells[0]] = cells[1:6]
    return rows
