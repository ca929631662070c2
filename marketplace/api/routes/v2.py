"""The Open Inference Protocol (v2): health, server and model metadata, readiness, inference.

The hot path: async handlers read the raw body and hand it to the gateway pipeline
(``marketplace.gateway.pipeline``); responses are the bytes the v2 codec produced, sent as is.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from marketplace.constants import API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER
from marketplace.context import current_request_id
from marketplace.errors import UnavailableError
from marketplace.gateway.constants import INFERENCE_HEADER_CONTENT_LENGTH
from marketplace.gateway.pipeline import Gateway, InferCall, presented_token
from marketplace.health import readiness_of

router = APIRouter(tags=["inference (v2)"])

_JSON = "application/json"
_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _json(doc: Any, status: int = 200) -> Response:
    return Response(_dumps(doc).encode(), status_code=status, media_type=_JSON)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway | None = getattr(request.app.state, "gateway", None)
    if gateway is None:
        raise UnavailableError("the inference gateway is starting")
    return gateway


def _token(request: Request) -> str | None:
    headers = request.headers
    return presented_token(headers.get("authorization"), headers.get(API_KEY_HEADER))


@router.get("/v2/health/live", response_class=Response)
async def server_live() -> Response:
    """Liveness of the inference server."""
    return _json({"live": True})


@router.get("/v2/health/ready", response_class=Response)
async def server_ready(request: Request) -> Response:
    """Readiness: 200 when the database, the usage spool and each configured runtime answer,
    naming them; else 503 naming what is down (``marketplace.health``)."""
    readiness = await readiness_of(request.app.state.health)
    return _json(readiness.document(current_request_id()), 200 if readiness.ready else 503)


@router.get("/v2", response_class=Response)
async def server_metadata(request: Request) -> Response:
    """Server name, version and supported extensions."""
    return _json(_gateway(request).server_metadata())


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    doc = await _gateway(request).model_metadata(_token(request), name, version)
    return _json(doc)


async def _ready(request: Request, name: str, version: str | None) -> Response:
    ready = await _gateway(request).model_ready(_token(request), name, version)
    if not ready:
        raise UnavailableError(f"model '{name}' is not ready")
    return _json({"name": name, "ready": True})


async def _infer(request: Request, name: str, version: str | None) -> Response:
    headers = request.headers
    call = InferCall(
        name=name,
        version=version,
        token=presented_token(headers.get("authorization"), headers.get(API_KEY_HEADER)),
        body=await request.body(),
        header_length=headers.get(INFERENCE_HEADER_CONTENT_LENGTH),
        idempotency_key=headers.get(IDEMPOTENCY_KEY_HEADER),
        request_id=current_request_id(),
        request_id_chosen=headers.get(REQUEST_ID_HEADER) == current_request_id(),
    )
    reply = await _gateway(request).infer(call)
    return Response(reply.body, headers=reply.headers)


@router.get("/v2/models/{name}", response_class=Response)
async def model_metadata(name: str, request: Request) -> Response:
    """A model's metadata (latest version's signature); ``name`` is the product handle."""
    return await _metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}", response_class=Response)
async def model_version_metadata(name: str, version: str, request: Request) -> Response:
    """A model version's metadata."""
    return await _metadata(request, name, version)


@router.get("/v2/models/{name}/ready", response_class=Response)
async def model_ready(name: str, request: Request) -> Response:
    """200 when the model's latest version can serve, 503 when it cannot."""
    return await _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready", response_class=Response)
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    """200 when the model version can serve, 503 when it cannot."""
    return await _ready(request, name, version)


@router.post("/v2/models/{name}/infer", response_class=Response)
async def model_infer(name: str, request: Request) -> Response:
    """Run the latest version: JSON tensors or the binary tensor data extension."""
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer", response_class=Response)
async def model_version_infer(name: str, version: str, request: Request) -> Response:
    """Run one version: JSON tensors or the binary tensor data extension."""
    return await _infer(request, name, version)
