"""Triton Python-backend model that serves a CityBrain artifact (copied as ``<version>/model.py``).

This file is not imported by the platform: :mod:`model_store.triton.repository` copies it into
every exported model's version folder, where Triton's Python-backend stub runs it. It loads the
artifact with :func:`model_store.formats.load_model`, exactly as the embedded runtime does, so
both runtimes return the same outputs.

The stub runs its own interpreter, which does not know the platform's virtual environment: the
``CITYBRAIN_PYTHONPATH`` parameter of ``config.pbtxt`` lists the folders (the one holding
``model_store`` first, then site-packages folders) that are put at the front of ``sys.path``
before ``model_store`` is imported.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

_TRITON_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def _parameter(config: dict[str, Any], name: str) -> str:
    value = config.get("parameters", {}).get(name, {}).get("string_value", "")
    return str(value)


def _extend_sys_path(paths: str) -> None:
    # Site folders go through site.addsitedir so their .pth files (editable installs) apply;
    # everything is moved in front of the stub's own entries so the platform's numpy/torch win.
    before = list(sys.path)
    for entry in paths.split(os.pathsep):
        if entry and os.path.isdir(entry) and entry not in before:
            if os.path.basename(entry) in ("site-packages", "dist-packages"):
                site.addsitedir(entry)
            else:
                sys.path.append(entry)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


class TritonPythonModel:
    """Adapter from Triton's Python backend to a CityBrain :class:`LoadedModel`."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the artifact that lies next to this file.

        Args:
            args: Triton's model arguments (``model_config`` is the JSON model config).
        """
        config = json.loads(args["model_config"])
        _extend_sys_path(_parameter(config, "CITYBRAIN_PYTHONPATH"))

        from model_store.formats import load_model
        from model_store.manifest import ModelManifest

        here = Path(__file__).resolve().parent
        manifest = ModelManifest.model_validate_json(
            (here / _parameter(config, "CITYBRAIN_MANIFEST")).read_text(encoding="utf-8")
        )
        self._model = load_model(manifest, here / _parameter(config, "CITYBRAIN_ARTIFACT"))
        self._inputs = [spec.name for spec in manifest.inputs]
        self._batched = manifest.batched
        self._outputs = [
            (out["name"], _TRITON_TO_NUMPY[out["data_type"]]) for out in config["output"]
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run a list of requests (a dynamic batch) and answer each one.

        Requests whose inputs agree on dtype and non-batch dimensions are concatenated along
        dimension 0 and run in one ``predict`` call, as the embedded runtime's batcher does.

        Args:
            requests: Triton's requests.

        Returns:
            One response per request, in order.
        """
        decoded: list[dict[str, np.ndarray[Any, Any]]] = []
        for request in requests:
            arrays: dict[str, np.ndarray[Any, Any]] = {}
            for name in self._inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                arrays[name] = tensor.as_numpy()
            decoded.append(arrays)
        responses: list[Any] = [None] * len(requests)
        for group in self._groups(decoded):
            for index, result in zip(group, self._run([decoded[i] for i in group]), strict=True):
                responses[index] = result
        return responses

    def _groups(self, decoded: list[dict[str, np.ndarray[Any, Any]]]) -> list[list[int]]:
        if not self._batched:
            return [[i] for i in range(len(decoded))]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, arrays in enumerate(decoded):
            key = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(arrays.items()))
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _run(self, batch: list[dict[str, np.ndarray[Any, Any]]]) -> list[Any]:
        try:
            if len(batch) == 1:
                merged = batch[0]
            else:
                merged = {
                    name: np.concatenate([arrays[name] for arrays in batch], axis=0)
                    for name in self._inputs
                }
            outputs = self._model.predict(merged)
            rows = [next(iter(arrays.values())).shape[0] for arrays in batch]
            parts = self._split(outputs, rows) if len(batch) > 1 else [outputs]
            return [self._response(part) for part in parts]
        except Exception as e:
            error = pb_utils.TritonError(f"the model raised {type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in batch]

    @staticmethod
    def _split(
        outputs: dict[str, np.ndarray[Any, Any]], rows: list[int]
    ) -> list[dict[str, np.ndarray[Any, Any]]]:
        offsets = np.cumsum(rows[:-1]).tolist()
        pieces = {name: np.split(np.asarray(v), offsets, axis=0) for name, v in outputs.items()}
        return [{name: parts[i] for name, parts in pieces.items()} for i in range(len(rows))]

    def _response(self, outputs: dict[str, np.ndarray[Any, Any]]) -> Any:
        tensors = []
        for name, dtype in self._outputs:
            value = np.asarray(outputs[name])
            if value.dtype != dtype and dtype is not np.object_:
                value = value.astype(dtype)
            tensors.append(pb_utils.Tensor(name, np.ascontiguousarray(value)))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        """Release the model."""
        model = getattr(self, "_model", None)
        if model is not None:
            model.close()
