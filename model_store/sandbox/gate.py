"""A guard in front of a runtime that cannot confine tenant code (Triton's python backend).

Triton runs each python-backend model in a stub process of its own, which keeps a crash out of
the server, but the stub inherits the server's user, environment, file system and network:
it is no sandbox. :class:`TenantCodeGate` wraps such a runtime and refuses to load a model of
a tenant-code format (``python``) unless the trust policy allows it; a refused model answers
503 saying where it can run instead. TorchScript models pass through untouched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from model_store.errors import ModelUnavailableError
from model_store.manifest import ModelManifest
from model_store.runtimes.base import Runtime, RuntimeStats
from model_store.sandbox.config import runs_tenant_code
from model_store.sandbox.policy import TrustPolicy

__all__ = ["TenantCodeGate"]


class TenantCodeGate(Runtime):
    """Delegates to ``inner``, except untrusted tenant code, which it refuses with 503.

    Args:
        inner: The runtime (e.g. a ``TritonRuntime``).
        trusted: The trust policy (runtime key → may its code run there).
        name: The runtime's name, for messages (``"triton"``).
    """

    def __init__(self, inner: Runtime, trusted: TrustPolicy, *, name: str) -> None:
        self.inner = inner
        self._trusted = trusted
        self._name = name
        self._refused: set[str] = set()

    def _refusal(self, key: str) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"model '{key}' is python code the operator has not trusted, and the {self._name} "
            "runtime does not isolate it; publish it for the embedded runtime, which runs it "
            "in a sandbox"
        )

    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Record the model with the inner runtime (the trust check happens on load)."""
        self.inner.register(key, manifest, artifact_path)

    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Load through the inner runtime if the model runs no untrusted code.

        Raises:
            ModelUnavailableError: Untrusted tenant code, or the inner runtime failed.
        """
        if runs_tenant_code(manifest.format):
            try:
                trusted = await asyncio.to_thread(self._trusted, key)
            except Exception:
                trusted = False
            if not trusted:
                self._refused.add(key)
                raise self._refusal(key)
        self._refused.discard(key)
        await self.inner.load(key, manifest, artifact_path)

    async def infer(
        self, key: str, inputs: dict[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run the model on the inner runtime (503 for a refused one)."""
        if key in self._refused:
            raise self._refusal(key)
        return await self.inner.infer(key, inputs)

    def is_ready(self, key: str) -> bool:
        """A refused model is never ready."""
        return key not in self._refused and self.inner.is_ready(key)

    async def unload(self, key: str) -> None:
        """Unload from the inner runtime and forget any refusal."""
        self._refused.discard(key)
        await self.inner.unload(key)

    def stats(self) -> RuntimeStats:
        """The inner runtime's counters."""
        return self.inner.stats()

    async def close(self) -> None:
        """Close the inner runtime."""
        await self.inner.close()
