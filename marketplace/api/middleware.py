"""Pure ASGI middleware (no per-request task hop): request ids (also on the request's trace
span) and body-size limits."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

from marketplace.api.tracing import tag_current_span
from marketplace.constants import REQUEST_ID_HEADER
from marketplace.context import new_request_id, request_id_var
from marketplace.errors import PayloadTooLargeError

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

access_log = logging.getLogger("citybrain.access")

_RID_OK = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_RID_HEADER = REQUEST_ID_HEADER.lower().encode()


def client_request_id(scope: MutableMapping[str, Any]) -> str | None:
    """The request's own ``X-Request-Id``, if it has a well-formed one."""
    for name, value in scope["headers"]:
        if name == _RID_HEADER:
            candidate: str = value.decode("latin-1")
            if _RID_OK.match(candidate):
                return candidate
            break
    return None


def request_id_of(scope: MutableMapping[str, Any]) -> str:
    """A well-formed incoming ``X-Request-Id``, or a new id."""
    return client_request_id(scope) or new_request_id()


REQUEST_ID_HEADER_BYTES = _RID_HEADER


def log_access(scope: MutableMapping[str, Any], status: int, started: float, rid: str) -> None:
    """One access-log line: the path only, never the query string; the key by its id only."""
    if access_log.isEnabledFor(logging.INFO):
        principal = scope["state"].get("principal")
        access_log.info(
            "%s %s %d %.1fms rid=%s caller=%s",
            scope["method"],
            scope["path"],
            status,
            (time.perf_counter() - started) * 1000,
            rid,
            principal.label if principal is not None else "anonymous",
        )


class RequestIdMiddleware:
    """Take a well-formed incoming X-Request-Id or make one; echo it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        tag_current_span(rid)

        status = 500
        started = time.perf_counter()

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_RID_HEADER, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_access(scope, status, started, rid)
            request_id_var.reset(token)


class BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Refuse bodies over a limit with 413 — by Content-Length up front, or while streaming."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await reject_too_large(send, limit)
                    return
                break
        seen = 0
        started = False

        async def limited_receive() -> dict[str, Any]:
            nonlocal seen
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await reject_too_large(send, limit)


async def reject_too_large(send: Send, limit: int) -> None:
    """Answer 413 for a body over ``limit`` bytes (the error is answered here, in the ASGI
    layer, before any handler could raise it: the body is never read past the limit)."""
    error = PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
    body = json.dumps(
        {"error": error.message, "code": error.code, "request_id": request_id_var.get()}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
