"""The serving alias and the collections behind it: one Milvus collection per embedding model, one alias.

`MILVUS_COLLECTION` (default `rag_chunks`) is the name readers use, and it is a Milvus **alias**.
The vectors of each model live in that model's own collection, `rag_chunks__<model>_<hash>`, named
from the model's identity (its name and a hash of its weights), so two models never share one.

- A model's collection is written by the ingest runs while that model is `EMBEDDING_MODEL`.
- The alias moves to it (one `alter_alias`, atomic for readers) only when every registered source
  has been written to it and evaluated (`serving_collection`); until then readers keep the old one.
  The first collection of a deployment is served as soon as it is written: nothing is lost by it.
- The collection the alias leaves stays, for rollback, until `rag-assets prune-collections`.
- A collection that holds the serving name itself (made before aliases) keeps serving until the
  first move, when it is renamed `<name>__legacy` and kept like any previous collection.

Milvus Lite (3.2) implements aliases (create/alter/describe/list, resolved by every call), as does
a Milvus server; nothing here needs a pointer record of its own.
"""

import json
import re
from dataclasses import dataclass

SEPARATOR = "__"
LEGACY_SUFFIX = "legacy"
MAX_NAME_CHARS = 255  # Milvus's limit on collection and alias names
MAX_MODEL_SLUG_CHARS = 48
MODEL_PROPERTY, IDENTITY_PROPERTY = "rag_assets.model", "rag_assets.model_identity"
# How the vectors were made and are compared (JSON strings): what a reader needs to embed its queries alike.
SPEC_PROPERTIES = {
    "query_prompt": "rag_assets.query_prompt",
    "document_prompt": "rag_assets.document_prompt",
    "similarity": "rag_assets.similarity",
    "backend": "rag_assets.backend",
}
METRIC_PROPERTY = "rag_assets.metric"


def model_collection_name(serving: str, identity: str) -> str:
    """`rag_chunks` + `all-MiniLM-L6-v2-1a2b3c4d5e6f7a8b` -> `rag_chunks__all_minilm_l6_v2_1a2b3c4d5e6f7a8b`.

    Only letters, digits and `_` (Milvus's alphabet); the weights' hash is kept whole.
    """
    name, _, digest = identity.rpartition("-")
    slug = re.sub(r"[^0-9a-z]+", "_", (name or identity).lower()).strip("_")[:MAX_MODEL_SLUG_CHARS] or "model"
    suffix = f"{slug}_{digest.lower()}" if name else slug
    return f"{serving}{SEPARATOR}{suffix}"[:MAX_NAME_CHARS]


def model_properties(model: str, identity: str, spec=None) -> dict[str, str]:
    """What a collection records about its vectors (as collection properties, which Milvus Lite keeps
    and a schema description it does not), so a reader can embed queries with the same model, prompt
    and backend, and search with the same metric. `spec`: the model's VectorSpec (core/model_files.py)."""
    properties = {MODEL_PROPERTY: model, IDENTITY_PROPERTY: identity}
    if spec is not None:
        properties.update({key: json.dumps(getattr(spec, name)) for name, key in SPEC_PROPERTIES.items()})
        properties[METRIC_PROPERTY] = spec.metric
    return properties


def recorded_model(described: dict) -> tuple[str | None, str | None]:
    """(model, identity) from `describe_collection`'s answer; (None, None) for a collection made otherwise."""
    properties = described.get("properties") or {}
    return properties.get(MODEL_PROPERTY), properties.get(IDENTITY_PROPERTY)


def recorded_spec(described: dict) -> dict:
    """How the vectors were made (query_prompt, document_prompt, similarity, backend), as far as the
    collection records it: {} for one made before prompts and metrics were recorded."""
    properties = described.get("properties") or {}
    return {name: json.loads(properties[key]) for name, key in SPEC_PROPERTIES.items() if key in properties}


def recorded_metric(described: dict, default: str) -> str:
    """The metric the collection's vectors are compared with; `default` (COSINE) for older collections."""
    return (described.get("properties") or {}).get(METRIC_PROPERTY) or default


# -- Milvus: each function takes a MilvusClient (Lite or server) and names only physical collections,
# -- except where it says "serving". Dropping or renaming through an alias would hit its target.


def serving_target(client, serving: str) -> str | None:
    """The collection readers of `serving` get: the alias's target, `serving` itself when it is a
    collection made before aliases, or None when neither exists yet."""
    if serving in client.list_aliases().get("aliases", []):
        return client.describe_alias(serving)["collection_name"]
    return serving if serving in client.list_collections() else None


def point_alias(client, serving: str, target: str) -> str | None:
    """Make `serving` resolve to `target`; returns what it resolved to before."""
    previous = serving_target(client, serving)
    if previous == target:
        return previous
    if previous is None:
        client.create_alias(target, serving)
    elif previous == serving:
        client.rename_collection(serving, _free_name(client, f"{serving}{SEPARATOR}{LEGACY_SUFFIX}"))
        client.create_alias(target, serving)
    else:
        client.alter_alias(target, serving)
    return previous


def _free_name(client, name: str) -> str:
    existing, candidate, number = set(client.list_collections()), name, 1
    while candidate in existing:
        number += 1
        candidate = f"{name}_{number}"
    return candidate


def family(client, serving: str) -> list[str]:
    """Every collection of this serving name: each model's (`serving__*`), and a pre-alias one."""
    names = client.list_collections()
    return sorted(n for n in names if n == serving or n.startswith(serving + SEPARATOR))


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    model: str | None
    identity: str | None
    rows: int
    serving: bool


def describe_family(client, serving: str) -> list[CollectionInfo]:
    """The collections of a serving name with their model, row count and which one readers get."""
    target = serving_target(client, serving)
    infos = []
    for name in family(client, serving):
        model, identity = recorded_model(client.describe_collection(name))
        rows = int(client.get_collection_stats(name).get("row_count", 0))
        infos.append(CollectionInfo(name, model, identity, rows, name == target))
    return infos


def prune_family(client, serving: str, keep: set[str], *, dry_run: bool = False) -> list[str]:
    """Drop the collections of `serving` that readers do not get and that are not in `keep`."""
    target = serving_target(client, serving)
    doomed = [n for n in family(client, serving) if n != target and n not in keep]
    if not dry_run:
        for name in doomed:
            client.drop_collection(name)
    return doomed


# -- When to move the alias: a pure decision over what the instance knows.


@dataclass(frozen=True)
class Promotion:
    """Whether the alias moves to the candidate now, and what it waits for if not."""

    promote: bool
    reason: str
    waiting_for: tuple[str, ...] = ()
    below_threshold: tuple[str, ...] = ()


def decide_promotion(
    *,
    serving: str | None,
    candidate: str,
    registered: list[str],
    evaluations: dict[str, tuple[str, bool]],
    require_pass: bool,
) -> Promotion:
    """`evaluations`: per source, (collection evaluated, met the threshold) of its latest evaluation.

    The alias moves when every registered source has been evaluated on the candidate (and met the
    threshold, when `require_pass`); with nothing served yet, as soon as one has.
    """
    if serving == candidate:
        return Promotion(False, "already serving")
    ready = [s for s in registered if evaluations.get(s, ("", False))[0] == candidate]
    waiting = tuple(s for s in registered if s not in ready)
    failing = tuple(s for s in ready if require_pass and not evaluations[s][1])
    if failing:
        return Promotion(False, "below the recall threshold", waiting, failing)
    if not ready:
        return Promotion(False, "no source evaluated on it yet", waiting)
    if serving is None:
        return Promotion(True, "first collection", waiting)
    if waiting:
        return Promotion(False, "incomplete", waiting)
    return Promotion(True, "complete and evaluated")
