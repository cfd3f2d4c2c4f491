"""The code location's shape: asset keys, lineage, pools, instance config, the CI contract."""

import re
from pathlib import Path

import dagster as dg
import yaml

from rag_assets.core.artifacts import PARQUET_ASSETS
from rag_assets.definitions import INGEST_JOB, defs
from rag_assets.runtime.instance import INSTANCE_CONFIG

ROOT = Path(__file__).parents[1]


def test_asset_keys_and_lineage_are_the_documented_graph():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {
        "raw_pages",
        "chunks",
        "embeddings",
        "milvus_collection",
        "eval_queries",
        "retrieval_eval",
        "serving_collection",
    }
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert parents == {
        "raw_pages": set(),
        "chunks": {"raw_pages"},
        "embeddings": {"chunks"},
        "milvus_collection": {"chunks", "embeddings"},
        "eval_queries": {"chunks"},
        "retrieval_eval": {"milvus_collection", "eval_queries"},
        "serving_collection": {"retrieval_eval"},
    }


def test_every_asset_is_partitioned_by_source_described_and_single_run():
    for asset in defs.resolve_all_asset_specs():
        assert (
            asset.partitions_def.name == "sources" and asset.description and asset.group_name == "ingestion"
        )
    for assets_def in defs.assets:
        assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()


def test_the_artifact_store_lists_exactly_the_assets_stored_in_parquet():
    # The cleanup removes a source's files of these assets: one bound to parquet later is listed too.
    stored = {
        key.to_user_string()
        for assets_def in defs.assets
        for key in assets_def.keys
        if assets_def.get_io_manager_key_for_asset_key(key) == "parquet_io_manager"
    }
    assert stored == set(PARQUET_ASSETS)


def test_embedding_step_is_in_pool_gpu_and_the_writer_in_pool_milvus():
    pools = {a.key.to_user_string(): a.node_def.pool for a in defs.assets}
    assert pools["embeddings"] == "gpu" and pools["milvus_collection"] == "milvus"
    # Every other step that holds the model or opens Milvus is in the same pools.
    assert (
        pools["eval_queries"] == "gpu" and pools["retrieval_eval"] == pools["serving_collection"] == "milvus"
    )
    assert defs.resolve_job_def(INGEST_JOB)


def test_top_level_dagster_yaml_matches_the_cli_instance():
    assert yaml.safe_load((ROOT / "dagster.yaml").read_text()) == INSTANCE_CONFIG
    assert INSTANCE_CONFIG["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    [command] = re.findall(r"# 2\. .*\n(.+)\n", readme)
    assert command.strip() in (ROOT / ".ci" / "run").read_text()
