"""Model versions: streamed artifact upload (artifact + manifest) and download."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from marketplace.api.convert import version_public
from marketplace.api.deps import caller_in_own_session
from marketplace.api.schemas import VersionPublic
from marketplace.config import Settings
from marketplace.constants import Scope
from marketplace.context import Principal
from marketplace.gateway.artifacts import (
    ArtifactDownload,
    open_artifact,
    parse_manifest,
    upload_model_version,
)
from marketplace.gateway.constants import ARTIFACT_DIGEST_HEADER, MODEL_MANIFEST_HEADER

router = APIRouter(tags=["models"])

_CHUNK = 1 << 20


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post("/products/{handle}/versions/model", response_model=VersionPublic, status_code=201)
async def upload_model_version_(
    handle: str,
    request: Request,
    manifest: Annotated[
        str | None, Query(description="The manifest as JSON (or the X-Model-Manifest header)")
    ] = None,
    notes: Annotated[str, Query(max_length=2000)] = "",
) -> VersionPublic:
    """Upload a model version: the artifact as the raw body (application/octet-stream), the
    manifest as JSON in X-Model-Manifest, optionally X-Artifact-Digest: sha256:<hex>."""
    caller = await caller_in_own_session(request, Scope.CATALOG_WRITE.value, required=True)
    model_manifest = parse_manifest(request.headers.get(MODEL_MANIFEST_HEADER) or manifest)
    assert isinstance(caller, Principal)
    version = await upload_model_version(
        factory=request.app.state.session_factory,
        blobs=request.app.state.blobs,
        caller=caller,
        handle=handle,
        manifest=model_manifest,
        chunks=request.stream(),
        max_bytes=_settings(request).model_store.max_upload_bytes,
        expected_digest=request.headers.get(ARTIFACT_DIGEST_HEADER),
        notes=notes,
    )
    return version_public(handle, version)


@router.get(
    "/products/{handle}/versions/{version}/artifact",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact(handle: str, version: int, request: Request) -> StreamingResponse:
    """Download a model version's artifact (same visibility rules as reading the version)."""
    caller = await caller_in_own_session(request, Scope.CATALOG_READ.value, required=False)
    factory = request.app.state.session_factory
    blobs = request.app.state.blobs

    def go() -> ArtifactDownload:
        session = factory()
        try:
            return open_artifact(session, blobs, caller, handle, version)
        finally:
            session.rollback()
            session.close()

    download = await run_in_threadpool(go)

    def chunks() -> Iterator[bytes]:
        with download.file as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    return StreamingResponse(
        chunks(),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(download.size),
            ARTIFACT_DIGEST_HEADER: download.digest,
            "ETag": f'"{download.digest}"',
            "Content-Disposition": f'attachment; filename="{download.filename}"',
        },
    )
