"""What makes the OpenAPI document the API's contract, applied to every operation at once.

Every error the platform answers has one body (:class:`ErrorPublic`, rendered by
``marketplace.api.errors``), so :func:`document_errors` declares the error statuses on every
operation of the document with that schema, in place of FastAPI's default 422 shape (which the
platform never answers). A 405 names the methods the path does support, by the document
(:class:`AllowedMethods`): Starlette's router names only those of the first route that matches
the path.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

__all__ = ["ERROR_REF", "AllowedMethods", "ErrorPublic", "document_errors"]

ERROR_REF = "#/components/schemas/ErrorPublic"


class ErrorPublic(BaseModel):
    """Every error's body (the ``error`` string is the v2 protocol's error shape)."""

    error: str
    code: str
    request_id: str


# Statuses any operation may answer, and why; see marketplace.errors for the classes behind them.
_ANY_OPERATION = {
    "400": "Malformed input (the message names what is wrong)",
    "401": "No credentials where the operation needs them, or unknown, expired or revoked ones",
    "403": "The credential's scope, role, tier or grant does not allow this",
    "404": "No such resource, or one the caller may not see (the two read the same)",
    "422": "Well-formed, but invalid values (the message names them)",
    "429": "A quota or rate limit refuses the call (Retry-After says when to retry)",
    "503": "The database, a runtime or the usage meter is unavailable right now",
}
# And those with a body, or that change state.
_WRITES = {
    "409": "The resource exists already, or its state does not allow this",
    "413": "The body is over the configured limit",
}
# And those with a body.
_BODIES = {"415": "The body's media type or file format is not one this operation takes"}
_SAFE_METHODS = {"get", "head", "options"}
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_PARAM = re.compile(r"\{[^}/]+\}")
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
    }


def document_errors(openapi: dict[str, Any]) -> None:
    """Declare the error statuses, with the error schema, on every operation of ``openapi``."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorPublic"] = ErrorPublic.model_json_schema(mode="serialization")
    for item in openapi.get("paths", {}).values():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            statuses = dict(_ANY_OPERATION)
            if method not in _SAFE_METHODS or "requestBody" in operation:
                statuses.update(_WRITES)
            if "requestBody" in operation:
                statuses.update(_BODIES)
            responses: dict[str, Any] = operation["responses"]
            for status, description in sorted(statuses.items()):
                existing = responses.get(status)
                if existing is None or _is_fastapi_error(existing):
                    responses[status] = _error_response(description)
                else:  # a route's own text for the status stays; the body is the error's
                    existing.setdefault("content", {}).setdefault(
                        "application/json", {"schema": {"$ref": ERROR_REF}}
                    )
    document_optional_credentials(openapi)
    text = repr(openapi.get("paths", {}))
    for name in _FASTAPI_ERROR_SCHEMAS:
        if f"#/components/schemas/{name}'" not in text:
            schemas.pop(name, None)


def document_optional_credentials(openapi: dict[str, Any]) -> None:
    """Operations that declare no credentials (``deps.credentials_required`` declares them
    where they are required) take them optionally: anonymous callers are served (public
    listings, health), and a credential presented must be valid (else 401)."""
    schemes: dict[str, Any] = openapi.get("components", {}).get("securitySchemes", {})
    optional: list[dict[str, list[str]]] = [{name: []} for name in sorted(schemes)]
    optional.append({})  # or none at all
    for item in openapi.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation.setdefault("security", optional)


def _is_fastapi_error(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


class AllowedMethods:
    """The methods a path supports, by the document: those of the most specific path template
    that matches it (fewest parameters), HEAD with GET as Starlette answers it. Routes that the
    document leaves out (the portal's pages) are not known here."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        templates: list[tuple[int, re.Pattern[str], list[str]]] = []
        for path, item in openapi.get("paths", {}).items():
            methods = sorted(m.upper() for m in item if m.lower() in _HTTP_METHODS)
            if "GET" in methods:
                methods = sorted({*methods, "HEAD"})
            literal = _PARAM.split(path)
            pattern = re.compile("^" + "[^/]+".join(map(re.escape, literal)) + "$")
            templates.append((len(literal) - 1, pattern, methods))
        self._templates = sorted(templates, key=lambda t: t[0])

    def __call__(self, path: str) -> list[str]:
        found: set[str] = set()
        fewest: int | None = None
        for params, pattern, methods in self._templates:
            if fewest is not None and params > fewest:
                break
            if pattern.match(path):
                fewest = params
                found.update(methods)
        return sorted(found)
