"""The interface every model format's loader produces."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from model_store.manifest import ModelManifest

__all__ = ["Arrays", "LoadedModel", "Loader", "OutputMismatchError"]

Arrays = dict[str, npt.NDArray[Any]]
"""Named tensors: input or output name → numpy array."""


class OutputMismatchError(TypeError):
    """A model's raw outputs cannot be mapped onto its declared output signature."""


@runtime_checkable
class LoadedModel(Protocol):
    """A model in memory, ready to predict.

    ``predict`` may be called from worker threads, but never concurrently for one instance by
    the embedded runtime. Input arrays may be read-only views of the request body.
    """

    def predict(self, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model.

        Args:
            inputs: Every declared input, by name.

        Returns:
            Every declared output, by name.
        """
        ...

    def close(self) -> None:
        """Release the model's resources; the instance is not used afterwards."""
        ...


class Loader(Protocol):
    """Turns a manifest and a local artifact file into a :class:`LoadedModel`."""

    def __call__(self, manifest: ModelManifest, artifact_path: Path) -> LoadedModel:
        """Load the model.

        Args:
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.

        Returns:
            The loaded model.
        """
        ...
