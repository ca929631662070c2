"""The Open Inference Protocol (v2): health, server and model metadata, readiness.

Inference itself is answered by the fast path (``marketplace.api.fastpath``) before FastAPI's
routing; its OpenAPI entries come from ``marketplace.api.routes.v2_openapi``. The handlers here
are async and hand their work to the gateway (``marketplace.gateway.pipeline``).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from marketplace.api.deps import authenticate_request
from marketplace.api.routes.v2_openapi import (
    ReadinessPublic,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2ServerMetadata,
)
from marketplace.constants import Scope
from marketplace.context import current_request_id
from marketplace.errors import UnavailableError
from marketplace.federation.forward import Forwarder
from marketplace.gateway.pipeline import Gateway
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


def _shape(model: type[BaseModel], *, unavailable: bool = False) -> dict[int | str, Any]:
    """The ``responses`` of a route that writes its JSON itself: its body's schema."""
    responses: dict[int | str, Any] = {200: {"model": model}}
    if unavailable:
        responses[503] = {"model": model, "description": "Not ready: what is down"}
    return responses


@router.get("/v2/health/live", response_class=Response, responses=_shape(V2Live))
async def server_live() -> Response:
    """Liveness of the inference server."""
    return _json({"live": True})


@router.get(
    "/v2/health/ready", response_class=Response, responses=_shape(ReadinessPublic, unavailable=True)
)
async def server_ready(request: Request) -> Response:
    """Readiness: 200 when the database, the usage spool and each configured runtime answer,
    naming them; else 503 naming what is down (``marketplace.health``)."""
    readiness = await readiness_of(request.app.state.health)
    return _json(readiness.document(current_request_id()), 200 if readiness.ready else 503)


@router.get("/v2", response_class=Response, responses=_shape(V2ServerMetadata))
async def server_metadata(request: Request) -> Response:
    """Server name, version and supported extensions."""
    return _json(_gateway(request).server_metadata())


async def _mirrored(
    request: Request, name: str, version: str | None, suffix: str = ""
) -> Response | None:
    """On a district hub, the city's answer for a mirrored model (``federation.forward``)."""
    forwarder: Forwarder | None = request.app.state.forwarder
    if forwarder is None or not await forwarder.is_mirror(name):
        return None
    versioned = f"/versions/{version}" if version is not None else ""
    reply = await forwarder.forward(
        await authenticate_request(request),
        name,
        scope=Scope.INFER.value,
        method="GET",
        path_template=f"/v2/models/{{handle}}{versioned}{suffix}",
        body=b"",
        headers=request.headers,
    )
    return Response(reply.body, status_code=reply.status, headers=reply.headers)


async def _metadata(request: Request, name: str, version: str | None) -> Response:
    mirrored = await _mirrored(request, name, version)
    if mirrored is not None:
        return mirrored
    gateway = _gateway(request)
    doc = await gateway.model_metadata(await authenticate_request(request), name, version)
    return _json(doc)


async def _ready(request: Request, name: str, version: str | None) -> Response:
    mirrored = await _mirrored(request, name, version, "/ready")
    if mirrored is not None:
        return mirrored
    gateway = _gateway(request)
    ready = await gateway.model_ready(await authenticate_request(request), name, version)
    if not ready:
        raise UnavailableError(f"model '{name}' is not ready")
    return _json({"name": name, "ready": True})


@router.get("/v2/models/{name}", response_class=Response, responses=_shape(V2ModelMetadata))
async def model_metadata(name: str, request: Request) -> Response:
    """A model's metadata (latest version's signature); ``name`` is the product handle."""
    return await _metadata(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}",
    response_class=Response,
    responses=_shape(V2ModelMetadata),
)
async def model_version_metadata(name: str, version: str, request: Request) -> Response:
    """A model version's metadata."""
    return await _metadata(request, name, version)


@router.get("/v2/models/{name}/ready", response_class=Response, responses=_shape(V2ModelReady))
async def model_ready(name: str, request: Request) -> Response:
    """200 when the model's latest version can serve, 503 when it cannot."""
    return await _ready(request, name, None)


@router.get(
    "/v2/models/{name}/versions/{version}/ready",
    response_class=Response,
    responses=_shape(V2ModelReady),
)
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    """200 when the model version can serve, 503 when it cannot."""
    return await _ready(request, name, version)
