"""The KServe runtime: each model version is an ``InferenceService`` on Kubernetes.

Three parts, usable alone:

* :func:`render_inference_service` renders a ``serving.kserve.io/v1beta1`` InferenceService
  as plain dicts. ``kserve`` itself is never imported here: it registers the same v2 gRPC
  protos as ``tritonclient.grpc`` and the two cannot share a process. TorchScript models go to
  the Triton serving runtime (``modelFormat: triton``, ``runtime: kserve-tritonserver``; the
  ``storageUri`` holds the Triton repository that
  :func:`~model_store.triton.repository.export_model` writes, and the runtime's image has
  ``model_store`` installed, see ``k8s/serving/``). Python-format models, which run arbitrary
  publisher code with its own dependencies, get a custom-container predictor on the platform
  image running KServe's Python model server, so that code runs in its own pod.
* :class:`KServeClient` applies (create or merge-patch), reads and deletes InferenceServices
  with the ``kubernetes`` package's ``CustomObjectsApi``.
* :class:`KServeRuntime` puts both behind :class:`~model_store.runtimes.base.Runtime`: ``load``
  applies the manifest and waits until it is ready; ``infer`` forwards v2 JSON requests over
  HTTP (httpx) to the service's URL.

Example:
    >>> client = KServeClient(kubeconfig=Path("~/.kube/config"), namespace="citybrain")
    >>> runtime = KServeRuntime(client, storage_uri=lambda key, m: f"s3://models/{key}")
    >>> await runtime.load("traffic-police.flow-smoother:1", manifest, path)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import httpx
import numpy as np
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from model_store.datatypes import BYTES, to_numpy_dtype
from model_store.errors import (
    InferenceFailedError,
    InferenceInputError,
    ModelUnavailableError,
    QueueFullError,
)
from model_store.manifest import ModelManifest
from model_store.runtimes.base import ModelStats, Runtime, RuntimeStats
from model_store.triton.repository import triton_model_name

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

GROUP: Final = "serving.kserve.io"
VERSION: Final = "v1beta1"
PLURAL: Final = "inferenceservices"
KIND: Final = "InferenceService"
TRITON_RUNTIME: Final = "kserve-tritonserver"
"""The ServingRuntime of Triton models (``k8s/serving/triton-runtime.yaml``)."""
PLATFORM_IMAGE: Final = "citybrain:latest"
PYTHON_PREDICTOR_COMMAND: Final = ("python", "-m", "citybrain_kserve_predictor")
"""The custom predictor's entry point: KServe's ModelServer around ``model_store`` loaders.

It lives outside ``model_store`` (it imports ``kserve``) and is shipped in the platform image.
"""
MODEL_KEY_ANNOTATION: Final = "citybrain.io/model-key"
_NAME_LIMIT: Final = 45  # KServe derives longer names (…-predictor-00001-deployment)

Arrays = dict[str, np.ndarray[Any, Any]]


class KServeError(ModelUnavailableError):
    """503 "ModelUnavailable": the Kubernetes API refused or failed a request about a model.

    Attributes:
        k8s_status: The API server's HTTP status, or None when it was unreachable.
    """

    def __init__(self, message: str, *, k8s_status: int | None = None) -> None:
        """Create the error.

        Args:
            message: What failed.
            k8s_status: The API server's HTTP status, if it answered.
        """
        super().__init__(message)
        self.k8s_status = k8s_status


@dataclass(frozen=True, slots=True)
class Resources:
    """CPU and memory requests and limits of a predictor pod.

    Attributes:
        cpu_request: e.g. ``"500m"``.
        memory_request: e.g. ``"1Gi"``.
        cpu_limit: e.g. ``"2"``.
        memory_limit: e.g. ``"4Gi"``.
    """

    cpu_request: str = "500m"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "4Gi"

    def as_dict(self) -> dict[str, dict[str, str]]:
        """Return the Kubernetes ``resources`` object."""
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def inference_service_name(key: str) -> str:
    """Map a runtime key to an InferenceService name (a DNS label starting with a letter).

    Args:
        key: A runtime key such as ``"traffic-police.flow-smoother:1"``.

    Returns:
        e.g. ``"traffic-police--flow-smoother--1"``; long or odd keys are shortened and get a
        digest suffix.

    Example:
        >>> inference_service_name("traffic-police.flow-smoother:1")
        'traffic-police--flow-smoother--1'
    """
    base = re.sub(r"[^a-z0-9-]+", "-", triton_model_name(key).lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}"
    if len(base) > _NAME_LIMIT or base != triton_model_name(key):
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]
        base = f"{base[: _NAME_LIMIT - 9].rstrip('-')}-{digest}"
    return base


def triton_can_serve(manifest: ModelManifest) -> bool:
    """Tell whether a model goes to the Triton serving runtime on KServe.

    Args:
        manifest: The model's manifest.

    Returns:
        True for TorchScript models (compiled graphs with no publisher Python); python-format
        models go to the KServe Python runtime in their own container.
    """
    return manifest.format == "torchscript"


def render_inference_service(
    key: str,
    manifest: ModelManifest,
    *,
    storage_uri: str,
    namespace: str = "default",
    resources: Resources | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    canary_traffic_percent: int | None = None,
    predictor: Literal["auto", "triton", "python"] = "auto",
    triton_runtime: str = TRITON_RUNTIME,
    python_image: str = PLATFORM_IMAGE,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render the ``InferenceService`` of one model version.

    Args:
        key: The runtime key, e.g. ``"traffic-police.flow-smoother:1"``.
        manifest: The model's manifest.
        storage_uri: Where the predictor downloads the model from (``s3://``, ``pvc://``…):
            a Triton repository holding the exported model for Triton, the artifact folder
            (artifact + ``manifest.json``) for the Python runtime.
        namespace: The Kubernetes namespace.
        resources: Pod requests and limits (default :class:`Resources`).
        min_replicas: The fewest replicas (0 allows scale to zero).
        max_replicas: The most replicas.
        canary_traffic_percent: Traffic share of this revision during a canary rollout, or
            None for all traffic.
        predictor: ``"auto"`` (:func:`triton_can_serve` decides), ``"triton"`` or ``"python"``.
        triton_runtime: The ServingRuntime name for Triton models.
        python_image: The image of the Python predictor.
        labels: Extra metadata labels.

    Returns:
        The object, ready for :meth:`KServeClient.apply` or ``kubectl apply``.

    Raises:
        ValueError: Inconsistent replica counts or an out-of-range canary percentage.
    """
    if min_replicas < 0 or max_replicas < max(1, min_replicas):
        raise ValueError(f"replicas must satisfy 0 <= min ({min_replicas}) <= max ({max_replicas})")
    if canary_traffic_percent is not None and not 0 <= canary_traffic_percent <= 100:
        raise ValueError("canary_traffic_percent must be between 0 and 100")
    name = inference_service_name(key)
    model_name = triton_model_name(key)
    res = (resources or Resources()).as_dict()
    use_triton = triton_can_serve(manifest) if predictor == "auto" else predictor == "triton"
    spec: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if canary_traffic_percent is not None:
        spec["canaryTrafficPercent"] = canary_traffic_percent
    if use_triton:
        spec["model"] = {
            "modelFormat": {"name": "triton"},
            "protocolVersion": "v2",
            "runtime": triton_runtime,
            "storageUri": storage_uri,
            "resources": res,
        }
    else:
        spec["containers"] = [
            {
                "name": "kserve-container",
                "image": python_image,
                "command": list(PYTHON_PREDICTOR_COMMAND),
                "args": [
                    f"--model_name={model_name}",
                    "--model_dir=/mnt/models",
                    "--http_port=8080",
                ],
                "env": [
                    {"name": "STORAGE_URI", "value": storage_uri},
                    {"name": "PROTOCOL", "value": "v2"},
                ],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": res,
            }
        ]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "citybrain",
                "app.kubernetes.io/part-of": "citybrain",
                "citybrain.io/predictor": "triton" if use_triton else "python",
                **(labels or {}),
            },
            "annotations": {
                MODEL_KEY_ANNOTATION: key,
                "citybrain.io/model-name": model_name,
                "serving.kserve.io/deploymentMode": "Serverless",
            },
        },
        "spec": {"predictor": spec},
    }


@dataclass(frozen=True, slots=True)
class InferenceServiceStatus:
    """What the gateway needs from an InferenceService's status.

    Attributes:
        name: The InferenceService's name.
        ready: Whether its ``Ready`` condition is ``True``.
        url: ``status.url`` (external), if set.
        address_url: ``status.address.url`` (cluster-local), if set.
        reason: The ``Ready`` condition's reason when not ready.
        message: The ``Ready`` condition's message when not ready.
    """

    name: str
    ready: bool
    url: str | None = None
    address_url: str | None = None
    reason: str | None = None
    message: str | None = None

    def base_url(self, *, prefer_cluster_local: bool = True) -> str | None:
        """Return the URL to send v2 requests to.

        Args:
            prefer_cluster_local: Prefer ``status.address.url`` (the gateway runs in the
                cluster) over ``status.url``.

        Returns:
            The URL without a trailing slash, or None before KServe has set one.
        """
        first, second = (
            (self.address_url, self.url) if prefer_cluster_local else (self.url, self.address_url)
        )
        chosen = first or second
        return chosen.rstrip("/") if chosen else None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> InferenceServiceStatus:
        """Read the status of an InferenceService object.

        Args:
            obj: The object as the API returns it.

        Returns:
            The status (not ready when KServe has not reported yet).
        """
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        return cls(
            name=str((obj.get("metadata") or {}).get("name", "")),
            ready=bool(ready and ready.get("status") == "True"),
            url=status.get("url"),
            address_url=(status.get("address") or {}).get("url"),
            reason=None if ready is None else ready.get("reason"),
            message=None if ready is None else ready.get("message"),
        )


class KServeClient:
    """Create, update, read and delete InferenceServices through the Kubernetes API.

    Args:
        kubeconfig: A kubeconfig file; None with ``in_cluster`` uses the pod's service account.
        context: The kubeconfig context (default: its current context).
        namespace: The namespace of every call.
        in_cluster: Use the in-cluster configuration.
        api_client: A ready ``kubernetes.client.ApiClient`` (tests, custom auth).

    Raises:
        ValueError: No way to reach a cluster was given.
    """

    def __init__(
        self,
        *,
        kubeconfig: Path | None = None,
        context: str | None = None,
        namespace: str = "default",
        in_cluster: bool = False,
        api_client: k8s_client.ApiClient | None = None,
    ) -> None:
        if api_client is None:
            if kubeconfig is not None:
                api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=str(Path(kubeconfig).expanduser()), context=context
                )
            elif in_cluster:
                k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
                api_client = k8s_client.ApiClient()
            else:
                raise ValueError("give a kubeconfig, in_cluster=True or an api_client")
        self._api_client = api_client
        self._api = k8s_client.CustomObjectsApi(api_client)
        self.namespace = namespace

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._api_client.close()

    def get(self, name: str) -> dict[str, Any] | None:
        """Read an InferenceService.

        Args:
            name: Its name.

        Returns:
            The object, or None if it does not exist.

        Raises:
            KServeError: The API failed.
        """
        try:
            obj = self._api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise _api_error("read", name, e) from None
        except Urllib3Error as e:
            raise _unreachable("read", name, e) from e
        return _as_dict(obj)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create an InferenceService, or merge-patch it if it exists.

        Args:
            obj: The object (see :func:`render_inference_service`).

        Returns:
            The object as stored by the API server.

        Raises:
            KServeError: The API refused it (e.g. 422 from validation) or failed.
        """
        name = str(obj["metadata"]["name"])
        body = dict(obj)
        try:
            created = self._api.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )
            return _as_dict(created)
        except ApiException as e:
            if e.status != 409:
                raise _api_error("create", name, e) from None
        except Urllib3Error as e:
            raise _unreachable("create", name, e) from e
        try:
            patched = self._api.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"metadata": body["metadata"], "spec": body["spec"]},
            )
        except ApiException as e:
            raise _api_error("update", name, e) from None
        except Urllib3Error as e:
            raise _unreachable("update", name, e) from e
        return _as_dict(patched)

    def status(self, name: str) -> InferenceServiceStatus | None:
        """Read an InferenceService's readiness and URLs.

        Args:
            name: Its name.

        Returns:
            The status, or None if it does not exist.

        Raises:
            KServeError: The API failed.
        """
        obj = self.get(name)
        return None if obj is None else InferenceServiceStatus.from_object(obj)

    def delete(self, name: str) -> bool:
        """Delete an InferenceService.

        Args:
            name: Its name.

        Returns:
            True if it existed.

        Raises:
            KServeError: The API failed.
        """
        try:
            self._api.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return False
            raise _api_error("delete", name, e) from None
        except Urllib3Error as e:
            raise _unreachable("delete", name, e) from e
        return True

    def wait_ready(
        self, name: str, *, timeout_s: float = 600.0, poll_s: float = 2.0
    ) -> InferenceServiceStatus:
        """Poll until an InferenceService is ready.

        Args:
            name: Its name.
            timeout_s: How long to wait.
            poll_s: Seconds between polls.

        Returns:
            The ready status.

        Raises:
            KServeError: It does not exist, or was not ready in time (with KServe's reason).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(name)
            if status is None:
                raise KServeError(f"InferenceService '{name}' does not exist", k8s_status=404)
            if status.ready and status.base_url() is not None:
                return status
            if time.monotonic() >= deadline:
                why = status.message or status.reason or "no Ready condition yet"
                raise KServeError(
                    f"InferenceService '{name}' was not ready within {timeout_s:.0f} s: {why}"
                )
            time.sleep(poll_s)


def _as_dict(obj: object) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise KServeError(f"the Kubernetes API returned {type(obj).__name__}, not an object")
    return {str(k): v for k, v in obj.items()}


def _api_error(action: str, name: str, error: ApiException) -> KServeError:
    detail = error.reason or ""
    body = error.body
    if isinstance(body, bytes | str) and body:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        match = re.search(r'"message"\s*:\s*"([^"]*)"', text)
        if match:
            detail = match.group(1)
    return KServeError(
        f"could not {action} InferenceService '{name}': {error.status} {detail}".strip(),
        k8s_status=error.status,
    )


def _unreachable(action: str, name: str, error: Exception) -> KServeError:
    logger.warning("Kubernetes API unreachable (%s %s): %s", action, name, error)
    return KServeError(f"could not {action} InferenceService '{name}': the cluster is unreachable")


# --------------------------------------------------------------------------- runtime


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
    extra: dict[str, Any] = field(default_factory=dict)


class KServeRuntime(Runtime):
    """Serves each model version as a KServe InferenceService and forwards v2 requests to it.

    Args:
        client: The Kubernetes client.
        storage_uri: Gives the ``storageUri`` of a model version from its key and manifest
            (the platform uploads exports to object storage; see
            :func:`render_inference_service`).
        render_options: More :func:`render_inference_service` keyword arguments (resources,
            replicas, canary percentage, images).
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
        ready_timeout_s: float = 600.0,
        poll_s: float = 2.0,
        infer_timeout_s: float = 30.0,
        prefer_cluster_local: bool = True,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._client = client
        self._storage_uri = storage_uri
        self._render_options = dict(render_options or {})
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

    def register(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Record a model; its InferenceService is applied on :meth:`load` or first request.

        Args:
            key: The runtime key, unique per model version.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact (the storage URI must hold a
                copy the cluster can read).

        Raises:
            ValueError: ``key`` is registered with a different artifact or manifest.
        """
        path = Path(artifact_path)
        current = self._models.get(key)
        if current is not None:
            if current.artifact_path != path or current.manifest != manifest:
                raise ValueError(f"model '{key}' is registered with another artifact")
            return
        self._models[key] = _Entry(
            key=key,
            manifest=manifest,
            artifact_path=path,
            stats=ModelStats(key=key),
            name=inference_service_name(key),
            model_name=triton_model_name(key),
        )

    async def load(self, key: str, manifest: ModelManifest, artifact_path: Path) -> None:
        """Apply the model's InferenceService and wait until KServe reports it ready.

        Args:
            key: The runtime key, unique per model version.
            manifest: The artifact's manifest.
            artifact_path: A local file holding the artifact.

        Raises:
            ModelUnavailableError: The API refused it or it was not ready in time.
        """
        self.register(key, manifest, artifact_path)
        await self._ensure_ready(self._models[key])

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
        body = {
            "inputs": [
                _encode_input(spec.name, spec.datatype, inputs) for spec in entry.manifest.inputs
            ],
            "outputs": [{"name": spec.name} for spec in entry.manifest.outputs],
        }
        url = f"{base}/v2/models/{entry.model_name}/infer"
        try:
            response = await self._http_client().post(url, json=body)
        except httpx.HTTPError as e:
            entry.base_url = None  # re-read the status next time: the URL may have moved
            raise ModelUnavailableError(
                f"model '{key}' is unreachable on KServe; retry shortly",
                headers={"Retry-After": "1"},
            ) from e
        if response.status_code != 200:
            raise _map_status(key, response)
        try:
            outputs = _decode_outputs(response.json())
        except (ValueError, KeyError, TypeError) as e:
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
        return RuntimeStats(
            models=models,
            memory_used_bytes=0,
            memory_budget_bytes=0,
            loaded_models=sum(1 for m in models.values() if m.loaded),
        )

    async def close(self) -> None:
        """Close the HTTP client (InferenceServices keep running in the cluster)."""
        if self._http is not None and self._own_http:
            await self._http.aclose()
        self._http = None

    # ------------------------------------------------------------------ internals

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

    async def _ensure_ready(self, entry: _Entry) -> str:
        if entry.lock is None:
            entry.lock = asyncio.Lock()
        async with entry.lock:
            if entry.base_url is not None:
                return entry.base_url
            try:
                await asyncio.to_thread(self._client.apply, self.render(entry.key))
                status = await asyncio.to_thread(
                    self._client.wait_ready,
                    entry.name,
                    timeout_s=self._ready_timeout,
                    poll_s=self._poll,
                )
            except KServeError:
                entry.failed = True
                raise
            base = status.base_url(prefer_cluster_local=self._prefer_local)
            assert base is not None  # wait_ready returns only with a URL
            entry.base_url = base
            entry.failed = False
            entry.stats.loads += 1
            return base


def _encode_input(name: str, datatype: str, inputs: Arrays) -> dict[str, Any]:
    try:
        array = np.asarray(inputs[name])
    except KeyError:
        raise InferenceInputError(f"missing input '{name}'") from None
    if datatype == BYTES:
        try:
            data: list[Any] = [
                e.decode("utf-8") if isinstance(e, bytes) else str(e) for e in array.ravel()
            ]
        except UnicodeDecodeError:
            raise InferenceInputError(
                f"input '{name}': BYTES that are not UTF-8 cannot be forwarded as JSON"
            ) from None
    else:
        data = array.astype(to_numpy_dtype(datatype), copy=False).ravel().tolist()
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def _decode_outputs(doc: Any) -> Arrays:
    outputs: Arrays = {}
    for item in doc["outputs"]:
        datatype = item["datatype"]
        shape = [int(d) for d in item["shape"]]
        if datatype == BYTES:
            array = np.empty(len(item["data"]), dtype=np.object_)
            array[:] = [s.encode("utf-8") if isinstance(s, str) else s for s in item["data"]]
        else:
            array = np.asarray(item["data"], dtype=to_numpy_dtype(datatype))
        outputs[str(item["name"])] = array.reshape(shape)
    return outputs


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
