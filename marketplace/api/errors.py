"""The one place where errors become HTTP responses.

Body: ``{"error": "<message>", "code": "<StableCode>", "request_id": "<id>"}`` — the ``error``
string is the Open Inference Protocol's error shape, so stock v2 clients show the message.
Service errors (marketplace, model_store, billing) carry their own ``status`` and ``code``.
Denials (401, 403, and 404s that hide an existing resource) are written to the audit log.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing.errors import BillingError
from marketplace.api.contract import AllowedMethods
from marketplace.audit.service import record_decision
from marketplace.constants import REQUEST_ID_HEADER
from marketplace.context import current_request_id
from marketplace.errors import CityBrainError
from model_store.errors import ModelStoreError

log = logging.getLogger("citybrain.api")

_STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "ValidationError",
    429: "QuotaExceeded",
    503: "Unavailable",
}


def allowed_methods(app: Any, path: str) -> list[str]:
    """The methods ``path`` supports, by the app's OpenAPI document (made once)."""
    known: AllowedMethods | None = getattr(app.state, "allowed_methods", None)
    if known is None:
        known = app.state.allowed_methods = AllowedMethods(app.openapi())
    return known(path)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": message, "code": code, "request_id": current_request_id()},
        status_code=status,
        headers=headers,
    )


def audit_denial(request: Request, status: int, code: str, extra: dict[str, Any]) -> None:
    """Write a denial (401, 403, a hidden 404) to the audit log (the portal's pages too)."""
    factory = getattr(request.app.state, "session_factory", None)
    if factory is None:
        return
    principal = getattr(request.state, "principal", None)
    detail = {"status": status, "code": code, "method": request.method}
    for k in ("reason", "key_id", "scope"):
        if k in extra:
            detail[k] = extra[k]
    try:
        record_decision(
            factory,
            actor=principal.label if principal else "anonymous",
            tenant_id=principal.tenant_id if principal else None,
            action="access.deny",
            target=request.url.path,
            outcome="deny",
            detail=detail,
        )
    except Exception:  # the denial stands even if auditing it fails; say so in the log
        log.exception("could not audit a denial of %s %s", request.method, request.url.path)


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    """A service error (marketplace, model_store, billing) as its JSON response; denials
    (401, 403, hidden 404s) are audited first."""
    status: int = getattr(exc, "status", 500)
    code: str = getattr(exc, "code", "InternalError")
    message: str = getattr(exc, "message", str(exc))
    extra: dict[str, Any] = getattr(exc, "extra", {}) or {}
    if status >= 500 and code in ("InternalError", "InferenceFailed"):
        log.error("request %s failed: %s", current_request_id(), message)
        message = "internal error; quote the request id when reporting it"
    if status in (401, 403) or extra.get("denied"):
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(audit_denial, request, status, code, extra)
    return error_response(status, code, message, getattr(exc, "headers", None))


SERVICE_ERRORS = (CityBrainError, ModelStoreError, BillingError)
"""The roots of the errors that carry their own status and code."""


def unexpected_error(request: Request, exc: BaseException) -> JSONResponse:
    """Anything else: logged with its traceback, answered 500 with only the request id."""
    # This can run outside the request-id middleware: take the id from the scope.
    rid = request.scope.get("state", {}).get("request_id", current_request_id())
    log.error("unhandled error in request %s", rid, exc_info=exc)
    return JSONResponse(
        {
            "error": "internal error; quote the request id when reporting it",
            "code": "InternalError",
            "request_id": rid,
        },
        status_code=500,
        headers={REQUEST_ID_HEADER: rid},
    )


DATABASE_OUTAGES = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)
"""What the database raises when it cannot answer now (unreachable, closed the connection,
locked, out of pooled connections), as against a mistake in a query: 503, worth a retry."""


def database_error(request: Request, exc: BaseException) -> JSONResponse:
    """A database outage: logged with its cause, answered 503 with nothing internal."""
    rid = request.scope.get("state", {}).get("request_id", current_request_id())
    log.error("database unavailable in request %s: %s", rid, type(exc.__cause__ or exc).__name__)
    return JSONResponse(
        {
            "error": "the database is unavailable; retry shortly",
            "code": "Unavailable",
            "request_id": rid,
        },
        status_code=503,
        headers={REQUEST_ID_HEADER: rid, "Retry-After": "5"},
    )


def install_error_handlers(app: FastAPI) -> None:
    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors()[:10]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msg = str(err.get("msg"))
            given = err.get("input")
            if isinstance(given, str | int | float) and len(repr(given)) <= 80:
                msg += f" (got {given!r})"  # the value the caller sent, to find it by
            problems.append(f"{loc}: {msg}" if loc else msg)
        return error_response(422, "ValidationError", "invalid request: " + "; ".join(problems))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "Error")
        message = exc.detail if isinstance(exc.detail, str) else code
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            # Starlette names only the first matching route's methods; the path has more.
            allowed = allowed_methods(request.app, request.url.path)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; allowed: {headers.get('Allow', '')}"
        return error_response(exc.status_code, code, message, headers)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return unexpected_error(request, exc)

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        return database_error(request, exc)

    for root in SERVICE_ERRORS:
        app.add_exception_handler(root, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for outage in DATABASE_OUTAGES:
        app.add_exception_handler(outage, database_unavailable)
    app.add_exception_handler(Exception, unexpected)
