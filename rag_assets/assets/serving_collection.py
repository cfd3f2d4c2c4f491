"""serving_collection: which collection readers of MILVUS_COLLECTION get, moved only when it is safe.

After the write and the evaluation of a run, this step looks at every registered source: when each
has been written to the current model's collection and evaluated there (and met the threshold, when
the check blocks), the alias moves to that collection in one atomic `alter_alias`. Until then readers
keep the previous model's collection, whole. The decision is `resources.milvus.aliases.decide_promotion`.
"""

import dagster as dg

from rag_assets.assets.retrieval_eval import retrieval_eval
from rag_assets.metadata import (
    ALIAS,
    BELOW_THRESHOLD,
    CANDIDATE,
    COLLECTION,
    MEETS_THRESHOLD,
    MOVED,
    PREVIOUS,
    REASON,
    SERVING,
    WAITING_FOR,
    latest_metadata,
)
from rag_assets.partitions import source_partitions
from rag_assets.resources.evaluation import EvaluationResource
from rag_assets.resources.milvus import MilvusResource, decide_promotion


@dg.asset(
    partitions_def=source_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="ingestion",
    kinds={"milvus"},
    pool="milvus",
    deps=[retrieval_eval],
)
def serving_collection(
    context: dg.AssetExecutionContext, milvus: MilvusResource, evaluation: EvaluationResource
) -> dg.MaterializeResult:
    """The collection the serving alias (MILVUS_COLLECTION) resolves to, after this run.

    Metadata: `serving` (before and after), `candidate` (the current model's collection), whether the
    alias moved, and the sources it still waits for. The previous collection is kept for rollback
    until `rag-assets prune-collections`. In pool `milvus`, like every step that opens Milvus.
    """
    registered = list(context.instance.get_dynamic_partitions(source_partitions.name))
    evaluations = latest_evaluations(context.instance, registered)
    store = milvus.open()
    try:
        candidate, before = store.collection, store.serving_target(milvus.collection)
        decision = decide_promotion(
            serving=before,
            candidate=candidate,
            registered=registered,
            evaluations=evaluations,
            require_pass=evaluation.blocking,
        )
        moved = decision.promote and store.dimension() is not None
        if moved:
            store.point_alias(milvus.collection, candidate)
            context.log.info(
                f"{milvus.collection!r} now serves {candidate!r} (was {before!r}): {decision.reason}"
            )
    finally:
        store.close()
    metadata = {
        ALIAS: milvus.collection,
        SERVING: candidate if moved else (before or "none"),
        PREVIOUS: before or "none",
        CANDIDATE: candidate,
        MOVED: moved,
        REASON: decision.reason,
        WAITING_FOR: ", ".join(decision.waiting_for) or "none",
        BELOW_THRESHOLD: ", ".join(decision.below_threshold) or "none",
    }
    for key in context.partition_keys:
        context.add_asset_metadata(metadata, partition_key=key)
    return dg.MaterializeResult()


def latest_evaluations(instance: dg.DagsterInstance, sources: list[str]) -> dict[str, tuple[str, bool]]:
    """Per source, (collection, met the threshold) of its latest retrieval_eval materialization."""
    found = {}
    for source in sources:
        metadata = latest_metadata(instance, retrieval_eval.key.to_user_string(), source)
        if COLLECTION in metadata:
            found[source] = (str(metadata[COLLECTION]), bool(metadata.get(MEETS_THRESHOLD, False)))
    return found
