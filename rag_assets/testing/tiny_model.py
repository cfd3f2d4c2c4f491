"""A tiny embedding model made on the spot, in the sentence-transformers layout, for scale tests and the
scale benchmark: the pipeline's own costs measured without the model's.

A one-layer BERT with random (seeded, so deterministic) weights and the bundled model's tokenizer:
Transformer -> mean Pooling -> Normalize, which rag_assets computes with transformers alone
(resources/encoder.py). Its vectors mean nothing; their number, width and flow are real.
"""

import json
import shutil
from pathlib import Path

from rag_assets.core.model_files import resolve_model_dir

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def make_tiny_model(folder: Path, *, dimension: int = 32, layers: int = 1, max_seq_length: int = 256) -> Path:
    """Write the model into `folder` (once: an existing model there is kept) and return the folder."""
    folder = Path(folder)
    if (folder / "modules.json").exists():
        return folder
    import torch
    from transformers import BertConfig, BertModel

    bundled = resolve_model_dir(BUNDLED_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(bundled / name, folder / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=json.loads((bundled / "config.json").read_text())["vocab_size"],
        hidden_size=dimension,
        num_hidden_layers=layers,
        num_attention_heads=max(1, dimension // 16),
        intermediate_size=dimension * 2,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": dimension, "pooling_mode_mean_tokens": True})
    )
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder
