"""The composition root: assets, resources, IO managers, jobs and sensors, bound to the settings."""

from collections.abc import Mapping
from typing import Any

import dagster as dg

from rag_assets.assets import INGESTION_GROUP, ingestion_assets
from rag_assets.assets.checks import ingestion_checks
from rag_assets.assets.freshness import FRESHNESS_CHECK_JOB, sources_are_fresh
from rag_assets.assets.retrieval_eval import eval_queries, retrieval_eval
from rag_assets.assets.serving_collection import serving_collection
from rag_assets.executors import celery_executor_from_env, executor_for, k8s_executor
from rag_assets.io_managers.milvus_io import MilvusIOManager
from rag_assets.io_managers.parquet import PartitionedParquetIOManager
from rag_assets.partitions import source_partitions
from rag_assets.resources.artifacts import ArtifactsResource
from rag_assets.resources.embedder import EmbedderResource
from rag_assets.resources.evaluation import EvaluationResource
from rag_assets.resources.github import GitHubResource
from rag_assets.resources.milvus import MilvusResource
from rag_assets.resources.sources import SourcesResource
from rag_assets.resources.web import WebResource
from rag_assets.sensors.github_sensor import build_github_sensor
from rag_assets.sensors.source_cleanup import source_cleanup_job
from rag_assets.sensors.sources_sensor import build_sources_sensor
from rag_assets.sensors.web_sensor import build_web_sensor
from rag_assets.settings import Settings

INGEST_JOB = "ingest_job"
INGEST_CELERY_JOB = "ingest_celery_job"
INGEST_K8S_JOB = "ingest_k8s_job"


def build_resources(settings: Settings) -> dict:
    # MILVUS_COLLECTION is the serving alias; the model's own collection behind it takes the writes.
    milvus = MilvusResource.from_settings(settings)
    artifacts = ArtifactsResource(base_dir=str(settings.artifacts_dir))  # the parquet IO manager's folder
    retry_config = {  # RAG_RETRY_*: one policy for every fetcher
        "retry_attempts": settings.retry_attempts,
        "retry_base_seconds": settings.retry_base_seconds,
        "retry_max_wait_seconds": settings.retry_max_wait_seconds,
    }
    return {
        "sources": SourcesResource(path=str(settings.sources_file)),
        "github": GitHubResource(**retry_config),
        "web": WebResource(cache_dir=str(settings.cache_dir / "web"), **retry_config),
        "embedder": EmbedderResource(
            model=settings.embedding_model,
            device=settings.embedding_device,
            precision=settings.embedding_precision,
            cache_dir=str(settings.cache_dir),
            query_prompt=settings.query_prompt,
            document_prompt=settings.document_prompt,
            backend=settings.embedding_backend,
        ),
        "milvus": milvus,
        "evaluation": EvaluationResource(
            k=settings.eval_k,
            min_recall=settings.min_recall,
            blocking=settings.eval_blocking,
            queries_dir=str(settings.queries_dir),
        ),
        "artifacts": artifacts,
        "parquet_io_manager": PartitionedParquetIOManager(artifacts=artifacts),
        "milvus_io_manager": MilvusIOManager(milvus=milvus),
    }


def build_definitions(settings: Settings, resources: Mapping[str, Any] | None = None) -> dg.Definitions:
    """Everything the code location serves. `resources` replace those of build_resources by key (a test
    passes an already loaded embedder this way); without them, the resources follow the settings."""
    # sources_are_fresh reads instance metadata only: it runs in its own job and schedule, not as a
    # step of every ingest run (one more pod per run on Kubernetes).
    ingest_selection = dg.AssetSelection.groups(INGESTION_GROUP) - dg.AssetSelection.checks(sources_are_fresh)
    ingest_job = dg.define_asset_job(
        INGEST_JOB,
        selection=ingest_selection,
        partitions_def=source_partitions,
        description="Fetch, chunk, embed and write the selected sources into Milvus.",
    )
    # The same graph on fixed executors (rag_assets/executors.py), whatever RAG_EXECUTOR says: steps
    # on Celery workers (the embedding step on queue `gpu`), or one Kubernetes Job per step (the
    # embedding step on a GPU). Each imports its integration (an extra) only when a run starts.
    ingest_celery_job = dg.define_asset_job(
        INGEST_CELERY_JOB,
        selection=ingest_selection,
        partitions_def=source_partitions,
        executor_def=celery_executor_from_env(),
        description=(
            "ingest_job on Celery workers: the embedding step on queue `gpu`, the others on `dagster`."
        ),
    )
    ingest_k8s_job = dg.define_asset_job(
        INGEST_K8S_JOB,
        selection=ingest_selection,
        partitions_def=source_partitions,
        executor_def=k8s_executor(),
        description="ingest_job as one Kubernetes Job per step: the embedding step on a GPU node.",
    )
    freshness_check_job = dg.define_asset_job(
        FRESHNESS_CHECK_JOB,
        selection=dg.AssetSelection.checks(sources_are_fresh),
        description="Evaluate sources_are_fresh.",
    )
    return dg.Definitions(
        # After the write: the model's collection is evaluated, then served (resources/milvus/aliases.py).
        assets=[*ingestion_assets, eval_queries, retrieval_eval, serving_collection],
        asset_checks=[*ingestion_checks, sources_are_fresh],
        jobs=[ingest_job, ingest_celery_job, ingest_k8s_job, source_cleanup_job, freshness_check_job],
        sensors=[
            build_sources_sensor(ingest_job),
            build_github_sensor(ingest_job, interval_seconds=settings.poll_interval_seconds),
            build_web_sensor(ingest_job, interval_seconds=settings.poll_interval_seconds),
        ],
        schedules=[
            dg.ScheduleDefinition(
                name="freshness_schedule",
                job=freshness_check_job,
                cron_schedule="0 * * * *",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            )
        ],
        resources={**build_resources(settings), **(resources or {})},
        # RAG_EXECUTOR: ingest_job, the other jobs, the sensors' and schedules' runs and the UI's
        # Materialize all run their steps where it says (in this process, on Celery, on Kubernetes).
        executor=executor_for(settings.executor),
    )


defs = build_definitions(Settings.from_env())
