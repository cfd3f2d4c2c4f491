"""Executors that spread one run's steps over workers: Celery queues, or one Kubernetes Job per step.

Where a step may run is declared on the asset (the embedding step's op tags, `GPU_STEP_TAGS`);
the job's executor carries it out, and executors that do not know a tag ignore it. So the same
graph runs in one process (`ingest_job`), on Celery workers (`ingest_celery_job`) or as Kubernetes
pods (`ingest_k8s_job`), and the pools `gpu` and `milvus` (limit 1, instance-wide) hold in all three.
`RAG_EXECUTOR` (`executor_for`) makes one of them the default of every job, sensor and schedule.

dagster-celery and dagster-k8s are extras (`rag_assets[celery]`, `rag_assets[k8s]`): this module
imports neither when it loads. Each is imported when a run on its executor starts, and a missing
one fails in one line that names the extra.
"""

import importlib.util
import multiprocessing
import sys
from collections.abc import Callable

import dagster as dg
from dagster._core.definitions.executor_definition import multiple_process_executor_requirements

from rag_assets.assets.embeddings import GPU_STEP_TAGS, embeddings

CELERY_BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"
CELERY_BACKEND_ENV = "DAGSTER_CELERY_BACKEND_URL"
CELERY_QUEUE_TAG = "dagster-celery/queue"  # dagster_celery.tags.DAGSTER_CELERY_QUEUE_TAG
CPU_QUEUE = "dagster"  # dagster_celery.defaults.task_default_queue: every step without a queue tag
GPU_QUEUE = GPU_STEP_TAGS[CELERY_QUEUE_TAG]  # "gpu": the embedding step

# RAG_EXECUTOR value -> (executor name, the module it needs, the extra that installs it).
IN_PROCESS, CELERY, K8S = "in_process", "celery", "k8s"
EXTRAS = {CELERY: ("dagster_celery", "celery"), K8S: ("dagster_k8s", "k8s")}

# The `execution.config` block of docker/celery.yaml, which the workers read (`-y`). A run and its
# workers meet only at the broker, so both take it from the same variables (a test keeps them equal).
# The variables are read when a run starts, not when the code location loads.
CELERY_CONFIG = {"broker": {"env": CELERY_BROKER_ENV}, "backend": {"env": CELERY_BACKEND_ENV}}

EMBEDDING_STEP = embeddings.op.name
# Every step pod asks for this much; no CPU or memory limit, because `chunks` starts one process
# per CPU it sees and a limit would throttle or OOM-kill it.
CPU_STEP_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}}
# The embedding pod: the GPU limit comes from the asset's own `dagster-k8s/config` tag; here it
# gets more host memory (torch, the model, pinned batches) and a place on a GPU node: the label
# the NVIDIA GPU operator (GPU feature discovery) sets, and the taint GPU node pools usually carry.
GPU_STEP_RESOURCES = {"requests": {"cpu": "2", "memory": "8Gi"}}
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


# Celery options of the two workers (after `--` in `dagster-celery worker start`): the gpu worker
# runs one task at a time, so one model is on the GPU. The cpu worker keeps Celery's default, one
# pool process per CPU; pools `gpu` and `milvus` still bound what runs at once across all workers.
WORKER_CELERY_OPTIONS = {CPU_QUEUE: (), GPU_QUEUE: ("--concurrency=1",)}
# Imported by every worker before it forks its pool (`-i`): registers `allow_child_processes`.
WORKER_INCLUDES = ("rag_assets.executors",)


def celery_worker_command(
    queue: str, config_yaml: str, *, name: str, extra: tuple[str, ...] = ()
) -> list[str]:
    """The command that starts the worker for `queue` (`dagster` or `gpu`), as documented."""
    includes = [arg for module in WORKER_INCLUDES for arg in ("-i", module)]
    options = [*WORKER_CELERY_OPTIONS[queue], *extra]
    command = [
        "dagster-celery",
        "worker",
        "start",
        "-A",
        "dagster_celery.app",
        "-y",
        config_yaml,
        "-n",
        name,
        "-q",
        queue,
    ]
    return [*command, *includes, *(["--", *options] if options else [])]


def allow_child_processes(**_) -> None:
    """Let a step start processes of its own in a Celery pool process, as under every other executor.

    Celery's pool (billiard) registers its daemonic process object as multiprocessing's current
    process, with billiard's authkey. multiprocessing refuses to start children from a daemonic
    process ("daemonic processes are not allowed to have children") and will not pickle billiard's
    authkey for a spawned child, so `chunks`, which chunks a large source in a spawn process pool,
    would fail on the cpu worker. Only the pool process's own record changes; the worker's record
    of it, which decides how the worker stops it, stays as it was.
    """
    process = multiprocessing.current_process()
    process.daemon = False
    process._config["authkey"] = multiprocessing.process.AuthenticationString(process.authkey)


def celery_executor_from_env() -> dg.ExecutorDefinition:
    """The Celery executor on the broker and result backend named by DAGSTER_CELERY_*_URL.

    Steps go to the queue their `dagster-celery/queue` tag names (`gpu` for the embedding step),
    all others to `dagster`. Nothing to configure at launch, so the UI's Materialize works as is.
    """
    return deferred_executor(CELERY, celery_integration_executor)


def celery_integration_executor() -> dg.ExecutorDefinition:
    """dagster-celery's executor, configured with CELERY_CONFIG (imports dagster-celery)."""
    return require(CELERY).celery_executor.configured(CELERY_CONFIG, name=CELERY)


def k8s_executor_config(
    *,
    gpu_node_selector: dict[str, str] | None = None,
    gpu_tolerations: list[dict[str, str]] | None = None,
) -> dict:
    """`k8s_job_executor` config: CPU requests on every step pod, GPU placement for the embedding pod."""
    gpu_pod = {
        "node_selector": dict(GPU_NODE_SELECTOR if gpu_node_selector is None else gpu_node_selector),
        "tolerations": list(GPU_TOLERATIONS if gpu_tolerations is None else gpu_tolerations),
    }
    return {
        "step_k8s_config": {"container_config": {"resources": CPU_STEP_RESOURCES}},
        "per_step_k8s_config": {
            EMBEDDING_STEP: {
                "container_config": {"resources": GPU_STEP_RESOURCES},
                "pod_spec_config": gpu_pod,
            },
        },
    }


def k8s_executor(**placement) -> dg.ExecutorDefinition:
    """`k8s_job_executor`, one Kubernetes Job per step, configured by `k8s_executor_config(**placement)`.

    Image, namespace, env and volumes come from the code location's deployment (Helm
    `includeConfigInLaunchedRuns`), exactly as for the run pod.
    """
    return deferred_executor(K8S, lambda: k8s_integration_executor(**placement))


def k8s_integration_executor(**placement) -> dg.ExecutorDefinition:
    """dagster-k8s's `k8s_job_executor`, configured by `k8s_executor_config(**placement)` (imports it)."""
    return require(K8S).k8s_job_executor.configured(k8s_executor_config(**placement), name=K8S)


def executor_for(name: str) -> dg.ExecutorDefinition:
    """The executor `RAG_EXECUTOR=name` makes the default of every job: `in_process`, `celery` or `k8s`."""
    if name == IN_PROCESS:
        return dg.in_process_executor
    module, extra = EXTRAS[name]
    if importlib.util.find_spec(module) is None:  # fail when the code location loads, not at the first run
        raise ImportError(missing_extra(name))
    return celery_executor_from_env() if name == CELERY else k8s_executor()


def missing_extra(name: str) -> str:
    module, extra = EXTRAS[name]
    return f"the {name} executor needs {module}: pip install 'rag_assets[{extra}]'"


def require(name: str):
    """The integration module of executor `name`, or an ImportError in one line naming its extra."""
    module, _ = EXTRAS[name]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(missing_extra(name)) from None


def deferred_executor(name: str, load: Callable[[], dg.ExecutorDefinition]) -> dg.ExecutorDefinition:
    """An executor named `name` that imports its integration only when a run on it starts.

    `load` returns the integration's executor, fully configured; when the run starts, its config is
    resolved (environment variables read then, as before) and its executor built from it. Like the
    integrations' own, it needs a reconstructable job and a persistent instance.
    """

    @dg.executor(name=name, requirements=multiple_process_executor_requirements())
    def _deferred(init_context: dg.InitExecutorContext):
        executor_def = load()
        return executor_def.executor_creation_fn(
            dg.InitExecutorContext(
                job=init_context.job,
                executor_def=executor_def,
                executor_config=resolved_config(executor_def),
                instance=init_context.instance,
            )
        )

    return _deferred


def resolved_config(executor_def: dg.ExecutorDefinition) -> dict:
    """The config an integration's configured executor gets when a run starts (variables read now)."""
    mapped = executor_def.apply_config_mapping({})
    if not mapped.success:
        raise dg.DagsterInvalidConfigError(f"executor {executor_def.name}", mapped.errors, {})
    return mapped.value["config"]


# A Celery worker imports this module (`-i rag_assets.executors`) with Celery already loaded: only
# then is the pool hook registered, so loading the code location never imports Celery.
if "celery" in sys.modules:
    from celery.signals import worker_process_init

    worker_process_init.connect(allow_child_processes)
