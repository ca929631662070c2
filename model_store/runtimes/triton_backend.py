"""The Triton runtime's link to its server: clients, outage detection, watcher and codec.

:class:`TritonBackend` is the base of :class:`~model_store.runtimes.triton.TritonRuntime`
that owns the connection side (the runtime owns registration, loading and inference):

* three ``tritonclient.http.aio`` clients per event loop and server address (inference, model
  control, health probe), replaced after an outage (:meth:`TritonBackend._fresh_connections`);
* the watcher, which polls the server every ``probe_interval_s``, marks it down (two failed
  probes in a row, or a dead managed process), restarts a managed server this runtime owns,
  and loads wanted models again when the server comes back without them;
* the 503 (``Retry-After``) raised while the server is unreachable.

It also holds the per-model record (:class:`ModelEntry`) and the tensor codec between numpy
arrays and Triton's binary tensors.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from model_store.datatypes import BYTES, to_numpy_dtype
from model_store.errors import ModelStoreError, ModelUnavailableError
from model_store.manifest import ModelManifest
from model_store.runtimes.base import ModelStats
from model_store.triton.repository import ExportedModel
from model_store.triton.server import ManagedTritonServer

__all__ = [
    "CONNECTION_ERRORS",
    "RETRY",
    "Arrays",
    "Clients",
    "ModelEntry",
    "ModelMissingError",
    "TritonBackend",
    "as_array",
    "file_size",
    "infer_input",
    "short_message",
]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]

RETRY = {"Retry-After": "1"}
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError)
_RESTART_BACKOFF_S = 2.0


class ModelMissingError(Exception):
    """Triton answered that the model is not loaded (e.g. the server restarted empty)."""


@dataclass(slots=True)
class ModelEntry:
    key: str
    name: str
    manifest: ModelManifest
    artifact_path: Path
    stats: ModelStats
    lock: asyncio.Lock | None = None
    exported: ExportedModel | None = None
    wanted: bool = False  # a load was asked for: keep it loaded across server restarts
    loaded: bool = False  # Triton had it ready at our last contact
    failed: bool = False  # the last load was refused by Triton (the model's fault)
    loaded_at: float = 0.0
    memory_bytes: int = 0


@dataclass(slots=True)
class Clients:
    loop: asyncio.AbstractEventLoop
    address: str
    infer: triton_aio.InferenceServerClient
    control: triton_aio.InferenceServerClient
    probe: triton_aio.InferenceServerClient
    watcher: asyncio.Task[None] | None = None
    restarting: asyncio.Task[None] | None = None
    all: list[triton_aio.InferenceServerClient] = field(default_factory=list)
    stale: list[triton_aio.InferenceServerClient] = field(default_factory=list)


def _address(url: str) -> str:
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


class TritonBackend(abc.ABC):
    """The connection to a Triton server and the watcher over it (see the module docstring).

    :class:`~model_store.runtimes.triton.TritonRuntime` sets these attributes in its
    constructor and provides :meth:`_load`, which the watcher calls to load models again.
    """

    _server: ManagedTritonServer | None
    _url: str | None
    _own_server: bool
    _infer_timeout: float
    _load_timeout: float
    _probe_interval: float
    _models: dict[str, ModelEntry]
    _clients: Clients | None
    _backend_up: bool
    _last_restart: float
    _probe_failures: int
    _closed: bool
    _reconnect: bool
    _closing: set[asyncio.Task[None]]

    @abc.abstractmethod
    async def _load(self, entry: ModelEntry) -> None:
        """Export ``entry`` and load it on the server (no-op when it is loaded)."""

    # ------------------------------------------------------------------ connection

    def _current_address(self) -> str:
        if self._server is not None:
            return self._server.address
        assert self._url is not None
        return _address(self._url)

    async def _ensure_started(self) -> Clients:
        if self._closed:
            raise ModelUnavailableError("the Triton runtime is closed")
        server = self._server
        if server is not None and not server.is_running():
            if self._clients is None or self._own_server:
                await self._start_server(server)
            else:
                self._backend_up = False
                raise self._unreachable()
        return await self._get_clients()

    async def _start_server(self, server: ManagedTritonServer) -> None:
        self._last_restart = time.monotonic()
        try:
            await asyncio.to_thread(server.start)
        except ModelStoreError:
            self._backend_up = False
            raise
        self._backend_up = True

    async def _get_clients(self) -> Clients:
        loop = asyncio.get_running_loop()
        address = self._current_address()
        clients = self._clients
        if clients is not None and clients.loop is loop and clients.address == address:
            if self._reconnect:
                self._fresh_connections(clients)
            return clients
        if clients is not None and clients.loop is loop:
            # The managed server moved to other ports on restart.
            for client in clients.all:
                with contextlib.suppress(Exception):
                    await client.close()
            if clients.watcher is not None:
                clients.watcher.cancel()
        infer = triton_aio.InferenceServerClient(address, conn_timeout=self._infer_timeout)
        control = triton_aio.InferenceServerClient(address, conn_timeout=self._load_timeout)
        probe = triton_aio.InferenceServerClient(
            address, conn_timeout=max(2.0, self._probe_interval * 2)
        )
        clients = Clients(loop, address, infer, control, probe, all=[infer, control, probe])
        self._clients = clients
        clients.watcher = loop.create_task(self._watch(clients), name="triton-runtime-watch")
        return clients

    def _new_client(self, address: str, timeout_s: float) -> triton_aio.InferenceServerClient:
        return triton_aio.InferenceServerClient(address, conn_timeout=timeout_s)

    def _fresh_connections(self, clients: Clients) -> None:
        """Replace the clients (and their connection pools) after an outage.

        A killed tritonserver leaves its Python-backend stubs running for a while, and they
        inherited the server's open connections: a pooled keep-alive connection then stays open
        with nobody answering, and a request on it hangs until its timeout instead of failing
        at once. New pools connect afresh (refused at once while the server is down). The old
        clients are closed a moment later, which also fails calls still hanging on them.
        """
        self._reconnect = False
        old = [clients.infer, clients.control, clients.probe]
        clients.infer = self._new_client(clients.address, self._infer_timeout)
        clients.control = self._new_client(clients.address, self._load_timeout)
        clients.probe = self._new_client(clients.address, max(2.0, self._probe_interval * 2))
        clients.all = [clients.infer, clients.control, clients.probe]
        clients.stale.extend(old)

        async def close_later() -> None:
            await asyncio.sleep(1.0)  # calls that already picked an old client issue theirs
            for client in old:
                if client in clients.stale:
                    clients.stale.remove(client)
                    with contextlib.suppress(Exception):
                        await client.close()

        task = clients.loop.create_task(close_later(), name="triton-runtime-close-stale")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _unreachable(self) -> ModelUnavailableError:
        try:
            where = self._current_address()
        except ModelStoreError:
            where = "(not started)"
        return ModelUnavailableError(
            f"the Triton backend at {where} is unreachable; retry shortly", headers=RETRY
        )

    def _mark_down(self) -> None:
        if self._backend_up:
            logger.warning(
                "Triton backend at %s is unreachable", self._clients and self._clients.address
            )
        if self._backend_up:
            self._reconnect = True  # once per outage: the pools opened before it are suspect
        self._backend_up = False
        for entry in self._models.values():
            entry.loaded = False

    # ------------------------------------------------------------------ watcher

    async def _watch(self, clients: Clients) -> None:
        while self._clients is clients and not self._closed:
            try:
                await self._check(clients)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Triton health check failed", exc_info=True)
            await asyncio.sleep(self._probe_interval)

    async def _check(self, clients: Clients) -> None:
        if self._reconnect:
            self._fresh_connections(clients)
        server = self._server
        if server is not None and not server.is_running():
            self._mark_down()
            if self._own_server and time.monotonic() - self._last_restart > _RESTART_BACKOFF_S:
                logger.warning("the managed tritonserver exited; restarting it")
                with contextlib.suppress(ModelStoreError):
                    await self._start_server(server)
            return
        probed_at = time.monotonic()
        try:
            up = await clients.probe.is_server_ready()
        except (InferenceServerException, *CONNECTION_ERRORS):
            up = False
        if not up:
            # One slow probe on a busy machine is not an outage; a dead process or two
            # failed probes in a row are (a failed request marks it down at once).
            self._probe_failures += 1
            if self._probe_failures >= 2:
                self._mark_down()
            return
        self._probe_failures = 0
        if not self._backend_up:
            logger.info("Triton backend at %s is reachable again", clients.address)
        self._backend_up = True
        try:
            # The index can wait behind a model that is loading: slow is not down.
            index = await clients.control.get_model_repository_index()
        except (InferenceServerException, *CONNECTION_ERRORS):
            return
        ready = {item.get("name") for item in index if item.get("state") == "READY"}
        for entry in list(self._models.values()):
            if entry.loaded_at >= probed_at or (entry.lock is not None and entry.lock.locked()):
                continue  # loaded (or loading) since the index was read
            entry.loaded = entry.name in ready
            if entry.wanted and not entry.loaded and not entry.failed:
                try:
                    await self._load(entry)
                    logger.info("reloaded %s on the Triton backend", entry.name)
                except ModelStoreError as e:
                    logger.warning("reloading %s failed: %s", entry.name, e.message)


def infer_input(name: str, datatype: str, inputs: Arrays) -> triton_aio.InferInput:
    array = inputs[name]
    if datatype == BYTES:
        data = np.asarray(array, dtype=np.object_)
    else:
        data = np.ascontiguousarray(array, dtype=to_numpy_dtype(datatype))
    tensor = triton_aio.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=True)
    return tensor


def as_array(value: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    if value is None:
        raise ValueError("an output is missing from the response")
    return value


def short_message(message: str, limit: int = 300) -> str:
    message = re.sub(r"^\[request id: [^\]]*\]\s*", "", " ".join(message.split()))
    return message if len(message) <= limit else message[: limit - 1] + "…"


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
