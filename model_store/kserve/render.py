"""InferenceService manifests: one ``serving.kserve.io/v1beta1`` object per model version.

Rendered as plain dicts, ready for :class:`~model_store.kserve.client.KServeClient` or
``kubectl apply``. ``kserve`` itself is never imported here: it registers the same v2 gRPC
protos as ``tritonclient.grpc`` and the two cannot share a process.

TorchScript models go to the Triton serving runtime (``modelFormat: triton``,
``runtime: kserve-tritonserver``; the ``storageUri`` holds the Triton repository that
:func:`~model_store.triton.repository.export_model` writes, and the runtime's image has
``model_store`` installed, see ``k8s/serving/``). Python-format models, which run arbitrary
publisher code with its own dependencies, get a custom-container predictor on the platform
image, :mod:`model_store.kserve.predictor` (KServe's own ``ModelServer`` around the platform's
format loaders), so that code runs in its own pod; any model can be sent there with
``predictor="python"``. Its ``storageUri`` holds a bundle (:mod:`model_store.kserve.storage`),
which KServe's storage initializer copies to ``/mnt/models`` because the container names it
in ``STORAGE_URI``.

Example:
    >>> obj = render_inference_service("traffic-police.flow-smoother:1", manifest,
    ...                                storage_uri="s3://models/x")  # doctest: +SKIP
    >>> obj["metadata"]["name"]  # doctest: +SKIP
    'traffic-police--flow-smoother--1'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from model_store.manifest import ModelManifest
from model_store.triton.repository import triton_model_name

__all__ = [
    "GROUP",
    "KIND",
    "MODEL_DIR",
    "MODEL_KEY_ANNOTATION",
    "PLATFORM_IMAGE",
    "PLURAL",
    "PREDICTOR_PORT",
    "PYTHON_PREDICTOR_COMMAND",
    "TRITON_RUNTIME",
    "VERSION",
    "Resources",
    "inference_service_name",
    "render_inference_service",
    "triton_can_serve",
    "uses_triton",
]

GROUP: Final = "serving.kserve.io"
VERSION: Final = "v1beta1"
PLURAL: Final = "inferenceservices"
KIND: Final = "InferenceService"
TRITON_RUNTIME: Final = "kserve-tritonserver"
"""The ServingRuntime of Triton models (``k8s/serving/triton-runtime.yaml``)."""
PLATFORM_IMAGE: Final = "citybrain:latest"
PYTHON_PREDICTOR_COMMAND: Final = ("python", "-m", "model_store.kserve.predictor")
"""The custom predictor's entry point: KServe's ModelServer around ``model_store`` loaders.

The only module of the platform that imports ``kserve``; it runs in its own pod on the
platform image, never in the platform's server process.
"""
PREDICTOR_PORT: Final = 8080
"""The port KServe routes to in a custom predictor container."""
MODEL_DIR: Final = "/mnt/models"
"""Where KServe's storage initializer puts what ``STORAGE_URI`` names."""
MODEL_KEY_ANNOTATION: Final = "citybrain.io/model-key"
_NAME_LIMIT: Final = 45  # KServe derives longer names (…-predictor-00001-deployment)


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


def uses_triton(manifest: ModelManifest, predictor: Literal["auto", "triton", "python"]) -> bool:
    """Tell which predictor serves a model, and so which layout its export takes.

    Args:
        manifest: The model's manifest.
        predictor: ``"auto"`` (:func:`triton_can_serve` decides), ``"triton"`` or ``"python"``.

    Returns:
        True for the Triton serving runtime, False for the platform's predictor.
    """
    return triton_can_serve(manifest) if predictor == "auto" else predictor == "triton"


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
            a Triton repository holding the exported model for Triton, a bundle (see
            :mod:`model_store.kserve.storage`) for the platform's predictor.
        namespace: The Kubernetes namespace.
        resources: Pod requests and limits (default :class:`Resources`).
        min_replicas: The fewest replicas (0 allows scale to zero).
        max_replicas: The most replicas.
        canary_traffic_percent: Traffic share of this revision during a canary rollout, or
            None for all traffic.
        predictor: ``"auto"`` (:func:`triton_can_serve` decides), ``"triton"`` or ``"python"``
            (the platform's predictor, for any format).
        triton_runtime: The ServingRuntime name for Triton models.
        python_image: The image of the platform's predictor (the platform image).
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
    use_triton = uses_triton(manifest, predictor)
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
                    f"--model_dir={MODEL_DIR}",
                    f"--http_port={PREDICTOR_PORT}",
                    # The gateway calls predictors over HTTP only: no gRPC port to open.
                    "--enable_grpc=false",
                ],
                "env": [{"name": "STORAGE_URI", "value": storage_uri}],
                "ports": [{"containerPort": PREDICTOR_PORT, "protocol": "TCP"}],
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
