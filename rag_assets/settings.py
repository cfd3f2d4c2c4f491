"""Process-level settings, read from the environment once, where resources are assembled.

Every variable of the README's configuration table is read and checked here: a value that cannot
work is a `SettingsError`, one line naming the variable, the value (never a secret) and what is
allowed. `Settings.from_env` checks what it can without loading anything (numbers, choices, the
shape of `MILVUS_URI`); `Settings.check_runtime` checks what needs the machine (the model resolves,
the CUDA device exists), for the commands that embed.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from rag_assets.core.backends import BACKENDS

DEFAULT_DATA_DIR = ".rag_assets"
DEFAULT_SOURCES_FILE = "sources.yaml"
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "rag_chunks"
DEFAULT_POLL_INTERVAL_SECONDS = 300
DEFAULT_EVAL_K = 5
DEFAULT_MIN_RECALL = 0.5
DEFAULT_EVAL_QUERIES_DIR = "eval_queries"  # next to the sources file: <source>.jsonl
DEFAULT_RETRY_ATTEMPTS = 5
DEFAULT_RETRY_BASE_SECONDS = 1.0
DEFAULT_RETRY_MAX_WAIT_SECONDS = 60.0
MILVUS_URI_ENV = "MILVUS_URI"
MILVUS_TOKEN_ENV = "MILVUS_TOKEN"
# EMBEDDING_PRECISION: `bf16`/`fp16` cast the weights, `-autocast` runs fp32 weights under autocast.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "bf16-autocast", "fp16-autocast")
MAX_PROMPT_CHARS = 1000
MILVUS_SCHEMES = ("http", "https", "tcp")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# Milvus: a letter or _, then letters, digits and _; the model's collection adds ~50 characters.
_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
EXECUTORS = ("in_process", "celery", "k8s")  # RAG_EXECUTOR: where every job's steps run (executors.py)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting that cannot work: one line naming the variable, its value and what is allowed."""


@dataclass(frozen=True)
class Settings:
    """Everything the code location needs to know about where things live.

    `milvus_uri` is a Milvus Lite file (an absolute path) or a server URL without credentials:
    credentials written into `MILVUS_URI` are read at connection time (`milvus_token`), so the
    value here is safe to print, log and put in resource config.
    """

    data_dir: Path
    sources_file: Path
    milvus_uri: str
    milvus_token_env: str
    collection: str
    embedding_model: str
    embedding_device: str
    embedding_precision: str
    poll_interval_seconds: int
    # EMBEDDING_QUERY_PROMPT / EMBEDDING_DOCUMENT_PROMPT: None (unset or empty) means the model's own.
    query_prompt: str | None = None
    document_prompt: str | None = None
    embedding_backend: str = BACKENDS[0]
    eval_k: int = DEFAULT_EVAL_K
    min_recall: float = DEFAULT_MIN_RECALL
    eval_blocking: bool = True
    executor: str = EXECUTORS[0]
    retry_attempts: int = DEFAULT_RETRY_ATTEMPTS
    retry_base_seconds: float = DEFAULT_RETRY_BASE_SECONDS
    retry_max_wait_seconds: float = DEFAULT_RETRY_MAX_WAIT_SECONDS
    dagster_home: Path | None = None  # DAGSTER_HOME; None: the CLI's instance in data_dir/dagster_home

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        """The settings from `env` (default: the process environment). Every variable is checked; all
        that cannot work are reported together, one line each, in one SettingsError."""
        env = dict(os.environ if env is None else env)
        problems: list[str] = []

        def take(parse, *args, **kwargs):
            try:
                return parse(*args, **kwargs)
            except SettingsError as error:
                problems.append(str(error))
                return None

        data_dir = take(_data_dir, env.get("RAG_DATA_DIR") or DEFAULT_DATA_DIR)
        dagster_home = take(_dagster_home, env.get("DAGSTER_HOME"))
        for name in ("DAGSTER_CELERY_BROKER_URL", "DAGSTER_CELERY_BACKEND_URL"):
            take(_check_celery_url, name, env.get(name))
        values = {
            "data_dir": data_dir,
            "sources_file": take(
                _path, "RAG_SOURCES_FILE", env.get("RAG_SOURCES_FILE") or DEFAULT_SOURCES_FILE
            ),
            "milvus_uri": take(parse_milvus_uri, env.get("MILVUS_URI"), data_dir or Path(DEFAULT_DATA_DIR)),
            "milvus_token_env": MILVUS_TOKEN_ENV,
            "collection": take(_collection, env.get("MILVUS_COLLECTION") or DEFAULT_COLLECTION),
            "embedding_model": env.get("EMBEDDING_MODEL") or DEFAULT_MODEL,
            "embedding_device": take(_device, env.get("EMBEDDING_DEVICE") or "auto"),
            "embedding_precision": take(
                _choice, "EMBEDDING_PRECISION", env.get("EMBEDDING_PRECISION"), PRECISIONS
            ),
            "query_prompt": take(_prompt, "EMBEDDING_QUERY_PROMPT", env.get("EMBEDDING_QUERY_PROMPT")),
            "document_prompt": take(
                _prompt, "EMBEDDING_DOCUMENT_PROMPT", env.get("EMBEDDING_DOCUMENT_PROMPT")
            ),
            "embedding_backend": take(
                _choice, "EMBEDDING_BACKEND", (env.get("EMBEDDING_BACKEND") or "").strip().lower(), BACKENDS
            ),
            "poll_interval_seconds": take(
                _number,
                "RAG_POLL_INTERVAL_SECONDS",
                env.get("RAG_POLL_INTERVAL_SECONDS"),
                DEFAULT_POLL_INTERVAL_SECONDS,
                kind=int,
                minimum=1,
            ),
            "eval_k": take(_number, "RAG_EVAL_K", env.get("RAG_EVAL_K"), DEFAULT_EVAL_K, kind=int, minimum=1),
            "min_recall": take(
                _number,
                "RAG_MIN_RECALL",
                env.get("RAG_MIN_RECALL"),
                DEFAULT_MIN_RECALL,
                kind=float,
                minimum=0,
                maximum=1,
            ),
            "eval_blocking": take(_flag, "RAG_EVAL_BLOCKING", env.get("RAG_EVAL_BLOCKING", ""), default=True),
            "retry_attempts": take(
                _number,
                "RAG_RETRY_ATTEMPTS",
                env.get("RAG_RETRY_ATTEMPTS"),
                DEFAULT_RETRY_ATTEMPTS,
                kind=int,
                minimum=1,
            ),
            "retry_base_seconds": take(
                _number,
                "RAG_RETRY_BASE_SECONDS",
                env.get("RAG_RETRY_BASE_SECONDS"),
                DEFAULT_RETRY_BASE_SECONDS,
                kind=float,
                minimum=0,
            ),
            "executor": take(
                _choice, "RAG_EXECUTOR", (env.get("RAG_EXECUTOR") or "").strip().lower(), EXECUTORS
            ),
            "retry_max_wait_seconds": take(
                _number,
                "RAG_RETRY_MAX_WAIT_SECONDS",
                env.get("RAG_RETRY_MAX_WAIT_SECONDS"),
                DEFAULT_RETRY_MAX_WAIT_SECONDS,
                kind=float,
                minimum=0,
            ),
            "dagster_home": dagster_home,
        }
        if problems:
            raise SettingsError("\n".join(problems))
        return cls(**values)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_recall <= 1.0:
            raise SettingsError(f"RAG_MIN_RECALL={self.min_recall}: a recall lies between 0 and 1")
        if self.eval_k < 1:
            raise SettingsError(f"RAG_EVAL_K={self.eval_k}: must be at least 1")

    def check_runtime(self) -> None:
        """What `from_env` cannot see without loading anything: the model resolves offline, and a
        CUDA device asked for exists. Raises SettingsError."""
        from rag_assets.core.model_files import ModelNotFoundError, resolve_model_dir

        try:
            model_dir = resolve_model_dir(self.embedding_model)
        except ModelNotFoundError as error:
            raise SettingsError(str(error)) from None
        check_device(self.embedding_device)
        check_model_spec(self.embedding_model, model_dir)
        check_backend(self.embedding_backend)

    @property
    def is_milvus_lite(self) -> bool:
        return "://" not in self.milvus_uri

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

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"


def parse_milvus_uri(raw: str | None, data_dir: Path) -> str:
    """MILVUS_URI as it is connected to: an absolute `.db` path (Milvus Lite) or a server URL whose
    credentials are removed (they are read by `milvus_token`). Unset: the Lite file in RAG_DATA_DIR."""
    if not raw:
        return str(data_dir / "milvus.db")
    if "://" not in raw:
        path = Path(raw).expanduser().absolute()
        if not path.name.endswith(".db"):  # Milvus Lite's mark of a file (it is a folder in Lite 3)
            raise SettingsError(
                f"MILVUS_URI={raw!r}: a Milvus Lite file path must name a file ending in .db "
                "(e.g. ./milvus.db), or give a server URL (http://host:19530)"
            )
        return str(path)
    parts = urlsplit(raw)
    shown = redact_url(raw)
    try:
        port = parts.port
    except ValueError:
        port = None
        parts = parts._replace(netloc="?")
    if parts.scheme.lower() not in MILVUS_SCHEMES or not parts.hostname or parts.query or parts.fragment:
        raise SettingsError(
            f"MILVUS_URI={shown!r}: expected a Milvus Lite file path (./milvus.db) or a server URL "
            f"({', '.join(s + '://host:19530' for s in MILVUS_SCHEMES[:2])})"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return parts._replace(netloc=f"{host}:{port}" if port else host).geturl()


def redact_url(url: str) -> str:
    """The URL with any `user:password@` replaced by `***@`: safe to print."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def milvus_token(token_env: str = MILVUS_TOKEN_ENV, env: dict[str, str] | None = None) -> str:
    """The Milvus token, read when connecting: `token_env` (MILVUS_TOKEN), else the `user:password`
    written into MILVUS_URI. Never stored in settings or resource config."""
    env = os.environ if env is None else env
    token = env.get(token_env, "")
    if token:
        return token
    parts = urlsplit(env.get(MILVUS_URI_ENV, ""))
    if "://" in env.get(MILVUS_URI_ENV, "") and parts.username:
        return f"{parts.username}:{parts.password or ''}"
    return ""


def hide_lite_uri_from_pymilvus() -> None:
    """Import pymilvus without it seeing a Milvus Lite path in MILVUS_URI.

    pymilvus reads MILVUS_URI when it is imported and refuses anything that is not a URL, but the
    README documents MILVUS_URI as a Lite file path too. Called from rag_assets/__init__.py, so it
    runs in every process that imports this package (the CLI, Dagster's code servers, daemon and
    run workers) before any module of ours imports pymilvus. The environment is restored at once:
    subprocesses inherit the variable unchanged, and Settings reads it as given.
    """
    value = os.environ.get(MILVUS_URI_ENV, "")
    if not value or "://" in value:
        return
    import sys

    if "pymilvus" in sys.modules:
        return
    del os.environ[MILVUS_URI_ENV]
    try:
        import pymilvus  # noqa: F401
    finally:
        os.environ[MILVUS_URI_ENV] = value


def check_model_spec(model: str, model_dir: Path) -> None:
    """The model's similarity function has a Milvus metric (cosine, dot, euclidean)."""
    from rag_assets.core.model_files import UnsupportedModelError, vector_spec

    try:
        vector_spec(model_dir)
    except UnsupportedModelError as error:
        raise SettingsError(f"EMBEDDING_MODEL={model!r}: {str(error).partition(': ')[2]}") from None


def check_backend(backend: str) -> None:
    """The extra EMBEDDING_BACKEND needs is installed: one line naming it when it is not."""
    from rag_assets.core.backends import missing_extra

    missing = missing_extra(backend)
    if missing:
        raise SettingsError(f"EMBEDDING_BACKEND={backend!r}: {missing}")


def check_device(device: str) -> None:
    """EMBEDDING_DEVICE=cuda / cuda:N names a CUDA device this machine has (imports torch only then)."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        have = f"this machine has {count} CUDA device(s)" if count else "this machine has no CUDA device"
        raise SettingsError(f"EMBEDDING_DEVICE={device!r}: {have}; use cpu or auto")


def _data_dir(raw: str) -> Path:
    data_dir = _path("RAG_DATA_DIR", raw)
    if data_dir.exists() and not data_dir.is_dir():
        raise SettingsError(f"RAG_DATA_DIR={raw!r}: is a file; expected a folder (made if missing)")
    return data_dir


def _path(name: str, raw: str) -> Path:
    try:
        return Path(raw).expanduser().absolute()
    except RuntimeError as error:  # ~user that does not exist
        raise SettingsError(f"{name}={raw!r}: {error}") from None


def _collection(raw: str) -> str:
    if not _COLLECTION.fullmatch(raw):
        raise SettingsError(
            f"MILVUS_COLLECTION={raw!r}: expected a letter or _ then letters, digits and _ "
            "(at most 200 characters)"
        )
    return raw


def _device(raw: str) -> str:
    if not _DEVICE.fullmatch(raw):
        raise SettingsError(f"EMBEDDING_DEVICE={raw!r}: expected auto, cpu, cuda or cuda:N")
    return raw


def _prompt(name: str, raw: str | None) -> str | None:
    """A prompt put before every text as it is (spaces kept); unset or empty: None, the model's own."""
    if not raw:
        return None
    if len(raw) > MAX_PROMPT_CHARS:
        raise SettingsError(f"{name}=({len(raw)} characters): expected at most {MAX_PROMPT_CHARS} characters")
    if any(ord(c) < 32 and c not in "\t\n" for c in raw):
        raise SettingsError(
            f"{name}={raw!r}: expected text without control characters (tabs and newlines allowed)"
        )
    return raw


def _choice(name: str, raw: str | None, choices: tuple[str, ...]) -> str:
    if not raw:
        return choices[0]
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return raw


def _number(name: str, raw: str | None, default, *, kind: type, minimum=None, maximum=None):
    if raw is None or not raw.strip():
        return default
    what = "a whole number" if kind is int else "a number"
    if minimum is not None and maximum is not None:
        expected = f"{what} between {minimum} and {maximum}"
    else:
        expected = f"{what} of at least {minimum}" if minimum is not None else what
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected {expected}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(f"{name}={raw!r}: expected {expected}")
    return value


def _dagster_home(raw: str | None) -> Path | None:
    if not raw:
        return None
    home = Path(raw).expanduser()
    if not home.is_absolute():
        raise SettingsError(f"DAGSTER_HOME={raw!r}: Dagster needs an absolute path")
    if home.exists() and not home.is_dir():
        raise SettingsError(f"DAGSTER_HOME={raw!r}: is a file; expected the instance folder")
    return home


def _check_celery_url(name: str, raw: str | None) -> None:
    if raw and "://" not in raw:
        shown = "(hidden: it holds @)" if "@" in raw else repr(raw)
        raise SettingsError(f"{name}={shown}: expected a URL such as redis://host:6379/0")


def _flag(name: str, raw: str, *, default: bool) -> bool:
    value = raw.strip().lower()
    if not value:
        return default
    if value not in _TRUE + _FALSE:
        raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
    return value in _TRUE
