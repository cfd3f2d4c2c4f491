"""docker/compose.yaml: valid Compose, and its services, variables and ports agree with the project.

No Docker engine runs in the test suite: the file is validated against the Compose Specification
schema (vendored by the `check-jsonschema` package) and cross-checked with docker/.env.example,
docker/dagster.yaml, docker/workspace.yaml, docker/celery.yaml and the variables rag_assets reads.
"""

import json
import re
import tomllib
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from rag_assets_tests.docker.deployment import (
    DOCKER_DIR,
    REPO,
    MissingVariable,
    argv,
    bind_mounts,
    compose,
    compose_references,
    container_ports,
    deployed_compose,
    dockerfile_env,
    env_example,
    named_volume_mounts,
    option,
    options,
    project_services,
    raw_compose,
)

# How rag_assets reads its environment: `env.get("X"`, `os.environ.get("X"`, `os.environ["X"]`,
# `os.getenv("X"`, `EnvVar("X")`, and fields that name a variable (`token_env: str = "X"`).
_READS = re.compile(
    r"""(?:env\.get|environ\.get|getenv|EnvVar)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
    r"""|_env\s*(?::\s*str\s*)?=\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# The variables the issue lists; the scan above must find at least these.
KNOWN_PROJECT_VARIABLES = {
    "RAG_DATA_DIR", "RAG_SOURCES_FILE", "MILVUS_URI", "MILVUS_TOKEN", "MILVUS_COLLECTION",
    "EMBEDDING_MODEL", "EMBEDDING_DEVICE", "EMBEDDING_PRECISION", "RAG_POLL_INTERVAL_SECONDS",
    "GITHUB_TOKEN", "DAGSTER_HOME",
}  # fmt: skip
STATEFUL_DATA_PATHS = {
    "etcd": "/etcd",
    "minio": "/minio_data",
    "milvus": "/var/lib/milvus",
    "postgres": "/var/lib/postgresql/data",
}


def variables_the_project_reads() -> set[str]:
    """What the product reads (rag_assets/testing/ is the tests' own machinery, never deployed)."""
    found = set()
    for path in (REPO / "rag_assets").rglob("*.py"):
        if "testing" in path.relative_to(REPO / "rag_assets").parts:
            continue
        for match in _READS.finditer(path.read_text()):
            found.add(next(group for group in match.groups() if group))
    return found


def env_references_in(path: Path) -> set[str]:
    """The `{env: VAR}` sources of a Dagster YAML file."""

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                yield node["env"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return set(walk(yaml.safe_load(path.read_text())))


@pytest.fixture(scope="module")
def deployed() -> dict:
    return deployed_compose()


@pytest.fixture(scope="module")
def services(deployed) -> dict[str, dict]:
    return deployed["services"]


# --- The Compose Specification ---


def compose_spec_schema() -> dict:
    pytest.importorskip(
        "jsonschema", reason="jsonschema is installed with check-jsonschema (test dependency)"
    )
    vendor = pytest.importorskip(
        "check_jsonschema.builtin_schemas.vendor",
        reason="the Compose Specification schema ships in check-jsonschema: pip install check-jsonschema",
    )
    return json.loads((resources.files(vendor) / "compose-spec.json").read_text())


@pytest.mark.parametrize("resolved", [False, True], ids=["as-written", "interpolated-with-env-example"])
def test_compose_file_is_valid_against_the_compose_specification(resolved):
    import jsonschema

    schema = compose_spec_schema()
    document = deployed_compose() if resolved else raw_compose()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []


def test_the_schema_check_rejects_a_misspelt_service_key():
    import jsonschema

    schema = compose_spec_schema()
    broken = deployed_compose()
    broken["services"]["webserver"]["healthckeck"] = broken["services"]["webserver"].pop("healthcheck")
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


# --- Variables: compose.yaml <-> .env.example <-> rag_assets ---


def test_every_variable_compose_interpolates_is_set_in_env_example():
    referenced = {ref.name for ref in compose_references()}
    assert referenced - set(env_example().assigned) == set()


def test_every_variable_env_example_sets_is_used_by_compose():
    referenced = {ref.name for ref in compose_references()}
    assert set(env_example().assigned) - referenced == set()


def test_env_example_values_are_the_compose_defaults_except_for_secrets():
    example = env_example().assigned
    for ref in compose_references():
        if ref.default is not None:
            assert example[ref.name] == ref.default, ref.name


def test_passwords_have_no_default_and_compose_refuses_to_start_without_them():
    refs = [ref for ref in compose_references() if "PASSWORD" in ref.name]
    assert refs and all(ref.required for ref in refs)
    assert all(env_example().assigned[ref.name] for ref in refs)
    without = {k: v for k, v in env_example().assigned.items() if "PASSWORD" not in k}
    with pytest.raises(MissingVariable):
        compose(without)


def test_the_scan_finds_every_variable_the_issue_lists():
    assert variables_the_project_reads() >= KNOWN_PROJECT_VARIABLES


def test_env_example_documents_every_variable_the_project_reads():
    assert variables_the_project_reads() - env_example().names == set()


def test_every_project_container_gets_every_variable_the_project_reads(services):
    for name, service in project_services(services).items():
        assert variables_the_project_reads() - set(service["environment"]) == set(), name


def test_variables_env_example_only_documents_have_the_values_compose_sets(services):
    for name, service in project_services(services).items():
        for variable, value in env_example().documented.items():
            assert service["environment"][variable] == value, (name, variable)


def test_every_service_running_project_code_has_the_same_environment_but_the_gpu_device(services):
    project = project_services(services)
    assert {"code_location", "webserver", "daemon", "cpu_worker", "gpu_worker"} <= set(project)
    reference = project["code_location"]["environment"]
    for name, service in project.items():
        expected = dict(reference, EMBEDDING_DEVICE="cuda") if name == "gpu_worker" else reference
        assert service["environment"] == expected, name


def test_project_containers_set_every_variable_the_dagster_and_celery_configs_read(services):
    needed = env_references_in(DOCKER_DIR / "dagster.yaml") | env_references_in(DOCKER_DIR / "celery.yaml")
    assert {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_PASSWORD", "DAGSTER_CELERY_BROKER_URL"} <= needed
    for name, service in project_services(services).items():
        environment = service["environment"]
        assert {v for v in needed if not environment.get(v)} == set(), name


def test_the_dagster_home_in_compose_is_where_the_dockerfile_puts_dagster_yaml(services):
    for service in project_services(services).values():
        assert service["environment"]["DAGSTER_HOME"] == dockerfile_env()["DAGSTER_HOME"]
        assert service["environment"]["RAG_DATA_DIR"] == dockerfile_env()["RAG_DATA_DIR"]


# --- Ports and addresses ---


def test_milvus_uri_points_at_the_milvus_service_on_its_grpc_port(services):
    uri = urlparse(services["code_location"]["environment"]["MILVUS_URI"])
    assert uri.hostname == "milvus" and uri.hostname in services
    assert uri.port == 19530
    assert uri.port in container_ports(services["milvus"])


def test_the_instance_postgres_settings_point_at_the_postgres_service(services):
    env = services["code_location"]["environment"]
    postgres = services["postgres"]
    assert env["DAGSTER_POSTGRES_HOST"] == "postgres"
    assert int(env["DAGSTER_POSTGRES_PORT"]) in container_ports(postgres)
    assert env["DAGSTER_POSTGRES_USER"] == postgres["environment"]["POSTGRES_USER"]
    assert env["DAGSTER_POSTGRES_PASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]
    assert env["DAGSTER_POSTGRES_DB"] == postgres["environment"]["POSTGRES_DB"]
    assert option(argv(postgres["healthcheck"]["test"]), "-p") == env["DAGSTER_POSTGRES_PORT"]


def test_the_celery_broker_and_backend_are_the_redis_service(services):
    env = services["code_location"]["environment"]
    for variable in ("DAGSTER_CELERY_BROKER_URL", "DAGSTER_CELERY_BACKEND_URL"):
        url = urlparse(env[variable])
        assert (url.scheme, url.hostname) == ("redis", "redis"), variable
        assert url.port in container_ports(services["redis"]), variable


def test_milvus_finds_etcd_and_minio_on_the_ports_they_listen_on(services):
    milvus = services["milvus"]["environment"]
    etcd_host, etcd_port = milvus["ETCD_ENDPOINTS"].split(":")
    minio_host, minio_port = milvus["MINIO_ADDRESS"].split(":")
    assert etcd_host == "etcd" and int(etcd_port) in container_ports(services["etcd"])
    assert minio_host == "minio" and int(minio_port) in container_ports(services["minio"])
    assert milvus["MINIO_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"]
    assert milvus["MINIO_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"]


def test_the_webserver_publishes_port_3000_where_it_listens(services):
    webserver = services["webserver"]
    assert option(argv(webserver["command"]), "-p", "--port") == "3000"
    assert webserver["ports"] == ["3000:3000"]
    assert "localhost:3000/" in " ".join(argv(webserver["healthcheck"]["test"]))


def test_the_code_server_listens_where_the_workspace_and_its_healthcheck_look(services):
    workspace = yaml.safe_load((DOCKER_DIR / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    grpc = entry["grpc_server"]
    server = services["code_location"]
    port = option(argv(server["command"]), "-p", "--port")
    assert grpc["host"] == "code_location" and grpc["host"] in services
    assert grpc["port"] == int(port) == 4000
    assert int(port) in container_ports(server)
    assert option(argv(server["healthcheck"]["test"]), "-p", "--port") == port


def test_the_code_server_serves_the_module_and_location_name_of_pyproject(services):
    dagster = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    workspace = yaml.safe_load((DOCKER_DIR / "workspace.yaml").read_text())
    assert option(argv(services["code_location"]["command"]), "-m", "--module-name") == dagster["module_name"]
    assert workspace["load_from"][0]["grpc_server"]["location_name"] == dagster["code_location_name"]


def test_the_webserver_and_the_daemon_load_the_docker_workspace(services):
    for name in ("webserver", "daemon"):
        assert (
            option(argv(services[name]["command"]), "-w", "--workspace")
            == "/opt/dagster/app/docker/workspace.yaml"
        )


# --- Workers ---


def test_the_gpu_worker_reserves_one_nvidia_gpu(services):
    devices = services["gpu_worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["gpu_worker"]["environment"]["EMBEDDING_DEVICE"] == "cuda"


def test_the_gpu_worker_takes_only_the_gpu_queue_one_task_at_a_time(services):
    args = argv(services["gpu_worker"]["command"])
    assert args[:3] == ["dagster-celery", "worker", "start"]
    assert options(args, "-q") == ["gpu"]
    celery_args = args[args.index("--") + 1 :]
    assert celery_args == ["--concurrency=1"]


def test_the_gpu_worker_runs_the_cuda_image_and_every_other_process_the_cpu_image(services):
    raw = raw_compose()["services"]
    assert raw["gpu_worker"]["image"].endswith(":cuda")
    assert "cu1" in services["gpu_worker"]["build"]["args"]["TORCH_INDEX"]
    for name, service in project_services(raw).items():
        if name != "gpu_worker":
            assert service["image"].endswith(":cpu"), name
    assert services["code_location"]["build"]["args"]["TORCH_INDEX"].endswith("/whl/cpu")


def test_the_cpu_worker_takes_the_queue_celery_steps_go_to_by_default(services):
    # dagster-celery sends a step without a `dagster-celery/queue` tag to its task_default_queue,
    # "dagster" (dagster_celery.defaults), not to Celery's own "celery" or a "default" queue.
    assert options(argv(services["cpu_worker"]["command"]), "-q") == ["dagster"]


def test_both_workers_read_the_celery_config_the_image_ships(services):
    for name in ("cpu_worker", "gpu_worker"):
        assert option(argv(services[name]["command"]), "-y") == "/opt/dagster/app/docker/celery.yaml"
        assert option(argv(services[name]["command"]), "-A") == "dagster_celery.app"


def test_each_worker_healthcheck_pings_that_worker_by_name(services):
    for name in ("cpu_worker", "gpu_worker"):
        worker = option(argv(services[name]["command"]), "-n")
        check = argv(services[name]["healthcheck"]["test"])
        assert check[:2] == ["celery", "-A"] and "ping" in check
        assert option(check, "-d") == f"{worker}@${{HOSTNAME}}"
        assert option(check, "-b") == "${DAGSTER_CELERY_BROKER_URL}"


# --- Health, order and state ---


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), name


def test_services_wait_for_dependencies_that_are_healthy_or_done(services):
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
            else:
                assert spec["condition"] == "service_completed_successfully", (name, dependency)
                assert services[dependency]["restart"] == "no", (name, dependency)


def test_milvus_starts_after_etcd_and_minio_are_healthy(services):
    assert services["milvus"]["depends_on"] == {
        "etcd": {"condition": "service_healthy"},
        "minio": {"condition": "service_healthy"},
    }


def test_the_instance_schema_is_created_once_before_any_dagster_process_starts(services):
    assert argv(services["instance_init"]["command"]) == ["dagster", "instance", "migrate"]
    for name in ("code_location", "cpu_worker", "gpu_worker"):
        assert services[name]["depends_on"]["instance_init"] == {
            "condition": "service_completed_successfully"
        }
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"] == {"code_location": {"condition": "service_healthy"}}


def test_stateful_services_keep_their_data_in_named_volumes(deployed, services):
    for name, path in STATEFUL_DATA_PATHS.items():
        assert path in named_volume_mounts(services[name]), name
    used = {volume for service in services.values() for volume in named_volume_mounts(service).values()}
    assert used == set(deployed["volumes"])


def test_every_project_container_shares_the_data_and_storage_volumes(services):
    dagster_yaml = yaml.safe_load((DOCKER_DIR / "dagster.yaml").read_text())
    storage_dir = dagster_yaml["local_artifact_storage"]["config"]["base_dir"]
    assert dagster_yaml["compute_logs"]["config"]["base_dir"].startswith(storage_dir + "/")
    for name, service in project_services(services).items():
        mounts = named_volume_mounts(service)
        assert mounts[service["environment"]["RAG_DATA_DIR"]] == "rag_data", name
        assert mounts[storage_dir] == "dagster_storage", name


# --- Where steps run, and the sources from the host ---


def test_every_dagster_process_runs_its_steps_on_celery_the_embedding_step_on_the_gpu_worker(services):
    from rag_assets.executors import GPU_QUEUE
    from rag_assets.settings import Settings

    for name, service in project_services(services).items():
        assert Settings.from_env(service["environment"]).executor == "celery", name
    assert options(argv(services["gpu_worker"]["command"]), "-q") == [GPU_QUEUE]


def test_the_hosts_sources_folder_is_mounted_read_only_where_the_sources_file_is(services):
    sources_file = Path(services["code_location"]["environment"]["RAG_SOURCES_FILE"])
    for name, service in project_services(services).items():
        assert service["environment"]["RAG_SOURCES_FILE"] == str(sources_file), name
        host, mode = bind_mounts(service)[str(sources_file.parent)]
        assert (host, mode) == ("./sources", "ro"), name
    # Compose resolves a relative host path against the compose file's folder.
    assert (DOCKER_DIR / "sources" / sources_file.name).is_file()


def test_the_mounted_sources_file_is_valid_and_names_only_paths_a_container_has(services):
    from rag_assets.sources import load_sources

    host_dir = DOCKER_DIR / "sources"
    sources = load_sources(host_dir / "sources.yaml")
    assert sources
    mount = Path(services["code_location"]["environment"]["RAG_SOURCES_FILE"]).parent
    for source in (s for s in sources if s.kind == "local"):
        path = Path(source.path)
        if path.is_relative_to(host_dir.resolve()):  # a folder beside the file: in the mount
            continue
        # Otherwise a folder the image ships (the bundled docs under /opt/dagster/app).
        assert path.is_relative_to("/opt/dagster/app/rag_assets"), source
        assert (REPO / path.relative_to("/opt/dagster/app")).is_dir(), source
    assert not mount.is_relative_to("/opt/dagster/app")  # the image's own files stay visible
