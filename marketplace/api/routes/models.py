"""Model versions: streamed artifact upload (artifact + manifest) and download."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from marketplace.api.convert import version_public
from marketplace.api.deps import (
    RequiresCredentials,
    authenticate_principal,
    authenticate_request,
)
from marketplace.api.params import VersionNumber
from marketplace.api.schemas import VersionPublic
from marketplace.config import Settings
from marketplace.constants import IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER, Scope
from marketplace.context import current_request_id
from marketplace.errors import UnavailableError
from marketplace.gateway.artifacts import (
    download_artifact,
    parse_manifest,
    upload_model_version,
)
from marketplace.gateway.constants import (
    ARTIFACT_DIGEST_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    MODEL_MANIFEST_HEADER,
)
from marketplace.gateway.downloads import DownloadMeter
from marketplace.gateway.pipeline import Gateway
from marketplace.gateway.quota import LimitQuota

router = APIRouter(tags=["models"])

_CHUNK = 1 << 20


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post(
    "/products/{handle}/versions/model",
    response_model=VersionPublic,
    status_code=201,
    dependencies=[RequiresCredentials],
)
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
    # No database session is held meanwhile: an upload may stream for minutes, and a session
    # would hold a connection that long (on SQLite, the write lock).
    caller = await authenticate_principal(request, scope=Scope.CATALOG_WRITE.value)
    model_manifest = parse_manifest(request.headers.get(MODEL_MANIFEST_HEADER) or manifest)
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
        sandbox=request.app.state.sandbox,
    )
    return version_public(handle, version)


@router.get(
    "/products/{handle}/versions/{version:int}/artifact",
    dependencies=[RequiresCredentials],  # anonymous callers never download
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_artifact_(
    handle: str, version: VersionNumber, request: Request
) -> StreamingResponse:
    """Download a model version's artifact: its owner, or whoever may run the model when its
    owner allows downloads; one metered usage event (unit ``download``) per download."""
    caller = await authenticate_request(request)  # the scopes: gateway.downloads
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise UnavailableError("the platform is starting")
    headers = request.headers
    download = await download_artifact(
        factory=request.app.state.session_factory,
        blobs=request.app.state.blobs,
        caller=caller,
        handle=handle,
        version=version,
        meter=DownloadMeter(
            usage=gateway.usage if gateway.metering else None,
            idempotency_key=headers.get(IDEMPOTENCY_KEY_HEADER),
            request_id=current_request_id(),
            request_id_chosen=headers.get(REQUEST_ID_HEADER) == current_request_id(),
        ),
        # A download counts against the same limits as a call to the model.
        quota=gateway.quota if isinstance(gateway.quota, LimitQuota) else None,
    )

    def chunks() -> Iterator[bytes]:
        with download.file as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    sent = {
        "Content-Length": str(download.size),
        ARTIFACT_DIGEST_HEADER: download.digest,
        "ETag": f'"{download.digest}"',
        "Content-Disposition": f'attachment; filename="{download.filename}"',
    }
    if download.replayed:
        sent[IDEMPOTENT_REPLAYED_HEADER] = "true"
    return StreamingResponse(chunks(), media_type="application/octet-stream", headers=sent)


@router.post(
    "/products/{handle}/versions/bentoml",
    response_model=VersionPublic,
    status_code=201,
    dependencies=[RequiresCredentials],
    openapi_extra={
        "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def import_bentoml_version_(
    handle: str,
    request: Request,
    manifest: Annotated[
        str | None,
        Query(description="Manifest fields that override what the archive says (JSON)"),
    ] = None,
    notes: Annotated[str, Query(max_length=2000)] = "",
) -> VersionPublic:
    """Import a BentoML model (a `bentoml models export` .bentomodel archive, as the raw body)
    as a model version: bentoml.torchscript and bentoml.onnx models; a README.md in the model
    folder becomes the card. Optional manifest fields in X-Model-Manifest or `manifest`."""
    from marketplace.gateway.importers import import_bentomodel, parse_overrides

    caller = await authenticate_principal(request, scope=Scope.CATALOG_WRITE.value)
    overrides = parse_overrides(request.headers.get(MODEL_MANIFEST_HEADER) or manifest)
    version = await import_bentomodel(
        factory=request.app.state.session_factory,
        blobs=request.app.state.blobs,
        caller=caller,
        handle=handle,
        chunks=request.stream(),
        max_bytes=_settings(request).model_store.max_upload_bytes,
        overrides=overrides,
        notes=notes,
        sandbox=request.app.state.sandbox,
    )
    return version_public(handle, version)
