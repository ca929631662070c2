"""The interface every serving runtime implements (embedded, Triton, KServe)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from model_store.manifest import ModelManifest

__all__ = [
    "ModelStats",
    "RegisteredModel",
    "Runtime",
    "RuntimeObserver",
    "RuntimeStats",
    "TableRuntime",
]


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

    @classmethod
    def of(cls, models: dict[str, ModelStats], memory_budget_bytes: int = 0) -> RuntimeStats:
        """Sum per-model counters into a snapshot.

        Args:
            models: Per-model counters, by key (``memory_bytes`` 0 when not loaded).
            memory_budget_bytes: The configured budget (0: the backend holds the models).

        Returns:
            The snapshot, with memory used and loaded models counted from ``models``.
        """
        return cls(
            models=models,
            memory_used_bytes=sum(m.memory_bytes for m in models.values()),
            memory_budget_bytes=memory_budget_bytes,
            loaded_models=sum(1 for m in models.values() if m.loaded),
        )


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


class RegisteredModel(Protocol):
    """What a runtime's record of a registered model holds at least."""

    @property
    def manifest(self) -> ModelManifest:
        """The artifact's manifest."""
        ...

    @property
    def artifact_path(self) -> Path:
        """A local file holding the artifact."""
        ...


EntryT = TypeVar("EntryT", bound=RegisteredModel)


class TableRuntime(Runtime, Generic[EntryT]):
    """A runtime that keeps its own table of registered models, by key.

    Registration (idempotent, refusing another artifact under a known key) and "load now"
    (register, then load) are the same for every such runtime; a subclass says how to build its
    record (:meth:`_new_entry`) and how to load a registered model (:meth:`_load_registered`).
    """

    _models: dict[str, EntryT]

    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Make a model servable under ``key``; it loads on :meth:`load` or its first request.

        Args:
            key: The runtime key, unique per model version.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.

        Raises:
            ValueError: ``key`` is registered with a different artifact or manifest.
        """
        path = Path(artifact_path)
        current = self._models.get(key)
        if current is not None:
            if current.artifact_path != path or current.manifest != manifest:
                raise ValueError(f"model '{key}' is registered with another artifact")
            return
        self._models[key] = self._new_entry(key, manifest, path)

    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Register a model (:meth:`register`, the same arguments) and load it now.

        Raises:
            ModelUnavailableError: The model could not be loaded (the runtime's
                :meth:`_load_registered` says why it may fail).
        """
        self.register(key, manifest, artifact_path)
        await self._load_registered(key)

    @abc.abstractmethod
    def _new_entry(self, key: str, manifest: ModelManifest, artifact_path: Path) -> EntryT:
        """Return the record of a model registered now."""

    @abc.abstractmethod
    async def _load_registered(self, key: str) -> None:
        """Load the registered model ``key`` now (no-op when it is loaded)."""
