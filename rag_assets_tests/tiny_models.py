"""Small embedding models made by the tests (rag_assets/testing/tiny_model.py): two BERT layers of
32 dimensions with random weights (fixed seed), in the sentence-transformers layout with the bundled
MiniLM's tokenizer, so no network is needed; prompts and similarity as a model's authors write them."""

from pathlib import Path

from rag_assets.testing.tiny_model import make_tiny_model

HIDDEN = 32


def tiny_model(folder: Path, *, max_seq_length: int = 128, **config) -> Path:
    """A two-layer BERT (hidden size 32) in `folder`; `config`: prompts, default_prompt_name,
    similarity_fn_name, normalize, seed (see make_tiny_model)."""
    return make_tiny_model(
        folder, dimension=HIDDEN, layers=2, max_seq_length=max_seq_length, keep_existing=False, **config
    )
