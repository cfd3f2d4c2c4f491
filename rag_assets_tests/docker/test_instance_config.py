"""docker/dagster.yaml, workspace.yaml and celery.yaml: accepted by Dagster with the compose environment."""

import importlib

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import process_workspace_config

from rag_assets_tests.docker.deployment import DOCKER_DIR, REPO, deployed_compose

DOCKER_INSTANCE = DOCKER_DIR / "dagster.yaml"


@pytest.fixture
def compose_env(monkeypatch) -> dict[str, str]:
    """The environment docker/compose.yaml gives the code location, set in this process."""
    environment = deployed_compose()["services"]["code_location"]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def docker_instance() -> dict:
    return yaml.safe_load(DOCKER_INSTANCE.read_text())


def test_the_docker_instance_config_is_valid_for_dagster(compose_env):
    config, custom_class = dagster_instance_config(str(DOCKER_DIR), "dagster.yaml")
    assert custom_class is None
    assert set(config) >= {"storage", "run_coordinator", "concurrency", "run_monitoring"}


def test_the_docker_instance_has_the_pools_of_the_local_instance():
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    docker = docker_instance()
    assert docker["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert docker["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_the_docker_instance_frees_the_slots_of_dead_runs_and_sends_no_telemetry():
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())
    docker = docker_instance()
    assert docker["run_monitoring"] == local["run_monitoring"]
    assert docker["run_monitoring"]["enabled"] is True
    assert docker["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert docker["telemetry"] == {"enabled": False}


def test_the_docker_instance_stores_runs_in_the_compose_postgres(compose_env):
    from dagster_postgres.utils import pg_config, pg_url_from_config

    storage = docker_instance()["storage"]["postgres"]
    connection = {k: v for k, v in storage["postgres_db"].items() if k != "scheme"}
    assert all(set(value) == {"env"} for value in connection.values())
    result = process_config(pg_config(), storage)
    assert result.success, result.errors
    url = pg_url_from_config(result.value)
    expected = (
        f"postgresql+psycopg2://{compose_env['DAGSTER_POSTGRES_USER']}:{compose_env['DAGSTER_POSTGRES_PASSWORD']}"
        f"@postgres:5432/{compose_env['DAGSTER_POSTGRES_DB']}"
    )
    assert url == expected


def test_the_docker_instance_url_loads_the_driver_dagster_postgres_installs(compose_env):
    # SQLAlchemy 2.1 maps a bare `postgresql://` to psycopg 3; dagster-postgres depends on psycopg2.
    import sqlalchemy
    from dagster_postgres.utils import pg_config, pg_url_from_config

    url = pg_url_from_config(process_config(pg_config(), docker_instance()["storage"]["postgres"]).value)
    engine = sqlalchemy.create_engine(url)  # imports the DBAPI module; connects to nothing
    assert engine.dialect.driver == "psycopg2"
    engine.dispose()


def test_the_docker_instance_queues_runs_and_bounds_how_many_run_at_once():
    assert docker_instance()["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert docker_instance()["concurrency"]["runs"]["max_concurrent_runs"] >= 1


@pytest.mark.parametrize("key", ["run_coordinator", "local_artifact_storage", "compute_logs"])
def test_each_configured_class_exists_and_accepts_its_config(key):
    entry = docker_instance()[key]
    cls = getattr(importlib.import_module(entry["module"]), entry["class"])
    result = process_config(cls.config_type(), entry.get("config", {}))
    assert result.success, result.errors


def test_the_docker_workspace_is_valid_for_dagster():
    result = process_workspace_config(yaml.safe_load((DOCKER_DIR / "workspace.yaml").read_text()))
    assert result.success, result.errors


def test_the_celery_config_is_valid_executor_config_and_points_at_redis(compose_env):
    cli = pytest.importorskip(
        "dagster_celery.cli", reason="dagster-celery is installed in the image, not here"
    )
    config = cli.get_validated_config(str(DOCKER_DIR / "celery.yaml"))
    assert config["broker"] == compose_env["DAGSTER_CELERY_BROKER_URL"]
    assert config["backend"] == compose_env["DAGSTER_CELERY_BACKEND_URL"]
