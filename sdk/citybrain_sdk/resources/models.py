"""``cb.models``: inference with numpy in and out (Open Inference Protocol v2, binary tensors),
model metadata and readiness, and pushing and pulling model artifacts with progress.

Every inference call carries an ``Idempotency-Key`` (a fresh one per call unless the caller
passes its own) that all of its retries reuse: the platform bills the key once, so a retry after
a lost answer is never billed twice (``InferResult.replayed`` tells that it was one).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from citybrain_sdk._http import API_PREFIX, AsyncHTTP, Call, SyncHTTP, new_idempotency_key, segment
from citybrain_sdk.resources import _files
from citybrain_sdk.tensors import InferResult, decode_response, encode_request
from citybrain_sdk.types import Product, Progress, Version

__all__ = ["AsyncModels", "Models"]

ARTIFACT_DIGEST_HEADER = "X-Artifact-Digest"
MODEL_MANIFEST_HEADER = "X-Model-Manifest"


def _model_path(model: str, version: int | str | None, *rest: str) -> str:
    path = f"/v2/models/{segment(model)}"
    if version is not None:
        path += f"/versions/{segment(version)}"
    return "/".join([path, *rest])


def _infer_call(
    model: str,
    inputs: Mapping[str, Any],
    version: int | str | None,
    outputs: Sequence[str] | None,
    binary: bool,
    parameters: Mapping[str, Any] | None,
    idempotency_key: str | None,
    timeout: float | None,
) -> Call:
    body, headers = encode_request(inputs, outputs=outputs, binary=binary, parameters=parameters)
    return Call(
        "POST",
        _model_path(model, version, "infer"),
        content=lambda: body,
        headers=headers,
        idempotency_key=idempotency_key or new_idempotency_key(),
        timeout=timeout,
    )


def _result(call: Call, content: bytes, headers: Mapping[str, str]) -> InferResult:
    return decode_response(
        content,
        headers,
        request_id=headers.get("x-request-id"),
        idempotency_key=call.idempotency_key,
    )


def _push_call(
    handle: str, artifact: Path, manifest: Any, notes: str, digest: str, body: Any
) -> Call:
    doc = _files.json_or_path(manifest)
    return Call(
        "POST",
        f"{API_PREFIX}/products/{segment(handle)}/versions/model",
        params={"notes": notes or None},
        content=body,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(artifact.stat().st_size),
            # ensure_ascii: a header value must be ASCII, whatever the manifest's descriptions.
            MODEL_MANIFEST_HEADER: json.dumps(doc, separators=(",", ":"), ensure_ascii=True),
            ARTIFACT_DIGEST_HEADER: digest,
        },
    )


def _artifact_call(handle: str, version: int) -> Call:
    return Call("GET", f"{API_PREFIX}/products/{segment(handle)}/versions/{version}/artifact")


class Models:
    """Models: inference, metadata, push and pull (``cb.models``)."""

    def __init__(self, http: SyncHTTP) -> None:
        self._http = http

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
        call = _infer_call(
            model, inputs, version, outputs, binary, parameters, idempotency_key, timeout
        )
        response = self._http.send(call)
        return _result(call, response.content, response.headers)

    def metadata(self, model: str, *, version: int | str | None = None) -> dict[str, Any]:
        """A model's v2 metadata: platform, versions, input and output signature.

        Example:
            >>> cb.models.metadata("traffic-police.flow-smoother")["inputs"]
            [{'name': 'flow', 'datatype': 'FP32', 'shape': [-1, -1]}]
        """
        doc: dict[str, Any] = self._http.json(Call("GET", _model_path(model, version)))
        return doc

    def ready(self, model: str, *, version: int | str | None = None) -> bool:
        """Whether the model can serve now (False while it loads, or when unavailable).

        Example:
            >>> cb.models.ready("traffic-police.flow-smoother")
            True
        """
        from citybrain_sdk.errors import Unavailable

        try:
            self._http.send(Call("GET", _model_path(model, version, "ready")))
        except Unavailable:
            return False
        return True

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
        path = Path(artifact)
        digest = _files.sha256_file(path)
        call = _push_call(
            handle, path, manifest, notes, digest, lambda: _files.iter_file(path, progress)
        )
        return Version.from_json(self._http.json(call))

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
            version = _latest(Product.from_json(self._http.json(_product_call(handle))))
        with self._http.stream(_artifact_call(handle, version)) as response:
            target = _files.target_path(dest, response, f"{handle}-v{version}.bin")
            expected = response.headers.get(ARTIFACT_DIGEST_HEADER)
            return _files.save(response, target, expected, progress)


def _product_call(handle: str) -> Call:
    return Call("GET", f"{API_PREFIX}/products/{segment(handle)}")


def _latest(product: Product) -> int:
    if product.latest_version is None:
        raise ValueError(f"{product.handle} has no versions yet")
    return product.latest_version


class AsyncModels:
    """Models, awaited (``AsyncClient.models``): the methods of :class:`Models`."""

    def __init__(self, http: AsyncHTTP) -> None:
        self._http = http

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
        call = _infer_call(
            model, inputs, version, outputs, binary, parameters, idempotency_key, timeout
        )
        response = await self._http.send(call)
        return _result(call, response.content, response.headers)

    async def metadata(self, model: str, *, version: int | str | None = None) -> dict[str, Any]:
        """A model's v2 metadata; see :meth:`Models.metadata`.

        Example:
            >>> meta = await cb.models.metadata("traffic-police.flow-smoother")
        """
        doc: dict[str, Any] = await self._http.json(Call("GET", _model_path(model, version)))
        return doc

    async def ready(self, model: str, *, version: int | str | None = None) -> bool:
        """Whether the model can serve now; see :meth:`Models.ready`.

        Example:
            >>> await cb.models.ready("traffic-police.flow-smoother")
        """
        from citybrain_sdk.errors import Unavailable

        try:
            await self._http.send(Call("GET", _model_path(model, version, "ready")))
        except Unavailable:
            return False
        return True

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
        path = Path(artifact)
        digest = _files.sha256_file(path)
        call = _push_call(
            handle, path, manifest, notes, digest, lambda: _files.aiter_file(path, progress)
        )
        return Version.from_json(await self._http.json(call))

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
            version = _latest(Product.from_json(await self._http.json(_product_call(handle))))
        async with self._http.stream(_artifact_call(handle, version)) as response:
            target = _files.target_path(dest, response, f"{handle}-v{version}.bin")
            expected = response.headers.get(ARTIFACT_DIGEST_HEADER)
            return await _files.asave(response, target, expected, progress)
