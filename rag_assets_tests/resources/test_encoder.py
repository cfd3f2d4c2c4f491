"""The plain encoder: sentence-transformers' vectors, bit for bit, without importing it."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from rag_assets.resources.embedder import Embedder
from rag_assets.resources.encoder import PlainEncoder, is_plain

TEXTS = [f"Section {i}: {'the ORM maps models to tables. ' * (i % 9)}End." for i in range(24)] + [
    "long " * 400
]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_plain_encoder_computes_sentence_transformers_vectors_bit_for_bit(precision):
    embedder = Embedder("all-MiniLM-L6-v2", device="cpu", precision=precision)
    assert isinstance(embedder.model, PlainEncoder)
    reference = embedder.sentence_transformer
    features = reference.preprocess(TEXTS)
    assert all(torch.equal(features[k], v) for k, v in embedder.model.preprocess(TEXTS).items())
    with torch.inference_mode():
        ours = embedder.model(dict(features))["sentence_embedding"]
        theirs = reference(dict(features))["sentence_embedding"]
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
    assert embedder.model.get_embedding_dimension() == reference.get_embedding_dimension() == 384


def _copy_with_pooling(model_dir, tmp_path, **modes):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    config = copy / "1_Pooling" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **modes}))
    return copy


def test_a_model_of_another_layout_is_computed_by_sentence_transformers(tmp_path):
    bundled = Embedder("all-MiniLM-L6-v2").model_dir
    assert is_plain(bundled)
    cls_pooling = _copy_with_pooling(
        bundled, tmp_path, pooling_mode_mean_tokens=False, pooling_mode_cls_token=True
    )
    assert not is_plain(cls_pooling)
    embedder = Embedder(str(cls_pooling), device="cpu", precision="fp32")
    assert embedder.model is embedder.sentence_transformer
    reference = embedder.sentence_transformer.encode(TEXTS[:4], normalize_embeddings=True)
    assert np.allclose(embedder.embed(TEXTS[:4]), reference, atol=1e-5)


@pytest.mark.slow  # starts a Python process, so that its imports are its own
def test_embedding_with_the_bundled_model_never_imports_sentence_transformers():
    script = (
        "import sys\n"
        "from rag_assets.resources.embedder import Embedder\n"
        "Embedder('all-MiniLM-L6-v2', device='cpu').embed(['one text', 'and another'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sentence_transformers', 'sklearn')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
