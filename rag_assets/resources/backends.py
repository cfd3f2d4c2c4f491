"""The ONNX Runtime and OpenVINO backends (EMBEDDING_BACKEND, rag_assets/core/backends.py): the model's
transformer exported once into the data directory, then run by the backend, with the same tokenizer,
mean pooling and normalization as `PlainEncoder` (resources/encoder.py).

- `onnx`: the transformer exported to ONNX (fp32) by torch.onnx, run by ONNX Runtime.
- `onnx-int8`: that export with its weights quantized to int8 by ONNX Runtime's dynamic quantization
  (activations quantized per batch at run time): the int8 path of AVX-512 VNNI / AVX2 CPUs.
- `openvino`: the ONNX export converted to OpenVINO's IR (fp32), compiled for the CPU.

Exports live in `<exports_dir>/<identity of the weights>/` and are made once (written to a temporary
name, then renamed: a process that loses the race reads the winner's); nothing is ever downloaded.
Only the plain layout (Transformer -> mean Pooling [-> Normalize]) has a backend; any other model is
refused in one line. Imported only when such a backend is used: it imports torch and the backend.
"""

import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rag_assets.core.backends import missing_extra
from rag_assets.resources.encoder import PlainEncoder, is_plain

OPSET = 17
ONNX_FILE, INT8_FILE, OPENVINO_FILE = "model.onnx", "model_int8.onnx", "openvino/model.xml"


class BackendUnavailable(ValueError):
    """EMBEDDING_BACKEND cannot compute this model here: one line naming why."""


def backend_encoder(backend: str, model_dir: Path, max_seq_length: int, exports_dir: Path):
    """A PlainEncoder-like encoder of `model_dir` on `backend` (onnx, onnx-int8, openvino)."""
    missing = missing_extra(backend)
    if missing:
        raise BackendUnavailable(f"EMBEDDING_BACKEND={backend!r}: {missing}")
    if not is_plain(model_dir):
        raise BackendUnavailable(
            f"EMBEDDING_BACKEND={backend!r}: only models of the plain layout (Transformer, mean Pooling, "
            f"Normalize) have a backend here; {model_dir.name} is computed by torch (EMBEDDING_BACKEND=torch)"
        )
    path = export(backend, model_dir, exports_dir)
    return BackendEncoder(backend, path, model_dir, max_seq_length)


def export(backend: str, model_dir: Path, exports_dir: Path) -> Path:
    """The backend's model file in `exports_dir`, made from the weights the first time."""
    exports_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = exports_dir / ONNX_FILE
    if not onnx_path.exists():
        _atomically(onnx_path, lambda tmp: _export_onnx(model_dir, tmp))
    if backend == "onnx":
        return onnx_path
    if backend == "onnx-int8":
        int8_path = exports_dir / INT8_FILE
        if not int8_path.exists():
            _atomically(int8_path, lambda tmp: _quantize_int8(onnx_path, tmp))
        return int8_path
    xml = exports_dir / OPENVINO_FILE
    if not xml.exists():
        xml.parent.mkdir(exist_ok=True)
        _save_openvino(onnx_path, xml)
    return xml


def _atomically(path: Path, write) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as folder:
        tmp = Path(folder) / path.name
        write(tmp)
        os.replace(tmp, path)


def input_names(model_dir: Path) -> list[str]:
    """What the transformer takes: BERT-like models a token_type_ids too."""
    config = json.loads((model_dir / "config.json").read_text())
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if config.get("type_vocab_size") else [])


def _export_onnx(model_dir: Path, path: Path) -> None:
    from transformers import AutoModel

    network = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    names = input_names(model_dir)
    sample = {name: torch.ones((2, 8), dtype=torch.long) for name in names}

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.network = network

        def forward(self, *inputs):
            return self.network(**dict(zip(names, inputs)), return_dict=True)[0]

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    # The tracer warns of Python branches it fixes at trace time (masks, padding): shapes stay dynamic.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(),
            tuple(sample[name] for name in names),
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _quantize_int8(onnx_path: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It advises, on the root logger, an optional pre-processing pass (not tried here): not a line for
    # the user of a command.
    root = logging.getLogger()
    advice = logging.Filter("advice")  # passes only records of a logger named "advice": none
    root.addFilter(advice)
    try:
        quantize_dynamic(str(onnx_path), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(advice)


def _save_openvino(onnx_path: Path, xml: Path) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".export-") as folder:
        tmp = Path(folder) / xml.name
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)


class BackendEncoder(PlainEncoder):
    """PlainEncoder's tokenizer and pooling around a backend's run of the exported transformer."""

    def __init__(self, backend: str, path: Path, model_dir: Path, max_seq_length: int):
        torch.nn.Module.__init__(self)
        self._setup_tokenizer(model_dir, max_seq_length)
        self.backend = backend
        self.names = input_names(model_dir)
        self.hidden_size = int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
        if backend == "openvino":
            import openvino as ov

            self._run = _openvino_runner(ov.Core().compile_model(str(path), "CPU"))
        else:
            self._run = _onnx_runner(path)

    def get_embedding_dimension(self) -> int:
        return self.hidden_size

    def forward(self, features: dict) -> dict:
        inputs = {name: features[name].cpu().numpy().astype(np.int64) for name in self.names}
        tokens = torch.from_numpy(np.ascontiguousarray(self._run(inputs)))
        return {**features, "sentence_embedding": self.pool(tokens, features["attention_mask"])}


def _onnx_runner(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    # Threads that wait by sleeping, not spinning: on a shared 2-core CPU, spinning threads took the
    # cores from the ones doing work (int8: 2,800 tokens/s spinning, 3,650 not, same batch, load ~8).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(["last_hidden_state"], inputs)[0]


def _openvino_runner(compiled):
    request = compiled.create_infer_request()
    return lambda inputs: request.infer(inputs)[compiled.output(0)]
