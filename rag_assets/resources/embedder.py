"""The embedding model: loaded once per step, run in token-budget batches at reduced precision.

Reduced precision (bf16 on a CPU with native bf16, fp16 on CUDA) casts the model's weights by
default: on this project's CPU bench that was faster than autocast with the same agreement with
fp32 (mean cosine >= 0.999). `bf16-autocast` / `fp16-autocast` keep fp32 weights under autocast;
`rag-assets bench` times both paths and reports each one's agreement with fp32.

This is the "GPU resource": the embedding asset sits in the Dagster pool `gpu` (limit 1), so
only one step, and so one model, is ever on the device at a time.
"""

import contextlib
import ctypes
import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import dagster as dg
import numpy as np
from pydantic import PrivateAttr

from rag_assets.core.batching import padded_length, plan_batches, run_halving_on_oom
from rag_assets.core.chunking import CHUNKER_VERSION, Chunker
from rag_assets.core.model_files import (
    DEFAULT_BACKEND,
    VectorSpec,
    load_tokenizer,
    max_seq_length,
    model_identity,
    resolve_model_dir,
    vector_spec,
)
from rag_assets.resources.embedding_cache import EmbeddingCache
from rag_assets.settings import PRECISIONS

DEFAULT_CPU_BATCH_TOKENS = 8192
DEFAULT_CUDA_BATCH_TOKENS = 131072
LENGTH_MULTIPLE = 16  # batches are padded to a multiple of this: few shapes, see plan_batches
TRIM_EVERY_BATCHES = 16


@dataclass
class EmbedStats:
    """What the model did in one step; a no-op run shows zeros here."""

    inputs: int = 0
    tokens: int = 0
    batches: int = 0
    halvings: int = 0
    seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)


class Embedder:
    """A sentence-transformers model with the batching, precision and OOM policy of this project."""

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_tokens: int = 0,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        backend: str = DEFAULT_BACKEND,
        exports_dir: Path | str | None = None,
    ):
        self.model_name = model
        self.model_dir = resolve_model_dir(model)
        self.requested_device = device
        self.requested_precision = precision
        self.requested_batch_tokens = batch_tokens
        # EMBEDDING_QUERY_PROMPT / EMBEDDING_DOCUMENT_PROMPT; None: the model's own (`spec`).
        self.prompt_overrides = {"query_prompt": query_prompt, "document_prompt": document_prompt}
        self.backend = backend
        # Where the backends' exports of the weights are kept (the data directory's cache/exports).
        self.exports_dir = Path(exports_dir) if exports_dir else None
        self.stats = EmbedStats()
        self._model = None

    @cached_property
    def spec(self) -> VectorSpec:
        """The prompts put before chunks and questions, the similarity, the backend."""
        return vector_spec(self.model_dir, **self.prompt_overrides, backend=self.backend)

    @cached_property
    def device(self) -> str:
        import torch

        if self.requested_device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.requested_device

    @cached_property
    def precision(self) -> str:
        """fp32, bf16 or fp16 (weights cast), or bf16-autocast / fp16-autocast (fp32 weights)."""
        if self.requested_precision not in PRECISIONS:
            raise ValueError(
                f"EMBEDDING_PRECISION={self.requested_precision!r}: expected one of {', '.join(PRECISIONS)}"
            )
        if self.backend != DEFAULT_BACKEND:
            return "fp32"  # the exports compute in fp32 (onnx-int8: int8 weights, named by the backend)
        if self.requested_precision != "auto":
            return self.requested_precision
        if self.device.startswith("cuda"):
            return "fp16"
        return "bf16" if cpu_supports_bf16() else "fp32"

    @property
    def dtype(self):
        """The reduced dtype the model computes in (torch.bfloat16 / torch.float16), or None for fp32."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision.split("-")[0])

    @property
    def casts_weights(self) -> bool:
        return self.precision in ("bf16", "fp16")

    @property
    def batch_tokens(self) -> int:
        if self.requested_batch_tokens:
            return self.requested_batch_tokens
        return DEFAULT_CUDA_BATCH_TOKENS if self.device.startswith("cuda") else DEFAULT_CPU_BATCH_TOKENS

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.model_dir)

    @cached_property
    def max_seq_length(self) -> int:
        return max_seq_length(self.model_dir)

    @cached_property
    def identity(self) -> str:
        """Model name plus a hash of its weight files and configs, and of the prompts, similarity and
        backend where they differ from the plain default: two never share a cache or a collection."""
        return model_identity(self.model_name, self.model_dir, **self.prompt_overrides, backend=self.backend)

    @cached_property
    def weights_identity(self) -> str:
        """The model's name and weights alone (no prompt, no backend): what an export is made from."""
        return model_identity(self.model_name, self.model_dir, query_prompt="", document_prompt="")

    @property
    def vectors_identity(self) -> str:
        """The model and the precision path: what decides the vectors, so the embedding cache's key.

        bf16 or fp16 vectors differ from fp32 ones in the third or fourth digit, and a cast model
        from an autocast one: each keeps its own cache. (Chunking and collections follow `identity`.)
        """
        return f"{self.identity}-{self.precision}"

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def model(self):
        """The loaded model that computes the vectors: a `PlainEncoder` for the usual layout (no import
        of sentence-transformers, resources/encoder.py), else the SentenceTransformer."""
        if self._model is None:
            from rag_assets.resources.encoder import PlainEncoder, is_plain

            if self.backend != DEFAULT_BACKEND:
                from rag_assets.resources.backends import backend_encoder

                if self.exports_dir is None:
                    raise ValueError(f"EMBEDDING_BACKEND={self.backend!r}: the embedder needs an exports_dir")

                self._model = backend_encoder(
                    self.backend,
                    self.model_dir,
                    self.max_seq_length,
                    self.exports_dir / self.weights_identity,
                )
                return self._model

            if is_plain(self.model_dir):
                self._model = self._prepared(PlainEncoder(self.model_dir, self.max_seq_length, self.device))
            else:
                self._model = self.sentence_transformer
        return self._model

    @cached_property
    def sentence_transformer(self):
        """The model as sentence-transformers loads it, at this precision: the reference the vectors
        match (the bench's bare encode, the tests). The same object as `model` for layouts that
        only sentence-transformers computes."""
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        return self._prepared(
            SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        )

    def _prepared(self, model):
        if self.casts_weights:
            model.to(self.dtype)  # native reduced precision: no fp32 weights, no per-op casts
        return model.eval()

    @cached_property
    def chunk_token_limit(self) -> int:
        """The longest chunk, in tokens: what the model reads once the document prompt is put before it."""
        prompt = self.spec.document_prompt
        prompt_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False)) if prompt else 0
        return max(self.max_seq_length - prompt_tokens, 1)

    def chunker(self, max_tokens: int = 0, overlap_tokens: int = 0) -> Chunker:
        limit = min(max_tokens or self.chunk_token_limit, self.chunk_token_limit)
        return Chunker(self.tokenizer, limit, overlap_tokens)

    def embed_documents(
        self,
        texts: list[str],
        on_batch: Callable[[int, int], None] | None = None,
        on_vectors: Callable[[list[int], np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Vectors of chunks: the model's document prompt (or EMBEDDING_DOCUMENT_PROMPT) before each."""
        return self.embed(texts, on_batch, on_vectors, prompt=self.spec.document_prompt)

    def embed_queries(
        self, texts: list[str], on_batch: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Vectors of questions: the model's query prompt (or EMBEDDING_QUERY_PROMPT) before each."""
        return self.embed(texts, on_batch, prompt=self.spec.query_prompt)

    def embed(
        self,
        texts: list[str],
        on_batch: Callable[[int, int], None] | None = None,
        on_vectors: Callable[[list[int], np.ndarray], None] | None = None,
        *,
        prompt: str = "",
    ) -> np.ndarray:
        """float32 vectors, one row per text, in input order: unit length for a cosine model, as the model
        gives them for dot and euclidean ones. `prompt` goes before every text, as sentence-transformers
        puts it (`embed_documents`, `embed_queries`). `on_batch(texts, tokens)` is called after each
        forward batch (progress); `on_vectors(rows, vectors)` too, with the batch's input positions and
        their vectors, so a caller can keep them before the whole call returns (an interrupted step
        then loses at most the batch under way)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        started = time.perf_counter()
        lengths = [
            min(len(e), self.max_seq_length)
            for e in self.tokenizer.encode_batch([prompt + t for t in texts], add_special_tokens=True)
        ]
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        batches = plan_batches(lengths, self.batch_tokens, multiple=LENGTH_MULTIPLE)
        with ThreadPoolExecutor(max_workers=1) as tokenizing:
            # Tokenize the next batch while the model runs the current one.
            pending = tokenizing.submit(self._features, [texts[i] for i in batches[0]], prompt)
            for number, batch in enumerate(batches):
                features = pending.result()
                if number + 1 < len(batches):
                    pending = tokenizing.submit(
                        self._features, [texts[i] for i in batches[number + 1]], prompt
                    )
                vectors[batch] = self._forward_with_halving(batch, texts, features, prompt)
                if on_vectors:
                    on_vectors(batch, vectors[batch])
                if on_batch:
                    on_batch(len(batch), sum(lengths[i] for i in batch))
                if number % TRIM_EVERY_BATCHES == TRIM_EVERY_BATCHES - 1:
                    release_free_heap()
        release_free_heap()
        self.stats.inputs += len(texts)
        self.stats.tokens += sum(lengths)
        self.stats.seconds += time.perf_counter() - started
        return vectors

    def _features(self, texts: list[str], prompt: str = "") -> dict:
        """The batch tokenized with `prompt` before each text: a SentenceTransformer is given the prompt
        (it also tells pooling where the prompt ends, for models that leave it out)."""
        import torch

        from rag_assets.resources.encoder import PlainEncoder

        if isinstance(self.model, PlainEncoder):
            tokenized = self.model.preprocess([prompt + t for t in texts])
        else:
            tokenized = self.model.preprocess(texts, prompt=prompt or None)
        features = _pad_features(tokenized, LENGTH_MULTIPLE, self.max_seq_length, self._pad_id)
        if self.device.startswith("cuda"):
            features = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return features

    def _forward_with_halving(
        self, batch: list[int], texts: list[str], features: dict, prompt: str = ""
    ) -> np.ndarray:
        def run(rows: list[int]) -> list[np.ndarray]:
            if len(rows) == len(batch):
                return list(self.forward(features))
            return list(self.forward(self._features([texts[i] for i in rows], prompt)))

        def halved(size: int) -> None:
            self.stats.halvings += 1
            if self.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

        return np.stack(run_halving_on_oom(batch, run, on_halve=halved))

    @cached_property
    def _pad_id(self) -> int:
        pad = getattr(self.model, "pad_token_id", None)  # a PlainEncoder's; else the tokenizer's
        return (self.model.tokenizer.pad_token_id if pad is None else pad) or 0

    def forward(self, features: dict) -> np.ndarray:
        """One forward pass over one tokenized batch; the seam where out-of-memory errors surface."""
        import torch

        self.stats.batches += 1
        self.stats.batch_sizes.append(len(features["input_ids"]))
        features = {
            k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in features.items()
        }
        with torch.inference_mode(), self.autocast():
            output = self.model(features)["sentence_embedding"]
        output = output.float()
        if self.spec.normalized:
            output = torch.nn.functional.normalize(output, dim=-1)
        return output.cpu().numpy()

    def autocast(self):
        """Autocast for the `-autocast` precisions; a no-op for fp32 and for cast weights."""
        import torch

        if self.dtype is None or self.casts_weights:
            return contextlib.nullcontext()
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=self.dtype)

    def close(self) -> None:
        loaded, self._model = self._model is not None, None
        self.__dict__.pop("sentence_transformer", None)
        if loaded and self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def release_free_heap() -> None:
    """Give freed heap memory back to the OS (glibc only; elsewhere a no-op).

    Activations of varying shapes leave glibc's heap fragmented: without this, a step that embeds
    the Django docs on CPU held 2.6 GB of freed memory (RSS 3.0 GB) at its end.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _pad_features(features: dict, multiple: int, cap: int, pad_id: int) -> dict:
    """Pad the token tensors of a batch to a multiple of `multiple` (masked, so vectors are unchanged)."""
    import torch

    ids = features["input_ids"]
    target = padded_length(ids.shape[1], multiple, cap)
    if target == ids.shape[1]:
        return features
    padded = dict(features)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        value = features.get(key)
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            fill = pad_id if key == "input_ids" else 0
            padded[key] = torch.nn.functional.pad(value, (0, target - value.shape[1]), value=fill)
    return padded


def cpu_supports_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 is slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model for one step. Loaded lazily: chunking only needs its tokenizer."""

    model: str
    device: str = "auto"
    precision: str = "auto"
    batch_tokens: int = 0
    max_chunk_tokens: int = 0
    chunk_overlap_tokens: int = 0
    cache_dir: str
    cache_max_entries: int = 1_000_000
    # EMBEDDING_QUERY_PROMPT / EMBEDDING_DOCUMENT_PROMPT (None: the model's own), EMBEDDING_BACKEND.
    query_prompt: str | None = None
    document_prompt: str | None = None
    backend: str = DEFAULT_BACKEND

    _embedder: Embedder | None = PrivateAttr(default=None)

    def get(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(
                self.model,
                device=self.device,
                precision=self.precision,
                batch_tokens=self.batch_tokens,
                query_prompt=self.query_prompt,
                document_prompt=self.document_prompt,
                backend=self.backend,
                exports_dir=Path(self.cache_dir) / "exports",
            )
        return self._embedder

    def chunker(self) -> Chunker:
        return self.get().chunker(self.max_chunk_tokens, self.chunk_overlap_tokens)

    @property
    def chunk_token_limit(self) -> int:
        embedder = self.get()
        return min(self.max_chunk_tokens or embedder.chunk_token_limit, embedder.chunk_token_limit)

    def open_cache(self) -> EmbeddingCache:
        path = Path(self.cache_dir) / "embeddings" / f"{self.get().vectors_identity}.sqlite"
        return EmbeddingCache(path, max_entries=self.cache_max_entries)

    def chunking_fingerprint(self) -> str:
        """What chunking depends on: while this is unchanged, an unchanged page keeps its chunks."""
        settings = {
            "model": self.get().identity,
            "max": self.chunk_token_limit,
            "overlap": self.chunk_overlap_tokens,
            "chunker": CHUNKER_VERSION,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    def teardown_after_execution(self, context) -> None:
        if self._embedder is not None:
            self._embedder.close()
