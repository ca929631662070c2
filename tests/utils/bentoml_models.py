"""Tiny models and real ``.bentomodel`` archives for the importer tests.

The archives are built by the real bentoml package in a child process with its own
``BENTOML_HOME`` (bentoml fixes its model store at import time, and its deprecation warnings
would trip ``filterwarnings = error`` in the test process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["ONNX_B", "ONNX_W", "build_bentomodels", "make_onnx_graph"]

ONNX_W = np.array([[1.0, -2.0], [0.5, 3.0], [2.0, 0.0]], dtype=np.float32)
ONNX_B = np.array([0.25, -1.0], dtype=np.float32)


def make_onnx_graph(path: Path) -> Path:
    """Write ``y = x @ W + b`` (x: [batch, 3] FP32, y: [batch, 2]) as an ONNX file."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            helper.make_tensor("W", TensorProto.FLOAT, [3, 2], ONNX_W.ravel().tolist()),
            helper.make_tensor("B", TensorProto.FLOAT, [2], ONNX_B.tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


_SCRIPT = r'''
import os, sys
from pathlib import Path
import bentoml, onnx, torch

out = Path(sys.argv[1])

class Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0

readme = """---
license: apache-2.0
tags: [traffic, smoothing]
pipeline_tag: tabular-regression
language: [en, zh]
model-index:
- name: doubler
  results:
  - task: {type: tabular-regression}
    metrics:
    - {type: mae, name: mae, value: 0.125}
---
# Doubler

Doubles flows, then adds one.
"""
io = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    "accuracy": 0.97,
}
ts = bentoml.torchscript.save_model(
    "doubler", torch.jit.script(Doubler().eval()),
    signatures={"__call__": {"batchable": True, "batch_dim": 0}}, metadata=io,
    labels={"team": "traffic"},
)
Path(bentoml.models.get(ts.tag).path_of("README.md")).write_text(readme, encoding="utf-8")
bentoml.models.export_model(ts.tag, str(out / "doubler.bentomodel"))

ox = bentoml.onnx.save_model(
    "affine", onnx.load(str(out / "affine.onnx")),
    signatures={"run": {"batchable": True, "batch_dim": 0}},
)
bentoml.models.export_model(ox.tag, str(out / "affine.bentomodel"))

pk = bentoml.picklable_model.save_model("pickled", {"a": 1})
bentoml.models.export_model(pk.tag, str(out / "pickled.bentomodel"))
'''


def build_bentomodels(out: Path) -> dict[str, Path]:
    """Export a torchscript (with README), an ONNX and a picklable BentoML model to ``out``."""
    make_onnx_graph(out / "affine.onnx")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENTOML_")}
    env.update(BENTOML_HOME=str(out / "bentoml-home"), BENTOML_DO_NOT_TRACK="True")
    env["PYTHONWARNINGS"] = "ignore"
    # A file, not ``-c``: torch.jit.script reads the module's source.
    script = out / "make_bentomodels.py"
    script.write_text(_SCRIPT, encoding="utf-8")
    subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, timeout=300)
    return {name: out / f"{name}.bentomodel" for name in ("doubler", "affine", "pickled")}
