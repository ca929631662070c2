"""The Kubernetes side of KServe: create, update, read and delete InferenceServices.

:class:`KServeClient` drives the ``kubernetes`` package's ``CustomObjectsApi`` (create, or
JSON merge-patch when the object exists), and :class:`InferenceServiceStatus` reads what the
gateway needs from an object's status: readiness and the URL to send v2 requests to. API
failures become :class:`KServeError` (503), with KServe's own reason where it gave one.

Example:
    >>> client = KServeClient(kubeconfig=Path("~/.kube/config"), namespace="citybrain")
    >>> client.apply(obj)  # doctest: +SKIP
    >>> client.wait_ready(obj["metadata"]["name"]).base_url()  # doctest: +SKIP
    'http://traffic-police--flow-smoother--1.citybrain.svc.cluster.local'
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from model_store.errors import ModelUnavailableError
from model_store.kserve.render import GROUP, PLURAL, VERSION

__all__ = ["InferenceServiceStatus", "KServeClient", "KServeError"]

logger = logging.getLogger(__name__)


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
