"""One Dagster instance, created once (issue 21): commands started together on a new data directory
all succeed and leave one instance that works; a damaged instance is one line and exit 2.

Before, several `rag-assets ingest` opening a new SQLite instance at once raced through Dagster's
schema creation: an alembic traceback in some, or a run storage stamped with two revisions, after
which every command crashed. rag_assets/runtime/instance.py serializes creating and opening the
instance with a lock file beside it.
"""

import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from rag_assets.errors import InstanceUnavailable
from rag_assets.runtime.instance import CREATE_LOCK, creation_lock
from rag_assets_tests.helpers import USER_ENV_UNSET, expected_chunks, milvus_rows, rag_assets, write_sources

PROCESS_DEADLINE_SECONDS = 600  # four ingests sharing two cores, their steps taking turns in the pools


def new_data_dir_env(workdir: Path) -> dict[str, str]:
    """A user's environment with a data directory that does not exist yet and no DAGSTER_HOME: the
    CLI creates its own instance in $RAG_DATA_DIR/dagster_home."""
    inherited = {k: v for k, v in os.environ.items() if k not in (*USER_ENV_UNSET, "DAGSTER_HOME")}
    return {
        **inherited,
        "RAG_DATA_DIR": str(workdir / "data"),
        "RAG_SOURCES_FILE": str(workdir / "sources.yaml"),
    }


def schema_heads(home: Path) -> dict[str, list[str]]:
    """The alembic revisions each SQLite database of the instance is stamped with (one when sound)."""
    heads = {}
    for db in sorted(home.rglob("*.db")):
        with sqlite3.connect(db) as connection:
            heads[db.relative_to(home).as_posix()] = [
                r[0] for r in connection.execute("SELECT version_num FROM alembic_version")
            ]
    return heads


@pytest.mark.slow
@pytest.mark.timeout(PROCESS_DEADLINE_SECONDS + 60)
def test_four_ingests_started_together_on_a_new_data_dir_all_succeed_on_one_instance(workdir):
    env = new_data_dir_env(workdir)
    names = [f"notes{i}" for i in range(4)]
    for name in names:
        (workdir / name).mkdir()
        (workdir / name / "page.md").write_text(
            f"# {name}\n\nThe page of {name}, ingested at the same time.\n"
        )
    write_sources(
        workdir / "sources.yaml", [{"name": n, "kind": "local", "path": str(workdir / n)} for n in names]
    )

    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "rag_assets.cli", "ingest", "--source", name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    outcomes = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=PROCESS_DEADLINE_SECONDS)
            outcomes.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()

    for code, stdout, stderr in outcomes:
        assert code == 0, stderr
        assert "Traceback" not in stdout + stderr
    home = workdir / "data" / "dagster_home"
    heads = schema_heads(home)
    assert heads and all(len(revisions) == 1 for revisions in heads.values()), heads
    with dg.DagsterInstance.from_config(str(home)) as instance:  # the instance works afterwards
        runs = instance.get_runs()
        assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert sorted(instance.get_dynamic_partitions("sources")) == names
    settings_env = {"RAG_DATA_DIR": env["RAG_DATA_DIR"], "RAG_SOURCES_FILE": env["RAG_SOURCES_FILE"]}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in settings_env.items():
            patch.setenv(key, value)
        patch.delenv("DAGSTER_HOME", raising=False)
        from rag_assets.settings import Settings

        settings = Settings.from_env()
        for name in names:
            stored = {i: (r["path"], r["heading"], r["text"]) for i, r in milvus_rows(settings, name).items()}
            assert stored == expected_chunks(name, workdir / name)


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from rag_assets.runtime.instance import cli_instance
from rag_assets.settings import Settings
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
instance = cli_instance(Settings.from_env())
print(len(instance.get_runs()), sorted(instance.event_log_storage.get_concurrency_keys()))
instance.dispose()
"""


@pytest.mark.slow
@pytest.mark.parametrize("dagster_home", [False, True], ids=["data_dir_instance", "new_dagster_home"])
def test_eight_processes_opening_a_new_instance_at_the_same_moment_all_get_one_sound_instance(
    workdir, dagster_home
):
    """The race at its narrowest: every process is ready and opens the instance when a file appears
    (before the lock, most of 4 such processes failed on this machine, every time). Also with
    DAGSTER_HOME naming a folder that does not exist yet."""
    env = new_data_dir_env(workdir)
    home = workdir / ("home" if dagster_home else "data/dagster_home")
    if dagster_home:
        env["DAGSTER_HOME"] = str(home)
    go = workdir / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    time.sleep(3)  # imports done (or nearly): they now wait for the file
    go.touch()
    outcomes = [process.communicate(timeout=120) + (process.returncode,) for process in processes]

    assert [(out.strip(), code) for out, _, code in outcomes] == [("0 ['gpu', 'milvus']", 0)] * 8, [
        err for _, err, _ in outcomes
    ]
    heads = schema_heads(home)
    assert heads and all(len(revisions) == 1 for revisions in heads.values()), heads


def test_the_creation_lock_is_waited_for_until_its_deadline_then_says_what_to_do(tmp_path):
    with open(tmp_path / CREATE_LOCK, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another command creating the instance (its own open file)
        started = time.monotonic()
        with (
            pytest.raises(InstanceUnavailable, match=r"locked by another command for over 0.3 s.*wait"),
            creation_lock(tmp_path, deadline_seconds=0.3),
        ):
            pass
        assert 0.3 <= time.monotonic() - started < 5
        fcntl.flock(held, fcntl.LOCK_UN)
    with creation_lock(tmp_path, deadline_seconds=0.3):  # released: taken at once
        pass


@pytest.mark.slow
def test_a_damaged_instance_is_one_line_with_what_to_do_and_exit_2(workdir):
    env = new_data_dir_env(workdir)
    (workdir / "docs").mkdir()
    (workdir / "docs" / "a.md").write_text("# A\n\nA page.\n")
    write_sources(workdir / "sources.yaml", [{"name": "a", "kind": "local", "path": str(workdir / "docs")}])
    home = workdir / "data" / "dagster_home"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from rag_assets.runtime.instance import cli_instance\n"
            "from rag_assets.settings import Settings\ncli_instance(Settings.from_env()).dispose()",
        ],
        env=env,
        check=True,
        timeout=120,
    )
    with sqlite3.connect(home / "history" / "runs.db") as db:  # what the race used to leave behind
        db.execute("INSERT INTO alembic_version VALUES ('5771160a95ad')")

    done = rag_assets(
        "ingest", env={k: env[k] for k in ("RAG_DATA_DIR", "RAG_SOURCES_FILE")} | {"DAGSTER_HOME": ""}
    )

    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        f"rag-assets: error: the Dagster instance in {home} cannot be opened (CommandError: Version "
        "table 'alembic_version' has more than one head present; please use get_current_heads()). If "
        "another command is using it, run this one again when it is done; if its storage is damaged, "
        f"move {home} aside (it holds Dagster's run history and metadata; the collection, the embedding "
        "cache and the artifacts stay) and run the command again to start a new one"
    ]
