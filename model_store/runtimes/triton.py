"""The Triton runtime: models served by a real Triton Inference Server.

* :meth:`TritonRuntime.load` exports the model version into the server's model repository
  (:func:`model_store.triton.repository.export_model`, Python backend) and loads it through
  Triton's repository API; :meth:`~TritonRuntime.register` only records it, and the first
  :meth:`~TritonRuntime.infer` loads it.
* :meth:`~TritonRuntime.infer` forwards with ``tritonclient.http.aio`` (binary tensors). It
  was measured against the sync client in a thread pool: the sync client wins slightly one
  request at a time, the async client clearly under concurrency, which is the gateway's case.
* A watcher polls the server (repository index, every ``probe_interval_s``; it lives with the
  clients in :mod:`model_store.runtimes.triton_backend`). When the server
  is unreachable, :meth:`~TritonRuntime.is_ready` is False and :meth:`~TritonRuntime.infer`
  raises :class:`~model_store.errors.ModelUnavailableError` (503, ``Retry-After``). When it
  comes back without the models (a restarted server starts empty), the watcher loads them
  again; an :meth:`~TritonRuntime.infer` that finds its model missing does the same first.
* A server this runtime owns (:meth:`TritonRuntime.managed`) is restarted when it crashes.
* Every ``tritonclient``/``aiohttp`` exception is mapped onto a model-store error.

Example:
    >>> runtime = TritonRuntime.managed(Path("var"))  # doctest: +SKIP
    >>> await runtime.start()  # doctest: +SKIP
    >>> await runtime.load("traffic-police.flow-smoother:1", manifest, path)  # doctest: +SKIP
    >>> key = "traffic-police.flow-smoother:1"
    >>> outputs = await runtime.infer(key, {"flow": flow})  # doctest: +SKIP
    >>> await runtime.close()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from model_store.errors import (
    InferenceFailedError,
    InferenceInputError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.manifest import ModelManifest
from model_store.runtimes.base import ModelStats, RuntimeStats, TableRuntime
from model_store.runtimes.triton_backend import (
    CONNECTION_ERRORS,
    RETRY,
    Arrays,
    ModelEntry,
    ModelMissingError,
    TritonBackend,
    as_array,
    file_size,
    infer_input,
    short_message,
)
from model_store.triton.repository import export_model, remove_model, triton_model_name
from model_store.triton.server import ManagedTritonServer

__all__ = ["TritonRuntime"]

logger = logging.getLogger(__name__)

_MISSING_MODEL_HINTS = ("unknown model", "is not found", "no available versions", "not ready")


class TritonRuntime(TritonBackend, TableRuntime[ModelEntry]):
    """Serves models on a Triton Inference Server, managed by us or external.

    Args:
        server: A :class:`~model_store.triton.server.ManagedTritonServer` to use (the runtime
            starts it if it is not running, and stops it on :meth:`close` only if ``own_server``).
        url: Instead of ``server``, the HTTP URL of an external Triton
            (``CITYBRAIN_TRITON_URL``, e.g. ``http://triton:8000``). Its model repository
            must be ``repository`` as mounted on both sides, and it must run with
            ``--model-control-mode=explicit`` and an environment where ``model_store`` imports.
        repository: The model repository folder (default: the managed server's).
        own_server: Stop ``server`` on :meth:`close` and restart it when it crashes.
        infer_timeout_s: The most an inference call may take.
        load_timeout_s: The most a model load may take.
        probe_interval_s: How often the watcher checks the server.
        python_paths: Folders for the Python stub's ``sys.path`` (default: this
            interpreter's, see :func:`~model_store.triton.repository.default_python_paths`).

    Raises:
        ValueError: Neither or both of ``server`` and ``url``, or ``url`` without
            ``repository``.
    """

    def __init__(
        self,
        server: ManagedTritonServer | None = None,
        *,
        url: str | None = None,
        repository: Path | None = None,
        own_server: bool = False,
        infer_timeout_s: float = 30.0,
        load_timeout_s: float = 120.0,
        probe_interval_s: float = 0.5,
        python_paths: list[Path] | None = None,
    ) -> None:
        if (server is None) == (url is None):
            raise ValueError("pass exactly one of server (managed) or url (external Triton)")
        if server is None and repository is None:
            raise ValueError("an external Triton needs the model repository folder it reads")
        self._server = server
        self._url = url
        self._repository = Path(repository) if repository is not None else None
        self._own_server = own_server and server is not None
        self._infer_timeout = infer_timeout_s
        self._load_timeout = load_timeout_s
        self._probe_interval = probe_interval_s
        self._python_paths = python_paths
        self._models = {}
        self._clients = None
        self._backend_up = False
        self._last_restart = 0.0
        self._probe_failures = 0
        self._closed = False
        self._reconnect = False  # drop pooled connections before the next call (see _mark_down)
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def managed(cls, data_dir: Path, **kwargs: Any) -> TritonRuntime:
        """Create a runtime that owns a :class:`ManagedTritonServer` under ``data_dir``.

        The server starts on :meth:`start` or on the first load; :meth:`close` stops it.

        Args:
            data_dir: The platform's data folder (see :class:`ManagedTritonServer`).
            **kwargs: More :class:`TritonRuntime` arguments.

        Returns:
            The runtime.
        """
        return cls(ManagedTritonServer(Path(data_dir)), own_server=True, **kwargs)

    # ------------------------------------------------------------------ properties

    @property
    def server(self) -> ManagedTritonServer | None:
        """The managed server, or None for an external Triton."""
        return self._server

    @property
    def repository(self) -> Path:
        """The model repository folder models are exported to."""
        if self._repository is not None:
            return self._repository
        assert self._server is not None
        return self._server.repository

    @property
    def backend_up(self) -> bool:
        """Whether the server answered at our last contact."""
        return self._backend_up

    def triton_name(self, key: str) -> str:
        """Return the Triton model name a key is served under.

        Args:
            key: The runtime key.

        Returns:
            The name (see :func:`~model_store.triton.repository.triton_model_name`).
        """
        return triton_model_name(key)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the managed server if needed and the watcher (optional; loads do it too).

        Raises:
            ModelUnavailableError: The managed server did not start.
        """
        await self._ensure_started()

    async def close(self) -> None:
        """Stop the watcher, close the clients; stop the server if this runtime owns it.

        Models stay loaded in an external or shared server.
        """
        self._closed = True
        clients, self._clients = self._clients, None
        if clients is not None:
            for task in (clients.watcher, clients.restarting, *self._closing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            for client in [*clients.all, *clients.stale]:
                with contextlib.suppress(Exception):
                    await client.close()
        if self._own_server and self._server is not None:
            await asyncio.to_thread(self._server.stop)
        self._backend_up = False

    # ------------------------------------------------------------------ Runtime API

    async def infer(self, key: str, inputs: Arrays) -> Arrays:
        """Run a model on Triton, loading it first if needed.

        Args:
            key: The runtime key.
            inputs: Every declared input, by name (batched models: dimension 0 is the batch).

        Returns:
            Every declared output, by name.

        Raises:
            ModelUnavailableError: Unknown key, the server is unreachable (``Retry-After``),
                or the model cannot be loaded.
            QueueFullError: Triton's queue for the model is full.
            InferenceInputError: Triton rejected the inputs (e.g. over ``max_batch_size``).
            InferenceFailedError: The model raised.
        """
        entry = self._models.get(key)
        if entry is None:
            raise ModelUnavailableError(f"model '{key}' is not registered")
        if not entry.loaded:
            await self._load(entry)
        try:
            outputs = await self._infer_once(entry, inputs)
        except ModelMissingError:
            # The server lost it (restarted empty, or unloaded behind our back): load again.
            entry.loaded = False
            await self._load(entry)
            try:
                outputs = await self._infer_once(entry, inputs)
            except ModelMissingError:
                entry.loaded = False
                raise ModelUnavailableError(
                    f"model '{key}' is not available on the Triton backend; retry shortly",
                    headers=RETRY,
                ) from None
        entry.stats.requests += 1
        return outputs

    def is_ready(self, key: str) -> bool:
        """Tell whether ``key`` can serve now, as last seen by this runtime.

        Args:
            key: The runtime key.

        Returns:
            False when unknown, when its last load was refused, when the server is
            unreachable, or while a model that was loaded is missing from the server.
        """
        entry = self._models.get(key)
        if entry is None or entry.failed or self._closed:
            return False
        if self._server is not None and not self._server.is_running():
            return False
        return self._backend_up and (entry.loaded or not entry.wanted)

    async def unload(self, key: str) -> None:
        """Unload a model from Triton, remove it from the repository and forget it.

        Args:
            key: The runtime key (unknown keys are ignored).
        """
        entry = self._models.pop(key, None)
        if entry is None:
            return
        entry.wanted = False
        if entry.loaded and self._backend_up:
            try:
                clients = await self._get_clients()
                await clients.control.unload_model(entry.name)
            except (InferenceServerException, *CONNECTION_ERRORS):
                logger.warning("unloading %s from Triton failed", entry.name, exc_info=True)
        entry.loaded = False
        await asyncio.to_thread(remove_model, self.repository, key)

    def stats(self) -> RuntimeStats:
        """Return this runtime's counters (requests and loads as seen from here).

        Returns:
            The snapshot; ``memory_bytes`` is the artifact size of each loaded model and there
            is no memory budget (``memory_budget_bytes`` is 0): Triton holds the models.
        """
        models = {
            key: ModelStats(
                key=key,
                loaded=entry.loaded,
                memory_bytes=entry.memory_bytes if entry.loaded else 0,
                requests=entry.stats.requests,
                loads=entry.stats.loads,
            )
            for key, entry in self._models.items()
        }
        return RuntimeStats.of(models)

    # ------------------------------------------------------------------ loading

    def _new_entry(self, key: str, manifest: ModelManifest, artifact_path: Path) -> ModelEntry:
        return ModelEntry(
            key=key,
            name=triton_model_name(key),
            manifest=manifest,
            artifact_path=artifact_path,
            stats=ModelStats(key=key),
        )

    async def _load_registered(self, key: str) -> None:
        """Export the model to the repository and load it in Triton.

        Raises:
            ModelUnavailableError: The server is unreachable, or Triton refused the model
                (the message holds Triton's reason).
        """
        await self._load(self._models[key])

    async def _load(self, entry: ModelEntry) -> None:
        if entry.lock is None:
            entry.lock = asyncio.Lock()
        async with entry.lock:
            if entry.loaded:
                return
            clients = await self._ensure_started()
            entry.wanted = True
            if entry.exported is None or not entry.exported.config_path.is_file():
                try:
                    entry.exported = await asyncio.to_thread(
                        export_model,
                        self.repository,
                        entry.key,
                        entry.manifest,
                        entry.artifact_path,
                        python_paths=self._python_paths,
                    )
                except OSError as e:
                    entry.failed = True
                    raise ModelUnavailableError(
                        f"model '{entry.key}' could not be exported for Triton: {e}"
                    ) from e
            try:
                # Already there (a shared server, or a blip we took for an outage): keep it.
                if not await clients.control.is_model_ready(entry.name):
                    await clients.control.load_model(entry.name)
            except InferenceServerException as e:
                entry.failed = True
                entry.loaded = False
                logger.warning("Triton refused to load %s: %s", entry.name, e.message())
                raise ModelUnavailableError(
                    f"model '{entry.key}' failed to load on Triton: {short_message(e.message())}"
                ) from None
            except CONNECTION_ERRORS as e:
                self._mark_down()
                raise self._unreachable() from e
            entry.loaded = True
            entry.loaded_at = time.monotonic()
            entry.failed = False
            entry.stats.loads += 1
            entry.memory_bytes = file_size(entry.artifact_path)
            self._backend_up = True

    # ------------------------------------------------------------------ inference

    async def _infer_once(self, entry: ModelEntry, inputs: Arrays) -> Arrays:
        clients = await self._ensure_started()
        try:
            request = [
                infer_input(spec.name, spec.datatype, inputs) for spec in entry.manifest.inputs
            ]
            outputs = [
                triton_aio.InferRequestedOutput(spec.name, binary_data=True)
                for spec in entry.manifest.outputs
            ]
        except KeyError as e:
            raise InferenceInputError(f"missing input {e}") from None
        except (InferenceServerException, ValueError, TypeError) as e:
            raise InferenceInputError(f"inputs do not fit the model: {e}") from None
        try:
            result = await clients.infer.infer(entry.name, request, outputs=outputs)
        except InferenceServerException as e:
            raise self._map_infer_error(entry, e) from None
        except CONNECTION_ERRORS as e:
            self._mark_down()
            raise self._unreachable() from e
        self._backend_up = True
        try:
            return {
                spec.name: as_array(result.as_numpy(spec.name)) for spec in entry.manifest.outputs
            }
        except Exception as e:  # tritonclient decoding: never let it escape unmapped
            logger.exception("decoding Triton's response for %s failed", entry.name)
            raise InferenceFailedError(
                f"model '{entry.key}' returned an unreadable response"
            ) from e

    def _map_infer_error(self, entry: ModelEntry, error: InferenceServerException) -> Exception:
        message = error.message() or ""
        lowered = message.lower()
        status = str(error.status() or "")
        if any(hint in lowered for hint in _MISSING_MODEL_HINTS):
            return ModelMissingError(message)
        if "exceeds maximum queue size" in lowered or status == "429":
            return QueueFullError(
                f"model '{entry.key}' has too many requests waiting; retry shortly"
            )
        if status == "400":
            return InferenceInputError(f"Triton rejected the request: {short_message(message)}")
        if status in ("502", "503", "504"):
            self._mark_down()
            return self._unreachable()
        logger.warning("Triton failed on %s (%s): %s", entry.name, status, message)
        return InferenceFailedError(f"model '{entry.key}' failed to run the request")
