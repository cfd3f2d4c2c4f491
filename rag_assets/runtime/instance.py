"""The Dagster instance the CLI runs on: $DAGSTER_HOME, else one under the data directory.

Opening an instance creates or upgrades its storage (SQLite tables, alembic revisions) when needed.
Several commands started together on a new data directory (`rag-assets ingest` twice, `ingest` and
`ui`) raced through that: one failed with an alembic traceback, or the run storage was stamped with
two schema revisions, after which every command crashed. So the folder is created and the instance
opened under an exclusive lock on `<instance folder>/.create.lock` (fcntl.flock: released by the OS
when a process dies, so a killed command never leaves it held), waited for at most
CREATE_LOCK_DEADLINE_SECONDS. A storage error of Dagster's at open is one line with what to do
(`InstanceUnavailable`), never a traceback.
"""

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import alembic.util.exc
import dagster as dg
import sqlalchemy.exc
import yaml

from rag_assets.errors import InstanceUnavailable
from rag_assets.settings import Settings

CREATE_LOCK = ".create.lock"
CREATE_LOCK_DEADLINE_SECONDS = 120.0  # creating and migrating a SQLite instance takes about a second
LOCK_POLL_SECONDS = 0.05

# The same settings as the top-level dagster.yaml (a test keeps the two equal).
INSTANCE_CONFIG = {
    "concurrency": {"pools": {"default_limit": 1, "granularity": "op"}},
    "run_monitoring": {"enabled": True, "free_slots_after_run_end_seconds": 30},
    "telemetry": {"enabled": False},
}


POOLS = ("gpu", "milvus")


def instance_home(settings: Settings) -> Path:
    """The CLI's instance folder (absolute): DAGSTER_HOME when set, else data_dir/dagster_home.

    A folder that does not exist yet is created with this project's instance settings; so is the
    dagster.yaml of data_dir/dagster_home. An existing DAGSTER_HOME is left as it is.
    """
    configured = settings.dagster_home
    home = Path(configured or settings.data_dir / "dagster_home").absolute()
    if configured and home.is_dir():
        return home
    home.mkdir(parents=True, exist_ok=True)
    with creation_lock(home):
        config_file = home / "dagster.yaml"
        if not config_file.exists():  # written whole: another command never reads half of it
            partial = config_file.with_name(f".dagster.yaml.{os.getpid()}.tmp")
            partial.write_text(yaml.safe_dump(INSTANCE_CONFIG, sort_keys=False))
            os.replace(partial, config_file)
    return home


def cli_instance(settings: Settings) -> dg.DagsterInstance:
    """DAGSTER_HOME when set (the Dagster convention); otherwise a SQLite instance in
    data_dir/dagster_home. Created, upgraded and given its pools by one process at a time.
    """
    home = instance_home(settings)
    with creation_lock(home), storage_errors_explained(home):
        instance = (
            dg.DagsterInstance.get() if settings.dagster_home else dg.DagsterInstance.from_config(str(home))
        )
        ensure_pools(instance)
    return instance


@contextlib.contextmanager
def creation_lock(home: Path, deadline_seconds: float = CREATE_LOCK_DEADLINE_SECONDS) -> Iterator[None]:
    """Hold the instance folder's creation lock (a folder that cannot hold the lock file, e.g. a
    read-only DAGSTER_HOME, is opened without it: nothing can be created there either)."""
    try:
        lock = open(home / CREATE_LOCK, "a+")  # noqa: SIM115 - held until the block ends
    except OSError:
        lock = None
    if lock is None:
        yield
        return
    with lock:
        until = time.monotonic() + deadline_seconds
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > until:
                    raise InstanceUnavailable(
                        f"the Dagster instance in {home} has been locked by another command for over "
                        f"{deadline_seconds:g} s while it creates or upgrades the instance: wait for it "
                        "to finish, then run the command again"
                    ) from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, alembic.util.exc.CommandError)


@contextlib.contextmanager
def storage_errors_explained(home: Path) -> Iterator[None]:
    """A storage error of Dagster's while the instance opens, as one line saying what to do."""
    try:
        yield
    except STORAGE_ERRORS as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InstanceUnavailable(
            f"the Dagster instance in {home} cannot be opened ({type(error).__name__}: {first}). If "
            "another command is using it, run this one again when it is done; if its storage is "
            f"damaged, move {home} aside (it holds Dagster's run history and metadata; the collection, "
            "the embedding cache and the artifacts stay) and run the command again to start a new one"
        ) from None


def ensure_pools(instance: dg.DagsterInstance) -> None:
    """Create the pools with their limit before any run claims a slot.

    Dagster creates a pool lazily from `default_limit` on first use; two runs starting together on
    a new instance can race through that and both get a slot. An explicit limit closes the gap.
    """
    storage = instance.event_log_storage
    limit = INSTANCE_CONFIG["concurrency"]["pools"]["default_limit"]
    for pool in POOLS:
        if pool in storage.get_concurrency_keys():
            continue
        try:
            storage.set_concurrency_slots(pool, limit)
        except sqlalchemy.exc.IntegrityError:
            pass  # another process created it between our check and our insert: same limit, fine
