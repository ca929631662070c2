"""Factories for tiny model artifacts (reused by the gateway tests).

Both models double their FP32 input ``x`` into the FP32 output ``y``; shapes are
``[-1, -1]`` (batch first) and they are batched with ``max_batch_size`` 8.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from model_store.formats.torchscript import save_torchscript
from model_store.manifest import BatchingConfig, ModelManifest, TensorSpec

__all__ = ["DOUBLER_SOURCE", "doubler_manifest", "make_python_model", "make_torchscript_model"]

DOUBLER_SOURCE = '''
import numpy as np


class Doubler:
    """Doubles x into y."""

    def load(self):
        self.factor = np.float32(2.0)

    def predict(self, inputs):
        return {"y": (inputs["x"] * self.factor).astype(np.float32)}
'''


class _Doubler(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def doubler_manifest(
    fmt: str = "torchscript", *, entrypoint: str | None = None, max_batch_size: int = 8
) -> ModelManifest:
    """Return the manifest of the doubling model in the given format."""
    shape = [-1, -1]
    return ModelManifest.model_validate(
        {
            "format": fmt,
            "inputs": [TensorSpec(name="x", datatype="FP32", shape=shape)],
            "outputs": [TensorSpec(name="y", datatype="FP32", shape=shape)],
            "batching": BatchingConfig(max_batch_size=max_batch_size, max_queue_delay_ms=2.0),
            "model_card": "# Doubler\n\nDoubles `x` into `y`.",
            "entrypoint": entrypoint,
        }
    )


def make_torchscript_model(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """Write a TorchScript doubling model; return its path and manifest."""
    path = save_torchscript(_Doubler(), Path(tmp_path) / "doubler.pt")
    return path, doubler_manifest("torchscript")


def write_python_zip(path: Path, files: dict[str, str]) -> Path:
    """Write a zip holding the given ``{archive name: source}`` files."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, source in files.items():
            archive.writestr(name, source)
    return path


def make_python_model(tmp_path: Path) -> tuple[Path, ModelManifest]:
    """Write a python-format doubling model (``doubler:Doubler``); return path and manifest."""
    path = write_python_zip(Path(tmp_path) / "doubler.zip", {"doubler.py": DOUBLER_SOURCE})
    return path, doubler_manifest("python", entrypoint="doubler:Doubler")
