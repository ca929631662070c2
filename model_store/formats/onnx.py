"""The ``onnx`` format: an ONNX graph run on CPU by onnxruntime.

The manifest's inputs and outputs are matched to the graph's by name, so their order in the
manifest does not matter. The graph is handed to onnxruntime as bytes, never as a path: an
ONNX file may name external data files, and a published artifact must not make the server
read files next to it (or anywhere else), so such graphs fail to load.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from model_store.formats.base import Arrays, OutputMismatchError
from model_store.manifest import ModelManifest, TensorSpec

__all__ = ["OnnxModel", "load_onnx", "onnx_signature"]

_ONNX_TO_V2: Final[dict[str, str]] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

_THREADS_LOCK = threading.Lock()
_threads: int | None = None


def _session(graph: bytes) -> ort.InferenceSession:
    global _threads
    with _THREADS_LOCK:
        if _threads is None:
            # The same share of the cores the torchscript format gives torch.
            env = os.environ.get("CITYBRAIN_TORCH_THREADS")
            _threads = int(env) if env else max(1, min(8, (os.cpu_count() or 2) // 2))
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def _spec(arg: Any) -> TensorSpec:
    datatype = _ONNX_TO_V2.get(str(arg.type))
    if datatype is None:
        raise ValueError(f"tensor '{arg.name}' has type {arg.type}, which v2 cannot carry")
    shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
    return TensorSpec(name=arg.name, datatype=datatype, shape=shape)


def onnx_signature(graph: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Read an ONNX graph's inputs and outputs as tensor specs (symbolic dimensions → -1).

    Args:
        graph: The serialized ONNX model.

    Returns:
        The inputs and the outputs.

    Raises:
        ValueError: A tensor's type has no v2 datatype (sequences, maps…).
        Exception: Whatever onnxruntime raises for a graph it cannot load.
    """
    session = _session(graph)
    return [_spec(a) for a in session.get_inputs()], [_spec(a) for a in session.get_outputs()]


class OnnxModel:
    """An onnxruntime session mapped onto a manifest's signature.

    Args:
        session: The loaded session.
        manifest: The manifest; every declared input and output must exist in the graph.

    Raises:
        OutputMismatchError: The manifest names a tensor the graph lacks.
    """

    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest) -> None:
        graph_inputs = {a.name: a for a in session.get_inputs()}
        graph_outputs = {a.name for a in session.get_outputs()}
        for spec in manifest.inputs:
            if spec.name not in graph_inputs:
                raise OutputMismatchError(
                    f"input '{spec.name}' is not an input of the ONNX graph "
                    f"(it has {sorted(graph_inputs)})"
                )
        for spec in manifest.outputs:
            if spec.name not in graph_outputs:
                raise OutputMismatchError(
                    f"output '{spec.name}' is not an output of the ONNX graph "
                    f"(it has {sorted(graph_outputs)})"
                )
        undeclared = sorted(set(graph_inputs) - {s.name for s in manifest.inputs})
        if undeclared:
            raise OutputMismatchError(f"the ONNX graph needs inputs {undeclared} too")
        self._session: ort.InferenceSession | None = session
        self._inputs = [spec.name for spec in manifest.inputs]
        self._outputs = [spec.name for spec in manifest.outputs]

    def predict(self, inputs: Arrays) -> Arrays:
        """Run the graph.

        Args:
            inputs: Every declared input, by name.

        Returns:
            Every declared output, by name.
        """
        assert self._session is not None, "predict after close"
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self._inputs}
        values = self._session.run(self._outputs, feed)
        return {name: np.asarray(value) for name, value in zip(self._outputs, values, strict=True)}

    def close(self) -> None:
        """Drop the session (onnxruntime frees it with the last reference)."""
        self._session = None


def load_onnx(manifest: ModelManifest, artifact_path: Path) -> OnnxModel:
    """Load an ONNX graph onto the CPU.

    Args:
        manifest: The artifact's manifest (format ``onnx``).
        artifact_path: The ``.onnx`` file.

    Returns:
        The loaded model.
    """
    return OnnxModel(_session(Path(artifact_path).read_bytes()), manifest)
