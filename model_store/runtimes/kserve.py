"""The KServe runtime: each model version is an ``InferenceService`` on Kubernetes.

:class:`KServeRuntime` implements :class:`~model_store.runtimes.base.Runtime` on top of the
parts in :mod:`model_store.kserve`: ``load`` exports the model version to its ``storageUri``
in the layout its predictor reads (:mod:`~model_store.kserve.storage`), renders its
InferenceService (:mod:`~model_store.kserve.render`), applies it and waits until KServe
reports it ready (:mod:`~model_store.kserve.client`); ``infer`` forwards v2 requests over HTTP
(httpx) to the service's URL, encoded and decoded by :mod:`model_store.v2.client`.

The manifests' and the client's public names are re-exported here, where callers have always
imported them from.

Example:
    >>> client = KServeClient(kubeconfig=Path("~/.kube/config"), namespace="citybrain")
    >>> runtime = KServeRuntime(client, storage_uri=lambda key, m: f"s3://models/{key}")
    >>> await runtime.load("traffic-police.flow-smoother:1", manifest, path)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from model_store.errors import (
    InferenceFailedError,
    InferenceInputError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.kserve.client import InferenceServiceStatus, KServeClient, KServeError
from model_store.kserve.render import (
    GROUP,
    PLURAL,
    VERSION,
    Resources,
    inference_service_name,
    render_inference_service,
    triton_can_serve,
    uses_triton,
)
from model_store.kserve.storage import export_version
from model_store.manifest import ModelManifest
from model_store.runtimes.base import ModelStats, RuntimeStats, TableRuntime
from model_store.triton.repository import triton_model_name
from model_store.v2 import HEADER_CONTENT_LENGTH, decode_response, encode_request

__all__ = [
    "GROUP",
    "PLURAL",
    "VERSION",
    "InferenceServiceStatus",
    "KServeClient",
    "KServeError",
    "KServeRuntime",
    "Resources",
    "inference_service_name",
    "render_inference_service",
    "triton_can_serve",
]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(slots=True)
class _Entry:
    key: str
    manifest: ModelManifest
    artifact_path: Path
    stats: ModelStats
    name: str
    model_name: str
    base_url: str | None = None
    failed: bool = False
    lock: asyncio.Lock | None = None
    exported: bool = False


class KServeRuntime(TableRuntime[_Entry]):
    """Serves each model version as a KServe InferenceService and forwards v2 requests to it.

    Args:
        client: The Kubernetes client.
        storage_uri: Gives the ``storageUri`` of a model version from its key and manifest.
        render_options: More :func:`render_inference_service` keyword arguments (resources,
            replicas, canary percentage, images, ``predictor``).
        export: Write each version to its ``storageUri`` before applying it (False: the
            operator puts it there, e.g. on a ``pvc://`` volume).
        storage_options: Extra fsspec options for the export (default: the environment's,
            e.g. ``AWS_ENDPOINT_URL``).
        ready_timeout_s: How long :meth:`load` waits for the service to be ready.
        poll_s: Seconds between readiness polls.
        infer_timeout_s: The most one inference request may take.
        prefer_cluster_local: Route to ``status.address.url`` rather than ``status.url``.
        http_client: An ``httpx.AsyncClient`` to use (default: one of our own).
    """

    def __init__(
        self,
        client: KServeClient,
        *,
        storage_uri: Callable[[str, ModelManifest], str],
        render_options: Mapping[str, Any] | None = None,
        export: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        ready_timeout_s: float = 600.0,
        poll_s: float = 2.0,
        infer_timeout_s: float = 30.0,
        prefer_cluster_local: bool = True,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._client = client
        self._storage_uri = storage_uri
        self._render_options = dict(render_options or {})
        self._export = export
        self._storage_options = dict(storage_options or {})
        self._ready_timeout = ready_timeout_s
        self._poll = poll_s
        self._prefer_local = prefer_cluster_local
        self._http = http_client
        self._own_http = http_client is None
        self._infer_timeout = infer_timeout_s
        self._models: dict[str, _Entry] = {}

    def render(self, key: str) -> dict[str, Any]:
        """Render the InferenceService of a registered model.

        Args:
            key: The runtime key.

        Returns:
            The object that :meth:`load` applies.

        Raises:
            ModelUnavailableError: The key is not registered.
        """
        entry = self._entry(key)
        return render_inference_service(
            key,
            entry.manifest,
            storage_uri=self._storage_uri(key, entry.manifest),
            namespace=self._client.namespace,
            **self._render_options,
        )

    async def infer(self, key: str, inputs: Arrays) -> Arrays:
        """Forward a v2 request to the model's InferenceService.

        Args:
            key: The runtime key.
            inputs: Every declared input, by name.

        Returns:
            Every output, by name.

        Raises:
            ModelUnavailableError: Unknown key, not ready, or unreachable.
            QueueFullError: The predictor answered 429.
            InferenceInputError: The predictor answered 400.
            InferenceFailedError: The predictor failed (5xx other than 502–504).
        """
        entry = self._entry(key)
        base = entry.base_url or await self._ensure_ready(entry)
        body, headers = encode_request(
            inputs, entry.manifest.inputs, [spec.name for spec in entry.manifest.outputs]
        )
        url = f"{base}/v2/models/{entry.model_name}/infer"
        try:
            response = await self._http_client().post(url, content=body, headers=headers)
        except httpx.HTTPError as e:
            entry.base_url = None  # re-read the status next time: the URL may have moved
            raise ModelUnavailableError(
                f"model '{key}' is unreachable on KServe; retry shortly",
                headers={"Retry-After": "1"},
            ) from e
        if response.status_code != 200:
            raise _map_status(key, response)
        try:
            length = response.headers.get(HEADER_CONTENT_LENGTH)
            outputs = decode_response(response.content, None if length is None else int(length))
        except (InferenceFailedError, ValueError) as e:
            logger.warning("predictor of %s answered an unreadable response: %s", key, e)
            raise InferenceFailedError(f"model '{key}' returned an unreadable response") from e
        entry.stats.requests += 1
        return outputs

    def is_ready(self, key: str) -> bool:
        """Tell whether the model's InferenceService was ready at the last check.

        Args:
            key: The runtime key.

        Returns:
            True once :meth:`load` (or a first request) found it ready.
        """
        entry = self._models.get(key)
        return entry is not None and not entry.failed and entry.base_url is not None

    async def unload(self, key: str) -> None:
        """Delete the model's InferenceService and forget it.

        Args:
            key: The runtime key (unknown keys are ignored).
        """
        entry = self._models.pop(key, None)
        if entry is not None:
            await asyncio.to_thread(self._client.delete, entry.name)

    def stats(self) -> RuntimeStats:
        """Return request counters; memory lives in the cluster (reported as 0)."""
        models = {
            key: ModelStats(
                key=key,
                loaded=entry.base_url is not None,
                requests=entry.stats.requests,
                loads=entry.stats.loads,
            )
            for key, entry in self._models.items()
        }
        return RuntimeStats.of(models)

    async def close(self) -> None:
        """Close the HTTP client (InferenceServices keep running in the cluster)."""
        if self._http is not None and self._own_http:
            await self._http.aclose()
        self._http = None

    # ------------------------------------------------------------------ internals

    def _new_entry(self, key: str, manifest: ModelManifest, artifact_path: Path) -> _Entry:
        return _Entry(
            key=key,
            manifest=manifest,
            artifact_path=artifact_path,
            stats=ModelStats(key=key),
            name=inference_service_name(key),
            model_name=triton_model_name(key),
        )

    async def _load_registered(self, key: str) -> None:
        """Export the model, apply its InferenceService and wait until KServe reports it ready.

        Raises:
            ModelUnavailableError: The export failed, the API refused the service, or it was
                not ready in time.
        """
        await self._ensure_ready(self._models[key])

    def _entry(self, key: str) -> _Entry:
        entry = self._models.get(key)
        if entry is None:
            raise ModelUnavailableError(f"model '{key}' is not registered")
        return entry

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._infer_timeout)
            self._own_http = True
        return self._http

    def _export_entry(self, entry: _Entry) -> None:
        uri = self._storage_uri(entry.key, entry.manifest)
        triton = uses_triton(entry.manifest, self._render_options.get("predictor", "auto"))
        written = export_version(
            uri,
            entry.key,
            entry.manifest,
            entry.artifact_path,
            triton=triton,
            storage_options=self._storage_options,
        )
        logger.info("model %s %s %s", entry.key, "exported to" if written else "already at", uri)

    async def _ensure_ready(self, entry: _Entry) -> str:
        if entry.lock is None:
            entry.lock = asyncio.Lock()
        async with entry.lock:
            if entry.base_url is not None:
                return entry.base_url
            try:
                obj = self.render(entry.key)
                if self._export and not entry.exported:
                    await asyncio.to_thread(self._export_entry, entry)
                    entry.exported = True
                await asyncio.to_thread(self._client.apply, obj)
                status = await asyncio.to_thread(
                    self._client.wait_ready,
                    entry.name,
                    timeout_s=self._ready_timeout,
                    poll_s=self._poll,
                )
            except ModelUnavailableError:  # KServeError, or ExportError from the store
                entry.failed = True
                raise
            base = status.base_url(prefer_cluster_local=self._prefer_local)
            assert base is not None  # wait_ready returns only with a URL
            entry.base_url = base
            entry.failed = False
            entry.stats.loads += 1
            return base


def _map_status(key: str, response: httpx.Response) -> Exception:
    try:
        detail = str(response.json().get("error", ""))
    except ValueError:
        detail = response.text[:300]
    status = response.status_code
    if status == 400 or status == 422:
        return InferenceInputError(f"the predictor rejected the request: {detail}")
    if status == 429:
        return QueueFullError(f"model '{key}' is busy; retry shortly")
    if status in (404, 502, 503, 504):
        return ModelUnavailableError(
            f"model '{key}' is not available on KServe ({status}); retry shortly",
            headers={"Retry-After": "1"},
        )
    logger.warning("predictor of %s answered %s: %s", key, status, detail)
    return InferenceFailedError(f"model '{key}' failed to run the request")
