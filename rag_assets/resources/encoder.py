"""A plain sentence-transformers model (Transformer -> mean Pooling -> Normalize), run with transformers
alone: the same vectors, bit for bit, without importing sentence-transformers.

Importing sentence-transformers costs about 1.2 s more than transformers on this project's CPU (it
imports scikit-learn and SciPy): a tenth of a small update as a command. Most embedding models, the
bundled MiniLM among them, are this layout: the same AutoModel, the same fast tokenizer with the
same truncation and right padding, mean pooling summed in fp32 and cast back as sentence-transformers
does, and its Normalize in the model's dtype (a test compares both at fp32 and bf16). Prompts are put
before the texts as sentence-transformers does (`prompt + text`), by the embedder. A model of any
other layout (CLS or max pooling, Dense layers, pooling that leaves the prompt out, module options)
loads SentenceTransformer.

Imported only when a model is loaded: it imports torch.
"""

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

MODULE_PREFIX = "sentence_transformers."
TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
# sentence_bert_config.json keys that do not change the computation when they say this.
PLAIN_MODULE_CONFIG = {"do_lower_case": False}


def is_plain(model_dir: Path) -> bool:
    """Whether the model folder is Transformer -> mean Pooling [-> Normalize] with nothing else that
    sentence-transformers would apply (prompts, lower-casing, model arguments, other modules)."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        bert_config = json.loads((model_dir / "sentence_bert_config.json").read_text())
        st_config_file = model_dir / "config_sentence_transformers.json"
        st_config = json.loads(st_config_file.read_text()) if st_config_file.exists() else {}
    except (OSError, ValueError):
        return False
    kinds = [m.get("type", "").removeprefix(MODULE_PREFIX).rpartition(".")[2] for m in modules]
    if kinds not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]) or modules[0].get("path"):
        return False
    if not (model_dir / "tokenizer.json").exists() or not _mean_pooling(model_dir / modules[1]["path"]):
        return False
    options = {k: v for k, v in bert_config.items() if k != "max_seq_length"}
    if not bert_config.get("max_seq_length") or any(
        k not in PLAIN_MODULE_CONFIG or PLAIN_MODULE_CONFIG[k] != v for k, v in options.items()
    ):
        return False
    return _known_st_config(st_config)


def _known_st_config(st_config: dict) -> bool:
    """Prompts are put before the texts by the embedder, and similarity_fn_name is read by it: a model
    with only these computes like one without them (modality or task configs route elsewhere)."""
    known = {"__version__", "prompts", "default_prompt_name", "similarity_fn_name", "model_type"}
    return (
        set(st_config) <= known
        and st_config.get("model_type", "SentenceTransformer") == "SentenceTransformer"
    )


def _mean_pooling(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    if config.get("include_prompt", True) is not True:  # prompt tokens left out of the mean
        return False
    modes = {k for k, on in config.items() if k.startswith("pooling_mode_") and on is True}
    extra = (
        set(config)
        - {"word_embedding_dimension", "include_prompt"}
        - {k for k in config if k.startswith("pooling_mode_")}
    )
    return modes == {"pooling_mode_mean_tokens"} and not extra


class PlainEncoder(torch.nn.Module):
    """The forward pass of a plain model: `preprocess(texts)` -> features -> `{"sentence_embedding"}`,
    the interface the embedder uses of a SentenceTransformer."""

    def __init__(self, model_dir: Path, max_seq_length: int, device: str):
        from transformers import AutoModel

        super().__init__()
        self.network = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device)
        self._setup_tokenizer(model_dir, max_seq_length)

    def _setup_tokenizer(self, model_dir: Path, max_seq_length: int) -> None:
        """The fast tokenizer as sentence-transformers sets it up (truncation, right padding), and
        whether the model ends in Normalize."""
        modules = json.loads((model_dir / "modules.json").read_text())
        self.normalize = len(modules) == 3
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.pad_token_id = _pad_token_id(model_dir, self.tokenizer)
        self.tokenizer.enable_truncation(max_seq_length)
        self.tokenizer.enable_padding(
            pad_id=self.pad_token_id, pad_token=self.tokenizer.id_to_token(self.pad_token_id)
        )

    def get_embedding_dimension(self) -> int:
        return int(self.network.config.hidden_size)

    def preprocess(self, texts: list[str]) -> dict:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {"input_ids": "ids", "token_type_ids": "type_ids", "attention_mask": "attention_mask"}
        return {key: torch.tensor([getattr(e, name) for e in encodings]) for key, name in columns.items()}

    def forward(self, features: dict) -> dict:
        tokens = self.network(**features, return_dict=True)[0]
        return {**features, "sentence_embedding": self.pool(tokens, features["attention_mask"])}

    def pool(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over the unmasked tokens (summed in fp32, cast back), then Normalize if the model has it."""
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        wide = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        total = (tokens * mask).sum(dim=1, dtype=wide)
        pooled = (total / torch.clamp(mask.sum(dim=1, dtype=wide), min=1e-9)).to(tokens.dtype)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled


def _pad_token_id(model_dir: Path, tokenizer: Tokenizer) -> int:
    """The id of the tokenizer config's pad token ([PAD] when it names none), else 0."""
    try:
        pad = json.loads((model_dir / "tokenizer_config.json").read_text()).get("pad_token")
    except (OSError, ValueError):
        pad = None
    pad = pad.get("content") if isinstance(pad, dict) else pad
    found = tokenizer.token_to_id(pad or "[PAD]")
    return found if found is not None else 0
