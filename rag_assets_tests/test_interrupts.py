"""Ctrl-C and SIGTERM during `rag-assets ingest` (issue 21): the command ends within seconds with
exit 130 or 143 and one line saying what was kept, no process prints a traceback, no helper process
is left behind, the vectors embedded before the signal stay in the embedding cache, and the next
run embeds only the rest.

The command runs as a user runs it: its own process (group, like a terminal's foreground job), a
real signal, the bundled model on this machine's CPU or GPU, Milvus Lite. The source is large
enough that embedding takes tens of seconds, and the signal is sent once the cache holds vectors.
"""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag_assets_tests.helpers import (
    USER_ENV_UNSET,
    WORDS,
    expected_chunks,
    milvus_rows,
    rag_assets,
    write_sources,
)

START_DEADLINE_SECONDS = 240  # model load and the first batches, on a loaded 2-core machine
STOP_DEADLINE_SECONDS = 20  # from the signal to the exit: one batch under way, then the run's end
INTERRUPTED = (
    "rag-assets: interrupted ({name}); vectors embedded so far are kept in the embedding cache and the "
    "collection keeps the rows it had; run `rag-assets ingest` again to resume"
)


def write_large_docs(folder: Path, pages: int = 20, sections: int = 8) -> None:
    """About 160 chunks of 150 distinct words each: tens of seconds of embedding on a CPU."""
    rng = random.Random(21)
    folder.mkdir(parents=True)
    for page in range(pages):
        body = [f"# Page {page}\n"]
        for section in range(sections):
            words = " ".join(f"{rng.choice(WORDS)}{rng.randint(0, 9999)}" for _ in range(150))
            body.append(f"## Section {section}\n\n{words}.\n")
        (folder / f"page{page:02}.md").write_text("\n".join(body))


def cached_vectors(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "cache" / "embeddings").glob("*.sqlite"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            try:
                total += db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            except sqlite3.OperationalError:  # created, table not there yet
                pass
    return total


def children_of(pid: int) -> set[int]:
    """Processes whose parent is `pid` (from /proc), e.g. Dagster's compute-log helpers."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_ingest(env: dict, folder: Path) -> tuple[subprocess.Popen, Path, Path]:
    """`rag-assets ingest` in a process group of its own, as a shell starts a foreground job."""
    inherited = {k: v for k, v in os.environ.items() if k not in USER_ENV_UNSET}
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rag_assets.cli", "ingest"],
            env={**inherited, **env},
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return process, out, err


def wait_for_vectors(process: subprocess.Popen, data_dir: Path, err: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while cached_vectors(data_dir) == 0:
        if process.poll() is not None:
            pytest.fail(f"ingest ended (exit {process.returncode}) before embedding: {err.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no vector cached within {START_DEADLINE_SECONDS} s: {err.read_text()}")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group", "code"),
    [
        pytest.param(signal.SIGINT, True, 130, id="ctrl_c_at_a_terminal"),  # the whole process group
        pytest.param(signal.SIGTERM, False, 143, id="sigterm_to_the_process"),  # kill, docker stop
        pytest.param(
            signal.SIGTERM, True, 143, id="sigterm_to_the_group"
        ),  # systemd, a shell's kill -- -pgid
    ],
)
def test_a_signal_during_embedding_ends_ingest_within_seconds_with_one_line_and_keeps_the_vectors(
    workdir, env, settings, signum, to_group, code
):
    docs = workdir / "docs"
    write_large_docs(docs)
    write_sources(settings.sources_file, [{"name": "big", "kind": "local", "path": str(docs)}])
    process, out, err = start_ingest(env, workdir)
    wait_for_vectors(process, settings.data_dir, err)
    helpers = children_of(process.pid)

    sent = time.monotonic()
    (os.killpg if to_group else os.kill)(process.pid, signum)
    try:
        process.wait(timeout=STOP_DEADLINE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {STOP_DEADLINE_SECONDS} s after {signum.name}: {err.read_text()}")
    stopped_in = time.monotonic() - sent

    stdout, stderr = out.read_text(), err.read_text()
    assert process.returncode == code, stderr
    assert "Traceback" not in stdout + stderr
    assert [line for line in stderr.splitlines() if "interrupted" in line] == [
        INTERRUPTED.format(name=signum.name)
    ]
    assert stderr.splitlines()[-1] == INTERRUPTED.format(name=signum.name)
    assert "failed" not in stderr and "source" not in stdout  # no failure lines, no summary
    assert stopped_in < STOP_DEADLINE_SECONDS
    assert helpers, "Dagster's compute-log helpers were expected while the run executed"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in helpers), "a helper process outlived the command"
    assert 0 < cached_vectors(settings.data_dir) < len(expected_chunks("big", docs))


@pytest.mark.slow
def test_after_ctrl_c_the_next_ingest_embeds_only_what_was_not_cached_and_lands_exactly(
    workdir, env, settings
):
    docs = workdir / "docs"
    write_large_docs(docs)
    write_sources(settings.sources_file, [{"name": "big", "kind": "local", "path": str(docs)}])
    process, _, err = start_ingest(env, workdir)
    wait_for_vectors(process, settings.data_dir, err)
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=STOP_DEADLINE_SECONDS)
    assert process.returncode == 130, err.read_text()
    kept = cached_vectors(settings.data_dir)

    again = rag_assets("ingest", env=env, timeout=600)

    assert again.returncode == 0, again.stderr
    expected = expected_chunks("big", docs)
    lines = again.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("source "))
    header, row = lines[start].split(), lines[start + 1].split()
    counts = dict(zip(header[1:], row[1:]))
    assert (counts["chunks"], counts["embedded"]) == (str(len(expected)), str(len(expected) - kept))
    assert 0 < kept < len(expected)
    stored = {i: (r["path"], r["heading"], r["text"]) for i, r in milvus_rows(settings, "big").items()}
    assert stored == expected


@pytest.mark.slow
@pytest.mark.parametrize("after_seconds", [1.0, 4.0], ids=["while_importing", "while_preparing_or_reading"])
def test_ctrl_c_at_any_moment_of_the_command_is_the_same_one_line_and_exit_130(
    workdir, env, settings, after_seconds
):
    """Wherever the signal lands (imports, checks, opening the instance, a step), the same line."""
    docs = workdir / "docs"
    write_large_docs(docs, pages=4)
    write_sources(settings.sources_file, [{"name": "big", "kind": "local", "path": str(docs)}])
    process, out, err = start_ingest(env, workdir)
    time.sleep(after_seconds)
    assert process.poll() is None, err.read_text()
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=STOP_DEADLINE_SECONDS)

    stdout, stderr = out.read_text(), err.read_text()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    assert stderr.splitlines()[-1] == INTERRUPTED.format(name="SIGINT")
    assert [line for line in stderr.splitlines() if line.startswith("rag-assets:")] == [
        INTERRUPTED.format(name="SIGINT")
    ]
