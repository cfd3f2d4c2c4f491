"""Small embedding models made by the tests: a two-layer BERT with random weights (fixed seed), saved
in the sentence-transformers layout with the bundled MiniLM's tokenizer, so no network is needed.

`prompts`, `default_prompt_name` and `similarity_fn_name` go into config_sentence_transformers.json as
a model's authors write them; `normalize` adds the Normalize module.
"""

import json
import shutil
from pathlib import Path

from rag_assets.core.model_files import resolve_model_dir

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HIDDEN = 32


def tiny_model(
    folder: Path,
    *,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    similarity_fn_name: str | None = None,
    normalize: bool = True,
    seed: int = 0,
    max_seq_length: int = 128,
) -> Path:
    """A two-layer BERT (hidden size 32) in `folder`, laid out as sentence-transformers saves one."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    minilm = resolve_model_dir(MINILM)
    for name in TOKENIZER_FILES:
        shutil.copy(minilm / name, folder / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(folder)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append(
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
        )
        (folder / "2_Normalize").mkdir(exist_ok=True)
    _write(folder / "modules.json", modules)
    _write(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    (folder / "1_Pooling").mkdir(exist_ok=True)
    _write(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": HIDDEN,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    st_config: dict = {"prompts": prompts or {}, "default_prompt_name": default_prompt_name}
    if similarity_fn_name:
        st_config["similarity_fn_name"] = similarity_fn_name
    _write(folder / "config_sentence_transformers.json", st_config)
    return folder


def _write(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2))
