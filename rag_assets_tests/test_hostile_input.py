"""Hostile and bad input. Every case ends in a clear error or a counted skip; nothing is written
outside the test's folder (the archive is never extracted); a hostile source beside a good one
leaves the good one intact; and a run that fails keeps every row stored before it.

Tarballs come with GitHub's answers from a mock transport (rag_assets_tests/resources/github_shapes.py)
or, where streaming through a socket is part of the test (memory, huge headers, runs), from the
loopback GitHub server; their `extra_members` put entries in the archive that no honest repository
has ('..' names, absolute names, links, devices, huge headers).
"""

import gzip
import io
import os
import sys
import tarfile
import tempfile
import tracemalloc
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from rag_assets.core.pages import PageStats
from rag_assets.core.tarball import CorruptArchiveError, iter_tar_pages
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.milvus import MilvusStore, quote
from rag_assets.runtime.ingest import IngestFailed, run_ingest
from rag_assets.sources import GitHubSource, SourcesFileError, load_sources
from rag_assets.testing.github_server import FakeGitHub
from rag_assets_tests.helpers import github_source, latest_metadata, milvus_rows, write_sources
from rag_assets_tests.resources.github_shapes import GitHubShapes
from rag_assets_tests.sensors.helpers import skip_message, tick

OK_PAGE = "# Frob\n\nThe frobnicator frobs.\n\n## Install\n\nRun the installer twice.\n"
GOOD_FILES = {"docs/index.md": "# Good\n\nA good page.\n\n## Usage\n\nUse it well.\n"}
MiB = 1024 * 1024


@pytest.fixture
def marker() -> str:
    """A unique file name: if any hostile entry were ever written to disk, a file by this name would exist."""
    return f"rag-hostile-{uuid.uuid4().hex}"


def read_shapes(files: dict, extra_members: list = ()) -> tuple[dict[str, str], PageStats]:
    """The pages of a repository as a run reads them, GitHub's answers coming from a mock transport."""
    shapes = GitHubShapes("acme/frob", files, extra_members)
    source = GitHubSource.model_validate(
        {"name": "frob", "kind": "github", "repo": "acme/frob", "include": ["**/*.md"]}
    )
    result = GitHubResource(retry_attempts=1).reader(transport=shapes.transport).read(source, {})
    pages = result.frame()
    return dict(zip(pages["path"], pages["text"], strict=True)), result.stats


def member(name: str, kind: bytes = tarfile.REGTYPE, *, link: str = "", data: bytes | None = None):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return (info, data) if data is not None else info


def read_repo(github: FakeGitHub, source: dict) -> tuple[dict[str, str], PageStats]:
    """The pages of a repository as a run reads them: resolve the ref, stream the tarball."""
    result = GitHubResource(retry_attempts=1).reader().read(GitHubSource.model_validate(source), {})
    pages = result.frame()
    return dict(zip(pages["path"], pages["text"], strict=True)), result.stats


# -- Writes to disk, seen through Python's audit hooks (PEP 578) ------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_FS_EVENTS = {
    "os.symlink",
    "os.link",
    "os.mkdir",
    "os.rename",
    "os.remove",
    "os.rmdir",
    "os.truncate",
    "os.chmod",
    "os.utime",
}
_recording: list | None = None
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    if _recording is None:
        return
    if (
        event == "open"
        and (isinstance(args[2], int) and args[2] & _WRITE_FLAGS or set(str(args[1] or "")) & set("wax+"))
        or event in _FS_EVENTS
    ):
        _recording.append((event, args[0]))


@contextmanager
def disk_writes():
    """Every file this process opens for writing, and every link, folder or rename it makes, meanwhile."""
    global _recording, _hook_installed
    if not _hook_installed:  # an audit hook cannot be removed: install one, record only inside this block
        sys.addaudithook(_audit)
        _hook_installed = True
    _recording = []
    try:
        yield _recording
    finally:
        _recording = None


def marker_files(marker: str, *roots: Path) -> list[Path]:
    found = []
    for root in roots:
        found += [
            Path(folder, name)
            for folder, dirs, files in os.walk(root)
            for name in dirs + files
            if marker in name
        ]
    return found + [p for p in Path("/tmp").iterdir() if marker in p.name]


# -- Tar entries that point or lead outside: skipped, counted, never written -----------------------

HOSTILE_ENTRIES = {
    "dotdot_name": lambda m: member(f"../../../{m}.md", data=b"# escaped\n"),
    "absolute_name": lambda m: member(f"/tmp/{m}.md", data=b"# absolute\n"),
    "symlink_to_etc_passwd": lambda m: member("docs/passwd.md", tarfile.SYMTYPE, link="/etc/passwd"),
    "symlink_up_and_out": lambda m: member("docs/up.md", tarfile.SYMTYPE, link=f"../../../../{m}.md"),
    "hard_link_to_etc_passwd": lambda m: member("docs/hard.md", tarfile.LNKTYPE, link="/etc/passwd"),
    "hard_link_up_and_out": lambda m: member("docs/hard-up.md", tarfile.LNKTYPE, link=f"../../{m}.md"),
    "character_device": lambda m: member("docs/null.md", tarfile.CHRTYPE),
    "block_device": lambda m: member("docs/disk.md", tarfile.BLKTYPE),
    "fifo": lambda m: member("docs/pipe.md", tarfile.FIFOTYPE),
}


@pytest.mark.parametrize("case", HOSTILE_ENTRIES)
def test_tar_entry_leading_outside_is_skipped_counted_and_never_written(marker, tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    files, extra = {"docs/ok.md": OK_PAGE}, [HOSTILE_ENTRIES[case](marker)]

    with disk_writes() as writes:
        pages, stats = read_shapes(files, extra)

    assert pages == {"docs/ok.md": OK_PAGE}
    assert stats.unsafe_skipped == 1 and stats.pages == 1
    assert writes == []
    assert marker_files(marker, tmp_path) == [] and not Path("/etc/passwd.md").exists()


@pytest.mark.parametrize(
    ("content", "counter", "text"),
    [
        pytest.param(
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary_skipped", None, id="binary_with_md_extension"
        ),
        pytest.param(
            "# Caf\u00e9\n\nna\u00efve\n".encode("latin-1"),
            "decoded_with_replacement",
            "# Caf\ufffd\n\nna\ufffdve\n",
            id="invalid_utf8",
        ),
        pytest.param(b"", "empty_pages", "", id="zero_bytes"),
    ],
)
def test_bad_file_content_is_counted_and_the_other_pages_are_read(content, counter, text):
    pages, stats = read_shapes({"docs/ok.md": OK_PAGE, "docs/bad.md": content})

    assert pages.pop("docs/ok.md") == OK_PAGE
    assert pages == ({} if text is None else {"docs/bad.md": text})
    assert getattr(stats, counter) == 1


# -- Size: streamed, capped, counted; memory stays small --------------------------------------------


def traced_peak(read):
    """What `read()` returns and the most Python memory it held at once."""
    tracemalloc.start()
    try:
        result = read()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_file_of_300_mb_is_skipped_without_being_held_in_memory_and_counted(github):
    line = b"All work and no play makes Jack a dull boy.\n"
    github.add_repo("acme/big", {"docs/big.md": line * (300 * MiB // len(line)), "docs/ok.md": OK_PAGE})

    (pages, stats), peak = traced_peak(lambda: read_repo(github, github_source(github, "big", "acme/big")))

    assert pages == {"docs/ok.md": OK_PAGE}
    assert stats.too_large_skipped == 1 and "docs/big.md: 314572" in stats.notes[0]
    assert stats.bytes_read > 300 * MiB  # it streamed through the inflater ...
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"  # ... in small blocks


def test_decompression_bomb_stops_at_max_total_bytes_in_small_memory_and_says_why(github):
    files = {
        "a.md": OK_PAGE,
        "b/bomb.bin": bytes(200 * MiB),
        "c.md": OK_PAGE,
    }  # 200 MiB of zeros gzip to ~200 KiB
    github.add_repo("acme/bomb", files)
    source = github_source(github, "bomb", "acme/bomb", limits={"max_total_bytes": 8 * MiB})

    (pages, stats), peak = traced_peak(lambda: read_repo(github, source))

    assert pages == {"a.md": OK_PAGE}  # the bomb is not even selected: every inflated byte counts
    assert (
        stats.limit_hit
        == f"max_total_bytes={8 * MiB} reached after 1 pages; the rest of the archive not read"
    )
    assert stats.bytes_read <= 8 * MiB and peak < 16 * MiB


def test_header_record_of_20_mb_is_a_clear_error_without_reading_it(github):
    header = member("docs/ok.md", data=OK_PAGE.encode())
    header[0].pax_headers = {"comment": "x" * (20 * MiB)}
    github.add_repo("acme/header", {}, extra_members=[header])

    def read():
        with pytest.raises(
            CorruptArchiveError, match=r"header record is over the 1048576-byte limit"
        ) as raised:
            read_repo(github, github_source(github, "header", "acme/header"))
        return raised

    _, peak = traced_peak(read)
    assert peak < 8 * MiB


# -- End to end: a hostile source beside a good one ---------------------------------------------------


@pytest.mark.slow
def test_hostile_source_lands_only_its_safe_pages_and_a_good_source_beside_it_lands_whole(
    settings, instance, github, marker, workdir, monkeypatch
):
    cwd = workdir / "a" / "b" / "c"  # where '../../..' would have led, had anything been extracted
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    files = {
        "docs/ok.md": OK_PAGE,
        "docs/png.md": b"\x89PNG\r\n\x1a\n\x00\x00",
        "docs/latin1.md": "# Caf\u00e9\n\nna\u00efve text.\n".encode("latin-1"),
        "docs/empty.md": b"",
    }
    github.add_repo(
        "acme/hostile", files, extra_members=[entry(marker) for entry in HOSTILE_ENTRIES.values()]
    )
    github.add_repo("acme/good", GOOD_FILES)
    write_sources(
        settings.sources_file,
        [github_source(github, "hostile", "acme/hostile"), github_source(github, "good", "acme/good")],
    )

    with disk_writes() as writes:
        run_ingest(settings, instance, ["hostile", "good"])

    outside = [
        path
        for _, path in writes
        if not isinstance(path, int) and not _inside(path, workdir, tempfile.gettempdir())
    ]
    assert outside == [] and not [event for event, _ in writes if event in ("os.symlink", "os.link")]
    assert {r["path"] for r in milvus_rows(settings, "hostile").values()} == {"docs/ok.md", "docs/latin1.md"}
    assert {(r["path"], r["heading"]) for r in milvus_rows(settings, "good").values()} == {
        ("docs/index.md", "Good"),
        ("docs/index.md", "Good › Usage"),
    }
    metadata = latest_metadata(instance, "raw_pages", "hostile")
    counts = {
        k: metadata[k]
        for k in ("pages", "unsafe_skipped", "binary_skipped", "decoded_with_replacement", "empty_pages")
    }
    assert counts == {
        "pages": 3,
        "unsafe_skipped": len(HOSTILE_ENTRIES),
        "binary_skipped": 1,
        "decoded_with_replacement": 1,
        "empty_pages": 1,
    }
    assert marker_files(marker, workdir) == []


def _inside(path, *roots) -> bool:
    """Whether a written path is under one of the roots (the test's folder; the system temp folder,
    where torch keeps its caches, checked for hostile names by marker_files)."""
    resolved = Path(os.fsdecode(path)).resolve()
    return any(resolved.is_relative_to(Path(root).resolve()) for root in roots)


# -- Bad input that fails a run: a clear message, and nothing lost -----------------------------------


def local_sources(docs_folder: Path, other: Path, **notes) -> list[dict]:
    return [
        {"name": "notes", "kind": "local", "path": str(docs_folder), **notes},
        {"name": "other", "kind": "local", "path": str(other)},
    ]


@pytest.fixture
def other_folder(workdir: Path) -> Path:
    folder = workdir / "other"
    folder.mkdir()
    (folder / "other.md").write_text("# Other\n\nAnother source, ingested beside notes.\n")
    return folder


@pytest.mark.slow
def test_bad_input_fails_the_run_with_a_clear_message_and_keeps_every_stored_row(
    settings, instance, docs_folder, other_folder
):
    write_sources(settings.sources_file, local_sources(docs_folder, other_folder))
    run_ingest(settings, instance, ["notes", "other"])
    before = {name: milvus_rows(settings, name) for name in ("notes", "other")}
    assert before["notes"] and before["other"]
    cases = {
        "no matching files (on_empty: keep, the default)": (
            lambda: write_sources(
                settings.sources_file, local_sources(docs_folder, other_folder, include=["**/*.nothing"])
            ),
            IngestFailed,  # the run fails: a source-level failure
            r"source 'notes' has no pages .* Its rows in Milvus are kept \(on_empty: keep\)",
        ),
        "malformed YAML": (
            lambda: settings.sources_file.write_text("sources: [\n  {name: notes\n"),
            SourcesFileError,  # refused before any run
            r"sources.yaml: not valid YAML",
        ),
        "a name that would inject into a filter": (
            lambda: write_sources(
                settings.sources_file, [{"name": 'x" or 1==1', "kind": "local", "path": str(docs_folder)}]
            ),
            SourcesFileError,
            r"field 'name': name 'x\" or 1==1' must be",
        ),
    }
    for case, (break_it, error, message) in cases.items():
        break_it()
        with pytest.raises(error, match=message):
            run_ingest(settings, instance, ["notes", "other"])
        assert {name: milvus_rows(settings, name) for name in before} == before, case

    write_sources(settings.sources_file, local_sources(docs_folder, other_folder, include=["**/*.nothing"]))
    run_ingest(settings, instance, ["other"])  # the other source's own runs are not held up by it
    assert milvus_rows(settings, "other") == before["other"]


@pytest.mark.slow
def test_on_empty_delete_empties_a_source_with_no_pages_and_leaves_the_other_alone(
    settings, instance, docs_folder, other_folder
):
    write_sources(settings.sources_file, local_sources(docs_folder, other_folder))
    run_ingest(settings, instance, ["notes", "other"])
    other_before = milvus_rows(settings, "other")

    write_sources(
        settings.sources_file,
        local_sources(docs_folder, other_folder, include=["**/*.nothing"], on_empty="delete"),
    )
    [notes, _] = run_ingest(settings, instance, ["notes", "other"])

    assert milvus_rows(settings, "notes") == {} and notes.counts["deleted"] > 0 and notes.counts["pages"] == 0
    assert milvus_rows(settings, "other") == other_before


# -- Names and repositories that try to escape their quotes or their path ----------------------------


@pytest.mark.parametrize(
    "name", ['x" or 1==1', "x' or '1'=='1", 'x\\" or source != "', "../etc", "a b", "Notes", "a;b", ""]
)
def test_source_name_that_could_inject_is_rejected_by_validation(tmp_path, name):
    path = write_sources(tmp_path / "sources.yaml", [{"name": name, "kind": "local", "path": "."}])
    with pytest.raises(SourcesFileError, match=r"source #1.*field 'name'"):
        load_sources(path)


def test_quote_makes_a_hostile_name_a_plain_literal_in_a_real_milvus_filter(tmp_path):
    names = ["notes", 'x" or 1==1', 'x" or source != "', "it's", 'back\\slash"', "new\nline"]
    store = MilvusStore(str(tmp_path / "quote.db"), "quote_test")
    try:
        store.ensure_collection(4)
        rows = [
            {
                "id": f"id{i}",
                "source": name,
                "path": "p",
                "url": "u",
                "heading": "h",
                "text": "t",
                "content_hash": "c",
                "commit": "c",
                "model": "m",
                "vector": [1.0, 0.0, 0.0, float(i)],
            }
            for i, name in enumerate(names)
        ]
        store.upsert_rows(rows)

        for i, name in enumerate(names):
            assert [r["id"] for r in store.source_rows(name, ("id",))] == [f"id{i}"], name
        assert store.source_rows('nobody" or source != "', ("id",)) == []
        # Spliced in unquoted, that last name is an expression that matches every row: quoting is what stops
        # it.
        injected = store.query_rows('source == "x" or source != ""', fields=["id"], limit=100)
        assert len(injected) == len(names)
        assert quote('x" or 1==1') == '"x\\" or 1==1"'
        assert store.delete_source('x" or source != "') == 1
        assert sorted(r["id"] for r in store.query_rows(fields=["id"], limit=100)) == [
            f"id{i}" for i in range(len(names)) if i != 2
        ]
    finally:
        store.close()


REPO_TRICKS = [
    "../..",
    "a/b/../../c",
    "acme/..",
    "../frob",
    "%2e%2e/frob",
    "acme/%2e%2e",
    "acme/frob/../../x",
    "https://evil.example/acme/frob",
    "github.com/acme/frob",
    "acme/frob?ref=x",
    "acme/frob#x",
    "acme\\frob",
    "acme/frob\n",
    " acme/frob",
    "acme//frob",
    ".../frob",
    "-/frob",
]


@pytest.mark.parametrize("repo", REPO_TRICKS)
def test_repo_with_path_tricks_is_rejected_and_never_reaches_the_http_layer(settings, instance, github, repo):
    write_sources(settings.sources_file, [github_source(github, "frob", repo)])
    instance.add_dynamic_partitions("sources", ["frob"])

    with pytest.raises(SourcesFileError, match=r"field 'repo'.*must look like 'owner/name'"):
        load_sources(settings.sources_file)
    assert "sources file is invalid" in skip_message(tick(settings, instance, "github_commits_sensor"))
    assert github.requests == []


def test_run_of_a_source_with_a_path_trick_fails_before_any_request(settings, instance, github):
    write_sources(settings.sources_file, [github_source(github, "frob", "a/b/../../c", ref="%2e%2e")])

    # The sources file is read (and refused) before any run starts: nothing is fetched.
    with pytest.raises(SourcesFileError, match=r"field 'repo'.*\n.*field 'ref'"):
        run_ingest(settings, instance, ["frob"])
    assert github.requests == []


def test_tar_names_with_backslashes_or_dot_segments_are_skipped_and_counted():
    members = [
        member("docs\\..\\..\\evil.md", data=b"# backslash\n"),
        member("docs/./../../evil2.md", data=b"# dots\n"),
    ]

    pages, stats = read_shapes({"docs/ok.md": OK_PAGE}, members)

    assert pages == {"docs/ok.md": OK_PAGE} and stats.unsafe_skipped == 2


def test_damaged_entry_header_mid_archive_is_a_clear_error_not_a_shorter_source():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name in ("top/a.md", "top/b.md", "top/c.md"):
            info, data = member(name, data=OK_PAGE.encode())
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    damaged = bytearray(raw.getvalue())
    second = 512 + 512  # a's header, a's data (one block), then b's header
    damaged[second + 148 : second + 156] = b"9999999\0"  # b's header checksum no longer matches

    with pytest.raises(CorruptArchiveError, match="a damaged entry header ended it early"):
        list(
            iter_tar_pages(
                io.BytesIO(gzip.compress(bytes(damaged))), include=("**",), exclude=(), stats=PageStats()
            )
        )
