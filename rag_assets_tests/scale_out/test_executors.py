"""The scale-out jobs' executors, resolved as Dagster and dagster-celery / dagster-k8s resolve them.

Celery: the run and the workers read the broker from the same place, and only the embedding step
is routed to the `gpu` queue. Kubernetes: the pod each step would get, built by dagster-k8s from
the executor config and the step's `dagster-k8s/config` tag, the way its step handler merges them.
"""

from pathlib import Path

import pytest
import yaml
from dagster._core.execution.api import create_execution_plan
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster_celery.cli import get_config_value_from_yaml
from dagster_celery.defaults import task_default_queue
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from rag_assets.definitions import INGEST_CELERY_JOB, INGEST_JOB, INGEST_K8S_JOB, defs
from rag_assets.executors import (
    CELERY_BACKEND_ENV,
    CELERY_BROKER_ENV,
    CELERY_CONFIG,
    CELERY_QUEUE_TAG,
    CPU_QUEUE,
    CPU_STEP_RESOURCES,
    GPU_NODE_SELECTOR,
    GPU_QUEUE,
    WORKER_INCLUDES,
    celery_integration_executor,
    celery_worker_command,
    k8s_integration_executor,
    resolved_config,
)

DOCKER_DIR = Path(__file__).parents[2] / "docker"
GPU_STEP = "embeddings"
GPU = "nvidia.com/gpu"


@pytest.fixture
def celery_env(monkeypatch):
    monkeypatch.setenv(CELERY_BROKER_ENV, "redis://broker.example:6379/0")
    monkeypatch.setenv(CELERY_BACKEND_ENV, "redis://broker.example:6379/1")


def steps_of(job_name: str) -> list:
    return create_execution_plan(defs.resolve_job_def(job_name)).get_all_steps_in_topo_order()


def executor_config(job_name: str) -> dict:
    """The executor config a run of the job gets with no run config: what the UI's Materialize uses."""
    return ResolvedRunConfig.build(defs.resolve_job_def(job_name), {}).execution.execution_engine_config


def integration_config(job_name: str) -> dict:
    """What the job's executor hands dagster-celery / dagster-k8s when a run starts (with no run config)."""
    assert executor_config(job_name) == {}  # nothing to configure at launch: Materialize works as is
    load = {INGEST_CELERY_JOB: celery_integration_executor, INGEST_K8S_JOB: k8s_integration_executor}
    return resolved_config(load[job_name]())


# --- Celery ---


def test_the_scale_out_jobs_run_the_same_steps_as_ingest_job(celery_env):
    keys = [s.key for s in steps_of(INGEST_JOB)]
    assert [s.key for s in steps_of(INGEST_CELERY_JOB)] == keys and [
        s.key for s in steps_of(INGEST_K8S_JOB)
    ] == keys
    assert defs.resolve_job_def(INGEST_JOB).executor_def.name == "in_process"


def test_a_celery_run_and_its_workers_read_the_broker_from_the_same_variables(celery_env):
    assert get_config_value_from_yaml(str(DOCKER_DIR / "celery.yaml")) == CELERY_CONFIG
    config = integration_config(INGEST_CELERY_JOB)
    assert (
        config["broker"] == "redis://broker.example:6379/0"
        and config["backend"] == "redis://broker.example:6379/1"
    )


def test_only_the_embedding_step_goes_to_the_gpu_queue(celery_env):
    queues = {s.key: s.tags.get(DAGSTER_CELERY_QUEUE_TAG, CPU_QUEUE) for s in steps_of(INGEST_CELERY_JOB)}
    assert queues.pop(GPU_STEP) == GPU_QUEUE == "gpu"
    assert set(queues.values()) == {CPU_QUEUE} == {"dagster"}


def test_the_queue_names_are_dagster_celerys_own():
    assert CELERY_QUEUE_TAG == DAGSTER_CELERY_QUEUE_TAG and task_default_queue == CPU_QUEUE


def test_the_worker_commands_listen_on_their_queue_and_the_gpu_worker_runs_one_task_at_a_time():
    gpu = celery_worker_command(GPU_QUEUE, "celery.yaml", name="gpu")
    cpu = celery_worker_command(CPU_QUEUE, "celery.yaml", name="cpu")
    assert gpu[:5] == cpu[:5] == ["dagster-celery", "worker", "start", "-A", "dagster_celery.app"]
    assert gpu[gpu.index("-q") + 1] == "gpu" and gpu[gpu.index("--") + 1 :] == ["--concurrency=1"]
    assert (
        cpu[cpu.index("-q") + 1] == "dagster" and "--" not in cpu
    )  # Celery's default: a pool process per CPU
    for command in (gpu, cpu):
        assert command[command.index("-i") + 1] == ",".join(WORKER_INCLUDES) == "rag_assets.executors"


def test_the_compose_workers_run_the_documented_commands():
    services = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text())["services"]
    for service, queue in (("cpu_worker", CPU_QUEUE), ("gpu_worker", GPU_QUEUE)):
        command = services[service]["command"]
        name, config = command[command.index("-n") + 1], command[command.index("-y") + 1]
        assert command == celery_worker_command(queue, config, name=name), service


# --- Kubernetes ---


def step_pods() -> dict:
    """Step key -> the V1PodSpec dagster-k8s would submit for that step of ingest_k8s_job.

    The merge order is K8sStepHandler's: executor config (`step_k8s_config`), then the step's
    `dagster-k8s/config` tag, then the executor's `per_step_k8s_config` for the op. (The run's own
    container context, from the Helm deployment, comes first and is empty here.)
    """
    config = integration_config(INGEST_K8S_JOB)
    pods = {}
    for step in steps_of(INGEST_K8S_JOB):
        context = K8sContainerContext(
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(config["step_k8s_config"])
        )
        context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step.tags)))
        per_step = config["per_step_k8s_config"].get(step.op_name, {})
        context = context.merge(
            K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step))
        )
        job = construct_dagster_k8s_job(
            DagsterK8sJobConfig(job_image="rag-assets:cuda", dagster_home="/opt/dagster/home"),
            args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{step.key.replace('_', '-')}",
            user_defined_k8s_config=context.run_k8s_config,
        )
        pods[step.key] = job.spec.template.spec
    return pods


def test_only_the_embedding_pod_gets_a_gpu_and_a_gpu_node_every_other_pod_cpu_requests():
    pods = step_pods()
    gpu_pod = pods.pop(GPU_STEP)
    [container] = gpu_pod.containers
    assert container.resources.limits == {GPU: "1"}
    assert gpu_pod.node_selector == GPU_NODE_SELECTOR
    assert [(t.key, t.operator, t.effect) for t in gpu_pod.tolerations] == [(GPU, "Exists", "NoSchedule")]
    assert pods and {"raw_pages", "chunks", "milvus_collection"} <= set(pods)
    for key, pod in pods.items():
        [container] = pod.containers
        assert container.resources.requests == CPU_STEP_RESOURCES["requests"], key
        assert not container.resources.limits and not pod.node_selector and not pod.tolerations, key


def test_the_embedding_pod_asks_for_more_than_a_cpu_step_and_keeps_its_gpu_limit_from_the_asset_tag():
    [container] = step_pods()[GPU_STEP].containers
    cpu_requests = CPU_STEP_RESOURCES["requests"]
    assert container.resources.requests["cpu"] > cpu_requests["cpu"]
    tag = get_user_defined_k8s_config(next(s for s in steps_of(INGEST_K8S_JOB) if s.key == GPU_STEP).tags)
    assert tag.container_config["resources"]["limits"] == {GPU: "1"}
