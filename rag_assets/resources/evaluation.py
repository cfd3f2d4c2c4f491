"""How retrieval is judged: the k of recall@k (RAG_EVAL_K), the minimum recall (RAG_MIN_RECALL),
whether falling short blocks (RAG_EVAL_BLOCKING), how many heading queries at most, and where users
keep their own queries (`eval_queries/<source>.jsonl` beside the sources file)."""

from pathlib import Path

import dagster as dg

from rag_assets.core.evaluation import DEFAULT_KS


class EvaluationResource(dg.ConfigurableResource):
    """The retrieval evaluation's settings, bound from the environment in the composition root."""

    k: int = 5
    min_recall: float = 0.5
    blocking: bool = True
    max_queries: int = 500
    queries_dir: str = ""

    @property
    def ks(self) -> tuple[int, ...]:
        """The k's recall is reported at: 1, 5, 10 and the threshold's own."""
        return tuple(sorted({*DEFAULT_KS, self.k}))

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        """ERROR stops the run (and so the alias); WARN only says so."""
        return dg.AssetCheckSeverity.ERROR if self.blocking else dg.AssetCheckSeverity.WARN

    def queries_file(self, source: str) -> Path | None:
        """`<queries_dir>/<source>.jsonl` when the user wrote one."""
        if not self.queries_dir:
            return None
        path = Path(self.queries_dir) / f"{source}.jsonl"
        return path if path.is_file() else None
