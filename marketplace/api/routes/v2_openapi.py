"""The OpenAPI entries of the v2 inference routes, which have no FastAPI handler.

``POST /v2/models/{name}[/versions/{version}]/infer`` is answered by the fast path
(``marketplace.api.fastpath``) before FastAPI's routing, so no route handler exists to document
it. :func:`document_infer_routes` adds its two path items to the app's OpenAPI document from
the pydantic models below, which describe what the v2 codec (``model_store.v2``) reads and
writes: JSON tensors, or the binary tensor data extension (a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from marketplace.api.contract import ErrorPublic
from marketplace.constants import IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER
from marketplace.gateway.constants import (
    IDEMPOTENT_REPLAYED_HEADER,
    INFERENCE_HEADER_CONTENT_LENGTH,
)
from model_store.datatypes import DATATYPES

__all__ = ["V2InferRequest", "V2InferResponse", "document_infer_routes"]

V2Datatype = Annotated[str, Field(json_schema_extra={"enum": sorted(DATATYPES)})]
"""A v2 datatype the platform supports."""

TensorData = list[Any]
"""Tensor elements, flat in row-major order or nested by the shape (strings for ``BYTES``)."""


class V2RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int] = Field(description="The tensor's shape; its element count must match.")
    datatype: V2Datatype
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="``binary_data_size``: the tensor's bytes follow the JSON header "
        "(binary tensor data extension) instead of ``data``.",
    )
    data: TensorData | None = None


class V2RequestOutput(BaseModel):
    """An output the client asks for (all outputs when the request names none)."""

    model_config = ConfigDict(extra="allow")

    name: str
    parameters: dict[str, Any] | None = Field(
        default=None, description="``binary_data``: true to have this output returned binary."
    )


class V2InferRequest(BaseModel):
    """A v2 inference request (the JSON part, when binary tensors follow it)."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, description="Echoed back in the response.")
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="``binary_data_output``: true to have every output returned binary.",
    )
    inputs: list[V2RequestInput]
    outputs: list[V2RequestOutput] | None = None


class V2ResponseOutput(BaseModel):
    """One output tensor of an inference response."""

    name: str
    shape: list[int]
    datatype: V2Datatype
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="``binary_data_size`` when the output's bytes follow the JSON header.",
    )
    data: TensorData | None = None


class V2InferResponse(BaseModel):
    """A v2 inference response (the JSON part, when binary tensors follow it)."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2ResponseOutput]


class V2Live(BaseModel):
    """``GET /v2/health/live``."""

    live: bool


class ComponentPublic(BaseModel):
    """One component's state: ``up``, ``down`` (with a reason) or ``idle``."""

    status: Literal["up", "down", "idle"]
    reason: str | None = None
    note: str | None = None


class ReadinessPublic(BaseModel):
    """Readiness: each checked component by name (the database, the usage spool, each
    configured runtime); when not ready (503) also the error fields, ``error`` naming what is
    down."""

    ready: bool
    components: dict[str, ComponentPublic]
    error: str | None = None
    code: str | None = None
    request_id: str | None = None


class HealthPublic(ReadinessPublic):
    """``GET /api/v1/health``: readiness, with the platform's version."""

    status: Literal["ok", "unavailable"]
    version: str


class V2ServerMetadata(BaseModel):
    """``GET /v2``: the server's name, version and protocol extensions."""

    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    """One tensor of a model's signature (-1 in ``shape``: any size)."""

    name: str
    datatype: V2Datatype
    shape: list[int]


class V2ModelMetadata(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ModelReady(BaseModel):
    """``GET /v2/models/{name}[/versions/{version}]/ready`` when ready (else 503)."""

    name: str
    ready: bool


_REF = "#/components/schemas/{model}"

_ERRORS = {
    "400": "Malformed request: bad JSON or tensor, shape or datatype not the signature's",
    "401": "No credentials, or bad ones",
    "403": "The credential lacks the infer scope, or the tier needs an access grant",
    "404": "No such model, or one the caller may not see",
    "413": "The body is over the configured limit",
    "429": "A quota or rate limit refuses the call (see Retry-After)",
    "503": "The runtime is unavailable, the model's queue is full, or usage cannot be metered",
}


def _operation(versioned: bool) -> dict[str, Any]:
    request_ref = {"$ref": _REF.format(model="V2InferRequest")}
    response_ref = {"$ref": _REF.format(model="V2InferResponse")}
    error = {"application/json": {"schema": {"$ref": _REF.format(model="ErrorPublic")}}}
    parameters: list[dict[str, Any]] = [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "description": "The model: a product handle <tenant-slug>.<product-name>",
            "schema": {"type": "string"},
        }
    ]
    if versioned:
        parameters.append(
            {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    parameters += [
        {
            "name": INFERENCE_HEADER_CONTENT_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data extension: the length of the JSON header",
            "schema": {"type": "integer", "minimum": 0},
        },
        {
            "name": IDEMPOTENCY_KEY_HEADER,
            "in": "header",
            "required": False,
            "description": "A retry with the same key is billed once",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": "The request's id (8 to 64 of A-Z a-z 0-9 . _ -; else one is made)",
            "schema": {"type": "string"},
        },
    ]
    binary = {"type": "string", "format": "binary"}
    return {
        "tags": ["inference (v2)"],
        "summary": "Run one version" if versioned else "Run the latest version",
        "description": "JSON tensors, or the binary tensor data extension: a JSON header of "
        f"{INFERENCE_HEADER_CONTENT_LENGTH} bytes followed by the raw tensors. Authenticated "
        "like every route (an API key or a portal user's bearer token); one usage event is "
        "recorded per successful call.",
        "operationId": "model_version_infer" if versioned else "model_infer",
        # Every call is metered to a tenant: no anonymous inference (deps.credentials_required).
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "parameters": parameters,
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": request_ref},
                "application/octet-stream": {"schema": binary},
            },
        },
        "responses": {
            "200": {
                "description": "The outputs (binary when any output was asked binary)",
                "headers": {
                    IDEMPOTENT_REPLAYED_HEADER: {
                        "description": "true: a retry of a call already billed",
                        "schema": {"type": "string"},
                    },
                    INFERENCE_HEADER_CONTENT_LENGTH: {
                        "description": "With binary outputs: the length of the JSON header",
                        "schema": {"type": "integer"},
                    },
                },
                "content": {
                    "application/json": {"schema": response_ref},
                    "application/octet-stream": {"schema": binary},
                },
            },
            **{status: {"description": text, "content": error} for status, text in _ERRORS.items()},
        },
    }


def document_infer_routes(openapi: dict[str, Any]) -> None:
    """Add the infer routes (and the schemas they name) to an app's OpenAPI document."""
    _, defs = models_json_schema(
        [
            (V2InferRequest, "validation"),
            (V2InferResponse, "serialization"),
            (ErrorPublic, "serialization"),
        ],
        ref_template=_REF,
    )
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    paths = openapi.setdefault("paths", {})
    paths["/v2/models/{name}/infer"] = {"post": _operation(False)}
    paths["/v2/models/{name}/versions/{version}/infer"] = {"post": _operation(True)}
