"""Process-level settings, read from the environment once, where resources are assembled."""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = ".rag_assets"
DEFAULT_SOURCES_FILE = "sources.yaml"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "rag_chunks"
DEFAULT_POLL_INTERVAL_SECONDS = 300
DEFAULT_EVAL_K = 5
DEFAULT_MIN_RECALL = 0.5
DEFAULT_EVAL_QUERIES_DIR = "eval_queries"  # next to the sources file: <source>.jsonl
EXECUTORS = ("in_process", "celery", "k8s")  # RAG_EXECUTOR: where every job's steps run (executors.py)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    """Everything the code location needs to know about where things live."""

    data_dir: Path
    sources_file: Path
    milvus_uri: str
    milvus_token_env: str
    collection: str
    embedding_model: str
    embedding_device: str
    embedding_precision: str
    poll_interval_seconds: int
    eval_k: int = DEFAULT_EVAL_K
    min_recall: float = DEFAULT_MIN_RECALL
    eval_blocking: bool = True
    executor: str = EXECUTORS[0]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("RAG_DATA_DIR", DEFAULT_DATA_DIR)).expanduser().absolute()
        return cls(
            data_dir=data_dir,
            sources_file=Path(env.get("RAG_SOURCES_FILE", DEFAULT_SOURCES_FILE)).expanduser().absolute(),
            milvus_uri=env.get("MILVUS_URI") or str(data_dir / "milvus.db"),
            milvus_token_env="MILVUS_TOKEN",
            collection=env.get("MILVUS_COLLECTION", DEFAULT_COLLECTION),
            embedding_model=env.get("EMBEDDING_MODEL", DEFAULT_MODEL),
            embedding_device=env.get("EMBEDDING_DEVICE", "auto"),
            embedding_precision=env.get("EMBEDDING_PRECISION", "auto"),
            poll_interval_seconds=int(env.get("RAG_POLL_INTERVAL_SECONDS", DEFAULT_POLL_INTERVAL_SECONDS)),
            eval_k=int(env.get("RAG_EVAL_K", DEFAULT_EVAL_K)),
            min_recall=float(env.get("RAG_MIN_RECALL", DEFAULT_MIN_RECALL)),
            eval_blocking=_flag("RAG_EVAL_BLOCKING", env.get("RAG_EVAL_BLOCKING", ""), default=True),
            executor=env.get("RAG_EXECUTOR", "").strip().lower() or EXECUTORS[0],
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_recall <= 1.0:
            raise ValueError(f"RAG_MIN_RECALL={self.min_recall}: a recall lies between 0 and 1")
        if self.eval_k < 1:
            raise ValueError(f"RAG_EVAL_K={self.eval_k}: must be at least 1")
        if self.executor not in EXECUTORS:
            raise ValueError(f"RAG_EXECUTOR={self.executor!r}: expected one of {', '.join(EXECUTORS)}")

    @property
    def queries_dir(self) -> Path:
        """Where users' query files for the retrieval evaluation are (`<source>.jsonl`): beside the sources
        file."""
        return self.sources_file.parent / DEFAULT_EVAL_QUERIES_DIR

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"


def _flag(name: str, raw: str, *, default: bool) -> bool:
    value = raw.strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
    return value in _TRUE
