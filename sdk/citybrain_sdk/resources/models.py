"""``cb.models``: inference with numpy in and out (Open Inference Protocol v2, binary tensors),
model metadata and readiness, and pushing and pulling model artifacts with progress.

Every inference call carries an ``Idempotency-Key`` (a fresh one per call unless the caller
passes its own) that all of its retries reuse: the platform bills the key once, so a retry after
a lost answer is never billed twice (``InferResult.replayed`` tells that it was one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from citybrain_sdk._http import Call, new_idempotency_key, segment
from citybrain_sdk.errors import Unavailable
from citybrain_sdk.resources import _files
from citybrain_sdk.resources._base import (
    AsyncResource,
    Download,
    Spec,
    SyncResource,
    json_spec,
    latest_version,
    product_path,
)
from citybrain_sdk.tensors import InferResult, decode_response, encode_request
from citybrain_sdk.types import Progress, Version

__all__ = ["AsyncModels", "Models"]

ARTIFACT_DIGEST_HEADER = "X-Artifact-Digest"
MODEL_MANIFEST_HEADER = "X-Model-Manifest"


def _model_path(model: str, version: int | str | None, *rest: str) -> str:
    path = f"/v2/models/{segment(model)}"
    if version is not None:
        path += f"/versions/{segment(version)}"
    return "/".join([path, *rest])


def _infer_spec(
    model: str,
    inputs: Mapping[str, Any],
    version: int | str | None,
    outputs: Sequence[str] | None,
    binary: bool,
    parameters: Mapping[str, Any] | None,
    idempotency_key: str | None,
    timeout: float | None,
) -> Spec[InferResult]:
    body, headers = encode_request(inputs, outputs=outputs, binary=binary, parameters=parameters)
    call = Call(
        "POST",
        _model_path(model, version, "infer"),
        content=lambda: body,
        headers=headers,
        idempotency_key=idempotency_key or new_idempotency_key(),
        timeout=timeout,
    )

    def result(response: httpx.Response) -> InferResult:
        request_id = response.headers.get("x-request-id")
        return decode_response(
            response.content,
            response.headers,
            request_id=request_id,
            idempotency_key=call.idempotency_key,
        )

    return Spec(call, result)


def _metadata_spec(model: str, version: int | str | None) -> Spec[dict[str, Any]]:
    return json_spec(Call("GET", _model_path(model, version)), dict)


def _ready_spec(model: str, version: int | str | None) -> Spec[bool]:
    call = Call("GET", _model_path(model, version, "ready"))
    return Spec(call, lambda response: True, tolerate=(Unavailable,), recover=lambda error: False)


def _push_spec(
    handle: str,
    artifact: str | os.PathLike[str],
    manifest: Any,
    notes: str,
    progress: Progress | None,
    chunks: Callable[[Path, Progress | None], Any],
) -> Spec[Version]:
    path = Path(artifact)
    digest = _files.sha256_file(path)
    doc = _files.json_or_path(manifest)
    call = Call(
        "POST",
        product_path(handle, "versions", "model"),
        params={"notes": notes or None},
        content=lambda: chunks(path, progress),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(path.stat().st_size),
            # ensure_ascii: a header value must be ASCII, whatever the manifest's descriptions.
            MODEL_MANIFEST_HEADER: json.dumps(doc, separators=(",", ":"), ensure_ascii=True),
            ARTIFACT_DIGEST_HEADER: digest,
        },
    )
    return json_spec(call, Version.from_json)


def _pull(
    handle: str, dest: str | os.PathLike[str], version: int, progress: Progress | None
) -> Download:
    call = Call("GET", product_path(handle, "versions", version, "artifact"))
    fallback = f"{handle}-v{version}.bin"
    return Download(call, dest, fallback, progress, digest_header=ARTIFACT_DIGEST_HEADER)


class Models(SyncResource):
    """Models: inference, metadata, push and pull (``cb.models``)."""

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | str | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        parameters: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> InferResult:
        """Run a model on numpy inputs; get numpy outputs.

        Tensors travel in the v2 binary tensor extension (``binary=False`` sends JSON lists).
        The call is metered once per ``idempotency_key``: retries reuse it.

        Args:
            model: The model's handle, e.g. ``"traffic-police.flow-smoother"``.
            inputs: Input name → array (dtype decides the v2 datatype: ``float32`` is FP32).
            version: A version number (None: the latest published one).
            outputs: The outputs wanted (None: all).
            binary: Use the binary tensor extension.
            parameters: Request-level v2 parameters.
            idempotency_key: The key that makes the call billed once (default: a fresh one).
            timeout: Seconds to wait for this call (None: the client's timeout).

        Returns:
            The outputs by name, as numpy arrays.

        Raises:
            NotFound: No such model, or one the caller may not see.
            Forbidden: The key lacks ``infer``, or the model needs an access grant.
            BadRequest: An input's name, datatype or shape does not fit the model.
            QuotaExceeded: Over a quota, after the retries allowed (``retry_after``).

        Example:
            >>> flow = np.ones((2, 16), np.float32)
            >>> out = cb.models.infer("traffic-police.flow-smoother", {"flow": flow})
            >>> out["smoothed"].shape
            (2, 16)
        """
        spec = _infer_spec(
            model, inputs, version, outputs, binary, parameters, idempotency_key, timeout
        )
        return self._run(spec)

    def metadata(self, model: str, *, version: int | str | None = None) -> dict[str, Any]:
        """A model's v2 metadata: platform, versions, input and output signature.

        Example:
            >>> cb.models.metadata("traffic-police.flow-smoother")["inputs"]
            [{'name': 'flow', 'datatype': 'FP32', 'shape': [-1, -1]}]
        """
        return self._run(_metadata_spec(model, version))

    def ready(self, model: str, *, version: int | str | None = None) -> bool:
        """Whether the model can serve now (False while it loads, or when unavailable).

        Example:
            >>> cb.models.ready("traffic-police.flow-smoother")
            True
        """
        return self._run(_ready_spec(model, version))

    def push(
        self,
        handle: str,
        artifact: str | os.PathLike[str],
        manifest: Mapping[str, Any] | str | os.PathLike[str],
        *,
        notes: str = "",
        progress: Progress | None = None,
    ) -> Version:
        """Upload a model artifact as a new version of a model product (``catalog:write``).

        The artifact streams from disk; its sha256 is sent along, so the platform keeps it
        only if the bytes arrived intact. It is loaded and run once against the manifest
        before the version appears.

        Args:
            handle: The model product (create it with :meth:`Catalog.create` first).
            artifact: The file: a TorchScript ``.pt`` or a python-model ``.zip``.
            manifest: The manifest (format, signature, runtime), or a path to its JSON.
            notes: Release notes.
            progress: Called as ``progress(bytes_sent, total)``.

        Returns:
            The new version (``artifact_digest``, ``manifest``).

        Raises:
            ValidationError: The manifest is invalid or the artifact does not load or run.
            PayloadTooLarge: Over the platform's upload limit.

        Example:
            >>> v = cb.models.push("parkeasy.lane-counter", "model.pt", "manifest.json",
            ...                    progress=lambda done, total: print(done, total))
            >>> v.version, v.artifact_digest
            (1, 'sha256:…')
        """
        return self._run(_push_spec(handle, artifact, manifest, notes, progress, self._chunks))

    def pull(
        self,
        handle: str,
        dest: str | os.PathLike[str] = ".",
        *,
        version: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download a model version's artifact, checked against its digest.

        Args:
            handle: The model product.
            dest: A file to write, or a folder (the server's file name is used).
            version: The version (None: the latest).
            progress: Called as ``progress(bytes_received, total)``.

        Returns:
            The path written.

        Raises:
            DigestMismatch: The bytes do not match the announced digest (nothing is kept).

        Example:
            >>> cb.models.pull("traffic-police.flow-smoother", "models/")
            PosixPath('models/flow-smoother-v1.pt')
        """
        if version is None:
            version = self._run(latest_version(handle))
        return self._download(_pull(handle, dest, version, progress))


class AsyncModels(AsyncResource):
    """Models, awaited (``AsyncClient.models``): the methods of :class:`Models`."""

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        version: int | str | None = None,
        outputs: Sequence[str] | None = None,
        binary: bool = True,
        parameters: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> InferResult:
        """Run a model on numpy inputs; see :meth:`Models.infer`.

        Example:
            >>> out = await cb.models.infer("traffic-police.flow-smoother", {"flow": flow})
        """
        spec = _infer_spec(
            model, inputs, version, outputs, binary, parameters, idempotency_key, timeout
        )
        return await self._run(spec)

    async def metadata(self, model: str, *, version: int | str | None = None) -> dict[str, Any]:
        """A model's v2 metadata; see :meth:`Models.metadata`.

        Example:
            >>> meta = await cb.models.metadata("traffic-police.flow-smoother")
        """
        return await self._run(_metadata_spec(model, version))

    async def ready(self, model: str, *, version: int | str | None = None) -> bool:
        """Whether the model can serve now; see :meth:`Models.ready`.

        Example:
            >>> await cb.models.ready("traffic-police.flow-smoother")
        """
        return await self._run(_ready_spec(model, version))

    async def push(
        self,
        handle: str,
        artifact: str | os.PathLike[str],
        manifest: Mapping[str, Any] | str | os.PathLike[str],
        *,
        notes: str = "",
        progress: Progress | None = None,
    ) -> Version:
        """Upload a model artifact as a new version; see :meth:`Models.push`.

        Example:
            >>> v = await cb.models.push("parkeasy.lane-counter", "model.pt", manifest)
        """
        spec = _push_spec(handle, artifact, manifest, notes, progress, self._chunks)
        return await self._run(spec)

    async def pull(
        self,
        handle: str,
        dest: str | os.PathLike[str] = ".",
        *,
        version: int | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download a model version's artifact; see :meth:`Models.pull`.

        Example:
            >>> path = await cb.models.pull("traffic-police.flow-smoother", "models/")
        """
        if version is None:
            version = await self._run(latest_version(handle))
        return await self._download(_pull(handle, dest, version, progress))
