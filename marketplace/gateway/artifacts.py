"""Model versions = artifact + manifest: streamed upload, validation, download.

An upload is accepted only whole: the artifact streams into the content-addressed blob store
(hashed on the way, refused past the size limit or on a digest mismatch), then is loaded and run
once against its manifest (``model_store.validate_model``; a python-format upload is tenant
code, so that happens in a sandbox worker, never in this process), and only then does the
version row appear. Any failure leaves no version, and the blob is removed unless another
version already references the same bytes.

A download is allowed by the rule of ``gateway.downloads`` (the owner; else those who may run
the model, when its owner allows downloads), and is billed and audited before its first byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import IO, Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.catalog import service as catalog
from marketplace.constants import ProductKind, ProductState
from marketplace.context import Caller, Principal
from marketplace.db import transaction
from marketplace.errors import ConflictError, InvalidInputError, NotFoundError
from marketplace.gateway.downloads import (
    DownloadMeter,
    DownloadTarget,
    audit_download,
    authorize_download,
    meter_download,
)
from marketplace.gateway.idempotency import check_idempotency_key
from marketplace.gateway.quota import LimitQuota
from marketplace.tables import ProductVersion
from model_store import BlobStore, ModelManifest, validate_model
from model_store.sandbox import SandboxConfig

__all__ = [
    "ArtifactDownload",
    "check_model_product",
    "download_artifact",
    "parse_manifest",
    "upload_model_version",
]

log = logging.getLogger(__name__)

_EXTENSIONS = {"torchscript": "pt", "python": "zip", "onnx": "onnx"}


def parse_manifest(text: str | None) -> ModelManifest:
    """A manifest from its JSON text; 422 naming what is wrong."""
    if not text:
        raise InvalidInputError(
            "a model version needs its manifest: send it as JSON in the X-Model-Manifest "
            "header or the 'manifest' query parameter"
        )
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise InvalidInputError(f"the manifest is not valid JSON: {e}") from None
    try:
        return ModelManifest.model_validate(raw)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        raise InvalidInputError("invalid manifest: " + "; ".join(problems)) from None


def check_model_product(session: Session, caller: Principal, handle: str) -> None:
    """The caller owns ``handle``, a model product that takes new versions."""
    product = catalog.get_owned_product(session, caller, handle)
    if product.kind != ProductKind.MODEL.value:
        raise ConflictError(f"product {handle!r} is a {product.kind}; model versions need a model")
    if product.state == ProductState.DEPRECATED.value:
        raise ConflictError(f"product {handle} is deprecated; it takes no new versions")


class _DigestLocks:
    """One lock per digest: an upload validating some bytes is never raced by the cleanup of a
    failed upload of the same bytes."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def __call__(self, digest: str) -> asyncio.Lock:
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        return lock

    def release(self, digest: str) -> None:
        lock, users = self._locks[digest]
        if users <= 1:
            del self._locks[digest]
        else:
            self._locks[digest] = (lock, users - 1)


_digest_locks = _DigestLocks()


def _referenced(session: Session, digest: str) -> bool:
    return (
        session.scalar(
            select(ProductVersion.id).where(ProductVersion.artifact_digest == digest).limit(1)
        )
        is not None
    )


def _delete_if_orphan(factory: sessionmaker[Session], blobs: BlobStore, digest: str) -> None:
    try:
        with transaction(factory) as session:
            if _referenced(session, digest):
                return
        blobs.delete(digest)
    except Exception:  # the upload's own error is what the caller must see
        log.exception("could not remove the rejected artifact %s", digest)


def _create_version(
    factory: sessionmaker[Session],
    caller: Principal,
    handle: str,
    manifest: ModelManifest,
    digest: str,
    size: int,
    notes: str,
    extra_meta: dict[str, Any] | None = None,
) -> ProductVersion:
    with transaction(factory) as session:
        check_model_product(session, caller, handle)
        return catalog.create_version(
            session,
            caller,
            handle,
            notes=notes,
            meta={**(extra_meta or {}), "artifact_size": size, "format": manifest.format},
            artifact_digest=digest,
            manifest=manifest.model_dump(mode="json"),
        )


async def upload_model_version(
    *,
    factory: sessionmaker[Session],
    blobs: BlobStore,
    caller: Principal,
    handle: str,
    manifest: ModelManifest,
    chunks: AsyncIterable[bytes],
    max_bytes: int,
    expected_digest: str | None = None,
    notes: str = "",
    sandbox: SandboxConfig | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> ProductVersion:
    """Store, validate and register one model version; all or nothing.

    ``sandbox``: the limits of the worker that validates tenant code (default limits if None).
    ``extra_meta``: more version metadata (an importer's card and provenance).

    Raises:
        NotFoundError, ForbiddenError, ConflictError: Not the caller's model product.
        ArtifactTooLargeError: Over ``max_bytes`` (413).
        InvalidArtifactError: Digest mismatch, unloadable, or signature mismatch (422).
    """

    def check() -> None:
        with transaction(factory) as session:
            check_model_product(session, caller, handle)

    await asyncio.to_thread(check)
    info = await blobs.put_stream(chunks, max_bytes=max_bytes, expected_digest=expected_digest)
    lock = await _digest_locks(info.digest)
    try:
        async with lock:
            try:
                path = await asyncio.to_thread(blobs.local_path, info.digest)
                await asyncio.to_thread(validate_model, manifest, path, sandbox=sandbox)
                return await asyncio.to_thread(
                    _create_version,
                    factory,
                    caller,
                    handle,
                    manifest,
                    info.digest,
                    info.size,
                    notes,
                    extra_meta,
                )
            except BaseException:
                await asyncio.shield(
                    asyncio.to_thread(_delete_if_orphan, factory, blobs, info.digest)
                )
                raise
    finally:
        _digest_locks.release(info.digest)


@dataclass(frozen=True, slots=True)
class ArtifactDownload:
    """An open artifact and what to tell the client about it.

    Attributes:
        file: The artifact, open for reading (the caller closes it).
        digest: ``sha256:<hex>``.
        size: Its size in bytes.
        filename: A file name for ``Content-Disposition``.
        replayed: An ``Idempotency-Key`` retry: this download was not billed again.
    """

    file: IO[bytes]
    digest: str
    size: int
    filename: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Allowed:
    principal: Principal
    target: DownloadTarget
    digest: str
    filename: str


def _allowed_artifact(session: Session, caller: Caller, handle: str, version: int) -> _Allowed:
    """Visibility first (a hidden product, version or artifact is 404 as if missing), then the
    download rule (``gateway.downloads``)."""
    product = catalog.get_product(session, caller, handle)
    row = catalog.get_version(session, caller, handle, version)
    if row.artifact_digest is None:
        raise NotFoundError(f"version {version} of product {handle!r} has no artifact")
    principal = authorize_download(session, caller, product, handle=handle)
    fmt: Any = (row.manifest or {}).get("format")
    filename = f"{handle}-{version}.{_EXTENSIONS.get(fmt, 'bin')}"
    target = DownloadTarget.of(product, handle, version)
    return _Allowed(principal, target, row.artifact_digest, filename)


async def download_artifact(
    *,
    factory: sessionmaker[Session],
    blobs: BlobStore,
    caller: Caller,
    handle: str,
    version: int,
    meter: DownloadMeter,
    quota: LimitQuota | None = None,
) -> ArtifactDownload:
    """Open a version's artifact for ``caller``, once it may download it, billed and audited.

    In order: the rule (a read session), the quota (``quota``: the limits calls to the
    model count against, 429), the blob opened, one usage event made durable, the
    audit entry committed; only then may the first byte go out. A failure at any step opens
    nothing and leaves no entry (a usage event already durable stays: a retry with the same
    ``Idempotency-Key`` is not billed again).

    Raises:
        BadRequestError: A malformed ``Idempotency-Key``.
        UnauthenticatedError, NotFoundError, ForbiddenError: See
            :func:`~marketplace.gateway.downloads.authorize_download`.
        QuotaExceededError: A quota or rate limit refuses the download (429).
        MeteringUnavailableError: The usage event cannot be made durable (503).
    """

    check_idempotency_key(meter.idempotency_key)

    def check() -> _Allowed:
        session = factory()
        try:
            return _allowed_artifact(session, caller, handle, version)
        finally:
            session.rollback()
            session.close()

    allowed = await asyncio.to_thread(check)
    if quota is not None:
        await quota.check(allowed.principal, allowed.target)
    info = await asyncio.to_thread(blobs.info, allowed.digest)
    file = await asyncio.to_thread(blobs.open, info.digest)
    try:
        recorded = await meter_download(meter, allowed.principal, allowed.target)

        def audit() -> None:
            with transaction(factory) as session:
                audit_download(
                    session,
                    allowed.principal,
                    allowed.target,
                    what="artifact",
                    recorded=recorded,
                    detail={"digest": info.digest, "bytes": info.size},
                )

        await asyncio.to_thread(audit)
    except BaseException:
        file.close()
        raise
    return ArtifactDownload(
        file=file,
        digest=info.digest,
        size=info.size,
        filename=allowed.filename,
        replayed=recorded is not None and recorded.replayed,
    )
