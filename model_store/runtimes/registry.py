"""The runtimes of one deployment as one :class:`~model_store.runtimes.base.Runtime`.

A manifest names the runtime that serves it (``embedded``, ``triton``, ``kserve``). A
:class:`Runtimes` holds one runtime per such name, made on first use where it is costly to
make (a managed Triton server starts nothing until a Triton model is asked for), and routes
every key to the runtime it was registered on. It knows nothing of how a deployment is
configured: the caller passes the runtimes (or factories of them) and, for the names it does not
serve, a hint saying what would configure them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from model_store.errors import ModelUnavailableError
from model_store.manifest import ModelManifest
from model_store.runtimes.base import Runtime, RuntimeStats

__all__ = ["RuntimeFactory", "Runtimes"]

Arrays = dict[str, np.ndarray[Any, Any]]

RuntimeFactory = Callable[[], Runtime]
"""Makes a runtime on first use (e.g. a managed Triton that starts nothing until asked)."""


class Runtimes(Runtime):
    """The runtimes of one deployment, by the manifest ``runtime`` name they serve.

    Each key is served by the runtime it was registered with: ``embedded`` always, the others
    when given (made on first use when given as factories).

    Args:
        embedded: The in-process runtime.
        backends: More runtimes (or factories of them) by name.
        hints: For runtime names this deployment may lack, what would configure them (named
            in the 503 a model on such a runtime gets).
    """

    def __init__(
        self,
        embedded: Runtime,
        backends: Mapping[str, Runtime | RuntimeFactory] | None = None,
        *,
        hints: Mapping[str, str] | None = None,
    ) -> None:
        self.embedded = embedded
        self._wanted: dict[str, Runtime | RuntimeFactory] = {"embedded": embedded}
        self._wanted.update(backends or {})
        self._made: dict[str, Runtime] = {"embedded": embedded}
        self._by_key: dict[str, Runtime] = {}
        self._hints = dict(hints or {})

    @property
    def names(self) -> list[str]:
        """The runtime names this deployment serves."""
        return list(self._wanted)

    def made(self, name: str) -> Runtime | None:
        """Return the runtime ``name`` if it exists yet (factories run on first use).

        Args:
            name: A manifest ``runtime`` name.

        Returns:
            The runtime, or None when it was not made (or is not configured).
        """
        return self._made.get(name)

    def get(self, name: str) -> Runtime:
        """Return the runtime serving manifests whose ``runtime`` is ``name``, made now if need be.

        Args:
            name: A manifest ``runtime`` name.

        Returns:
            The runtime.

        Raises:
            ModelUnavailableError: This deployment does not run it (503, naming it and what
                would configure it).
        """
        made = self._made.get(name)
        if made is not None:
            return made
        wanted = self._wanted.get(name)
        if wanted is None:
            hint = self._hints.get(name)
            raise ModelUnavailableError(
                f"the {name} runtime is not configured on this deployment"
                + (f" (set {hint})" if hint else "")
            )
        made = wanted if isinstance(wanted, Runtime) else wanted()
        self._made[name] = made
        return made

    def _for_key(self, key: str) -> Runtime:
        runtime = self._by_key.get(key)
        if runtime is None:
            raise ModelUnavailableError(f"model '{key}' is not registered")
        return runtime

    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Register ``key`` on the runtime its manifest names.

        Raises:
            ModelUnavailableError: That runtime is not configured.
            ValueError: ``key`` is registered on another runtime already.
        """
        current = self._by_key.get(key)
        runtime = self.get(manifest.runtime)
        if current is not None and current is not runtime:
            raise ValueError(f"model '{key}' is registered on another runtime")
        runtime.register(key, manifest, artifact_path)
        self._by_key[key] = runtime

    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        self.register(key, manifest, artifact_path)
        await self._by_key[key].load(key, manifest, artifact_path)

    async def infer(self, key: str, inputs: Arrays) -> Arrays:
        return await self._for_key(key).infer(key, inputs)

    def is_ready(self, key: str) -> bool:
        runtime = self._by_key.get(key)
        return runtime is not None and runtime.is_ready(key)

    async def unload(self, key: str) -> None:
        runtime = self._by_key.pop(key, None)
        if runtime is not None:
            await runtime.unload(key)

    def stats(self) -> RuntimeStats:
        parts = [runtime.stats() for runtime in self._made.values()]
        return RuntimeStats(
            models={k: v for part in parts for k, v in part.models.items()},
            memory_used_bytes=sum(p.memory_used_bytes for p in parts),
            memory_budget_bytes=sum(p.memory_budget_bytes for p in parts),
            loaded_models=sum(p.loaded_models for p in parts),
        )

    async def close(self) -> None:
        """Close every runtime made (a managed Triton server stops)."""
        made, self._made = self._made, {}
        self._by_key.clear()
        for runtime in made.values():
            await runtime.close()
