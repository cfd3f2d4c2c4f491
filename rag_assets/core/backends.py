"""EMBEDDING_BACKEND: what computes the embedding model, and the extra each backend needs.

- `torch`: PyTorch, in the default install.
- `onnx`: ONNX Runtime on the model exported to ONNX (fp32), extra `[onnx]`.
- `onnx-int8`: the same export with its weights quantized to int8 (dynamic quantization), `[onnx]`.
- `openvino`: OpenVINO on the model exported to its IR, extra `[openvino]`.

The exports are made once per model identity into the data directory, never downloaded
(rag_assets/resources/backends.py).
"""

import sys
from importlib.util import find_spec

BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
DEFAULT_BACKEND = BACKENDS[0]
# backend -> (extra, the modules it brings that the backend imports)
EXTRAS = {
    "onnx": ("onnx", ("onnxruntime", "onnx")),
    "onnx-int8": ("onnx", ("onnxruntime", "onnx")),
    "openvino": ("openvino", ("openvino", "onnx")),
}


def missing_extra(backend: str) -> str | None:
    """None when the backend can run here; else what to install, in one line naming the extra."""
    if backend not in EXTRAS:
        return None
    extra, modules = EXTRAS[backend]
    absent = [m for m in modules if not _importable(m)]
    if not absent:
        return None
    return f"needs the [{extra}] extra ({', '.join(absent)} not installed): pip install 'rag_assets[{extra}]'"


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is absent (or blocked: None in sys.modules)
        return False
