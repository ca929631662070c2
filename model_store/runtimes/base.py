"""The interface every serving runtime implements (embedded, Triton, KServe)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from model_store.manifest import ModelManifest

__all__ = ["ModelStats", "Runtime", "RuntimeObserver", "RuntimeStats"]


class RuntimeObserver(Protocol):
    """Receives serving measurements, e.g. to export them as Prometheus metrics.

    Calls happen on the event loop; implementations must be quick and must not raise (errors
    are logged and ignored).
    """

    def on_batch(self, model_key: str, size: int) -> None:
        """Report that a batch of ``size`` rows was dispatched to the model."""
        ...

    def on_queue_depth(self, model_key: str, depth: int) -> None:
        """Report the number of requests now waiting in the model's queue."""
        ...


@dataclass(slots=True)
class ModelStats:
    """Counters of one registered model.

    Attributes:
        key: The model's key in the runtime.
        loaded: Whether it is in memory now.
        memory_bytes: Its memory estimate while loaded.
        queue_depth: Requests waiting to be batched.
        requests: Requests served since registration.
        batches: Batches (predict calls) run since registration.
        batch_sizes: How many batches had each size (rows).
        loads: How many times it was loaded.
    """

    key: str
    loaded: bool = False
    memory_bytes: int = 0
    queue_depth: int = 0
    requests: int = 0
    batches: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)
    loads: int = 0


@dataclass(slots=True)
class RuntimeStats:
    """A snapshot of a runtime.

    Attributes:
        models: Per-model counters, by key.
        memory_used_bytes: The sum of loaded models' memory estimates.
        memory_budget_bytes: The configured budget.
        loaded_models: How many models are in memory.
    """

    models: dict[str, ModelStats]
    memory_used_bytes: int
    memory_budget_bytes: int
    loaded_models: int


class Runtime(abc.ABC):
    """Serves models by key (e.g. ``"traffic-police.flow-smoother:3"``).

    A model is first made known with :meth:`register` (cheap; the runtime may load lazily) or
    :meth:`load` (loads now), then served with :meth:`infer`.
    """

    @abc.abstractmethod
    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Make a model servable under ``key`` without loading it yet (idempotent).

        Args:
            key: The runtime key, unique per model version.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.
        """

    @abc.abstractmethod
    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Register a model and load it now.

        Args:
            key: The runtime key, unique per model version.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.

        Raises:
            ModelUnavailableError: The model could not be loaded.
        """

    @abc.abstractmethod
    async def infer(
        self, key: str, inputs: dict[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model on checked inputs.

        Args:
            key: The runtime key.
            inputs: Every declared input, by name (see ``v2.check_inputs``).

        Returns:
            Every output, by name.

        Raises:
            ModelUnavailableError: Unknown key, or the model cannot be loaded.
            QueueFullError: Too many requests are waiting.
            InferenceInputError: The inputs do not fit the batching contract.
            InferenceFailedError: The model raised.
        """

    @abc.abstractmethod
    def is_ready(self, key: str) -> bool:
        """Tell whether ``key`` can serve now (registered, and its last load did not fail).

        Args:
            key: The runtime key.

        Returns:
            True if an :meth:`infer` call is expected to succeed.
        """

    @abc.abstractmethod
    async def unload(self, key: str) -> None:
        """Unload and forget a model; waiting requests fail with ``ModelUnavailableError``.

        Args:
            key: The runtime key (unknown keys are ignored).
        """

    @abc.abstractmethod
    def stats(self) -> RuntimeStats:
        """Return a snapshot of the runtime's counters."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every model and worker."""
