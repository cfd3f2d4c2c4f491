"""A tiny embedding model made on the spot, in the sentence-transformers layout, for the scale benchmark
and the tests: the pipeline's own costs measured without the model's, and models with prompts or
another similarity function without a download.

A BERT of `layers` layers with random (seeded, so deterministic) weights and the bundled model's
tokenizer: Transformer -> mean Pooling [-> Normalize]. `prompts`, `default_prompt_name` and
`similarity_fn_name` go into config_sentence_transformers.json as a model's authors write them.
Its vectors mean nothing; their number, width and flow are real.
"""

import json
import shutil
from pathlib import Path

from rag_assets.core.model_files import resolve_model_dir

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def make_tiny_model(
    folder: Path,
    *,
    dimension: int = 32,
    layers: int = 1,
    max_seq_length: int = 256,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    similarity_fn_name: str | None = None,
    normalize: bool = True,
    seed: int = 0,
    keep_existing: bool = True,
) -> Path:
    """Write the model into `folder` and return the folder; a model already there is kept unless
    `keep_existing` is false (then it is written again, with these settings)."""
    folder = Path(folder)
    if keep_existing and (folder / "modules.json").exists():
        return folder
    import torch
    from transformers import BertConfig, BertModel

    bundled = resolve_model_dir(BUNDLED_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled / name, folder / name)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=json.loads((bundled / "config.json").read_text())["vocab_size"],
        hidden_size=dimension,
        num_hidden_layers=layers,
        num_attention_heads=max(1, dimension // 16),
        intermediate_size=dimension * 2,
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
            "word_embedding_dimension": dimension,
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
