"""Model formats: each turns an artifact file into a :class:`LoadedModel`."""

from __future__ import annotations

from pathlib import Path

from model_store.formats.base import Arrays, LoadedModel, Loader, OutputMismatchError
from model_store.formats.onnx import load_onnx
from model_store.formats.python import load_python
from model_store.formats.torchscript import load_torchscript, save_torchscript
from model_store.manifest import ModelManifest

__all__ = [
    "Arrays",
    "LoadedModel",
    "Loader",
    "OutputMismatchError",
    "load_model",
    "save_torchscript",
]


def load_model(manifest: ModelManifest, artifact_path: Path) -> LoadedModel:
    """Load an artifact with the loader of its manifest's format.

    Args:
        manifest: The artifact's manifest.
        artifact_path: A local file holding the artifact.

    Returns:
        The loaded model.

    Raises:
        Exception: Whatever the format's loader raises for a broken artifact; callers that
            validate uploads turn it into ``InvalidArtifactError``.
    """
    if manifest.format == "torchscript":
        return load_torchscript(manifest, Path(artifact_path))
    if manifest.format == "onnx":
        return load_onnx(manifest, Path(artifact_path))
    return load_python(manifest, Path(artifact_path))
