"""The Dagster instance the CLI runs on: $DAGSTER_HOME, else one under the data directory."""

from pathlib import Path

import dagster as dg
import sqlalchemy.exc
import yaml

from rag_assets.settings import Settings

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
    config_file = home / "dagster.yaml"
    if not config_file.exists():
        config_file.write_text(yaml.safe_dump(INSTANCE_CONFIG, sort_keys=False))
    return home


def cli_instance(settings: Settings) -> dg.DagsterInstance:
    """DAGSTER_HOME when set (the Dagster convention); otherwise a SQLite instance in
    data_dir/dagster_home.
    """
    home = instance_home(settings)
    if settings.dagster_home:
        instance = dg.DagsterInstance.get()
    else:
        instance = dg.DagsterInstance.from_config(str(home))
    ensure_pools(instance)
    return instance


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
