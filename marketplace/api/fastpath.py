"""The inference hot path as a plain ASGI handler, in front of FastAPI's stack.

``POST /v2/models/{name}[/versions/{version}]/infer`` is the one route called thousands of times
a second. Through FastAPI it would cross seven middleware layers, route matching, dependency
resolution and a ``Request`` object before the gateway saw the body — more than the gateway's
own work for a small model. :class:`PlatformApp` answers it here instead, with what those layers
did for it done inline: the request id (taken or made, echoed), the request's trace span
(``marketplace.api.tracing``), the body limit (declared and
streamed), the error body and status (the same handlers as every other route, audit of denials
included), and the access-log line. Every other request is FastAPI's; the infer routes' OpenAPI
entries are added to FastAPI's document by :meth:`PlatformApp.openapi`
(``marketplace.api.routes.v2_openapi``), as no FastAPI handler exists for them.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from marketplace.api.contract import document_errors
from marketplace.api.errors import (
    DATABASE_OUTAGES,
    SERVICE_ERRORS,
    database_error,
    error_response,
    service_error,
    unexpected_error,
)
from marketplace.api.middleware import (
    REQUEST_ID_HEADER_BYTES,
    client_request_id,
    log_access,
    reject_too_large,
)
from marketplace.api.routes.v2_openapi import document_infer_routes
from marketplace.api.tracing import end_request, request_span
from marketplace.auth.authenticate import presented_credential
from marketplace.constants import API_KEY_HEADER, IDEMPOTENCY_KEY_HEADER
from marketplace.constants import Scope as ScopeName
from marketplace.context import Principal, new_request_id, request_id_var
from marketplace.errors import UnavailableError
from marketplace.federation.forward import Forwarder, accept_forwarded, audit_forwarded
from marketplace.federation.signing import CALLER_HEADER
from marketplace.gateway.constants import INFERENCE_HEADER_CONTENT_LENGTH
from marketplace.gateway.pipeline import Gateway, InferCall

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
# The route templates the request spans are named for (by whether a version is in the path).
_INFER_ROUTES = ("/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")

_AUTHORIZATION = b"authorization"
_API_KEY = API_KEY_HEADER.lower().encode()
_HEADER_LENGTH = INFERENCE_HEADER_CONTENT_LENGTH.lower().encode()
_IDEMPOTENCY_KEY = IDEMPOTENCY_KEY_HEADER.lower().encode()
_CONTENT_LENGTH = b"content-length"
# A district hub's signed caller headers (``marketplace.federation.signing``), lower-cased.
_CALLER_PREFIX = CALLER_HEADER.lower().encode()


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer."""


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            seen += len(chunk)
            if seen > limit:
                return None
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class PlatformApp(FastAPI):
    """The platform's FastAPI app, with the inference route answered by :meth:`_infer`."""

    infer_limit_bytes: int = 64 * 1024 * 1024
    """The largest inference body (``gateway.max_infer_bytes``; 413 above it)."""

    def openapi(self) -> dict[str, Any]:
        """FastAPI's document plus the infer routes, which have no FastAPI handler."""
        if self.openapi_schema is None:
            document = super().openapi()
            document_infer_routes(document)
            document_errors(document)
        return super().openapi()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            match = INFER_PATH.match(scope["path"])
            if match is not None:
                await self._infer(scope, receive, send, match.group(1), match.group(2))
                return
        await super().__call__(scope, receive, send)

    async def _infer(
        self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None
    ) -> None:
        started = time.perf_counter()
        chosen = client_request_id(scope)
        rid = chosen or new_request_id()
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k == REQUEST_ID_HEADER_BYTES for k, _ in headers):
                    headers.append((REQUEST_ID_HEADER_BYTES, rid.encode()))
                message["headers"] = headers
            await send(message)

        method = scope["method"]
        with request_span(method, rid) as span:
            try:
                if method == "POST":
                    await self._answer(
                        scope, receive, send_with_id, name, version, rid, chosen is not None, state
                    )
                else:  # what routing would say of a POST-only route
                    response = error_response(
                        405, "MethodNotAllowed", f"{method} is not allowed here", {"Allow": "POST"}
                    )
                    await response(scope, receive, send_with_id)
            except _ClientGone:
                status = 499  # logged as nginx does; nothing is sent
            finally:
                end_request(span, method, _INFER_ROUTES[version is not None], status)
                log_access(scope, status, started, rid)
                request_id_var.reset(token)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        name: str,
        version: str | None,
        rid: str,
        rid_chosen: bool,
        state: dict[str, Any],
    ) -> None:
        authorization = api_key = header_length = idempotency_key = None
        declared = -1
        federated = False
        for key, value in scope["headers"]:
            if key.startswith(_CALLER_PREFIX):
                federated = True
            if key == _AUTHORIZATION:
                authorization = value.decode("latin-1")
            elif key == _API_KEY:
                api_key = value.decode("latin-1")
            elif key == _HEADER_LENGTH:
                header_length = value.decode("latin-1")
            elif key == _IDEMPOTENCY_KEY:
                idempotency_key = value.decode("latin-1")
            elif key == _CONTENT_LENGTH:
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
        limit = self.infer_limit_bytes
        if declared > limit:
            await reject_too_large(send, limit)
            return
        try:
            body = await _read_body(receive, limit)
            if body is None:
                await reject_too_large(send, limit)
                return
            gateway: Gateway | None = getattr(self.state, "gateway", None)
            if gateway is None:
                raise UnavailableError("the inference gateway is starting")
            credential = presented_credential(authorization, api_key)
            forwarder: Forwarder | None = getattr(self.state, "forwarder", None)
            if forwarder is not None and await forwarder.is_mirror(name):
                await self._forward(scope, send, forwarder, credential, name, version, body)
                return
            principal = None
            if federated:
                principal = await self._federated_principal(scope, credential)
            call = InferCall(
                name=name,
                version=version,
                credential=credential,
                body=body,
                header_length=header_length,
                idempotency_key=idempotency_key,
                request_id=rid,
                request_id_chosen=rid_chosen,
                principal=principal,
            )
            reply = await gateway.infer(call)
        except _ClientGone:
            raise
        except Exception as exc:
            await self._error(scope, receive, send, exc)
            return
        state["principal"] = reply.principal
        headers = [(b"content-length", str(len(reply.body)).encode())]
        headers.extend((k.lower().encode(), v.encode("latin-1")) for k, v in reply.headers.items())
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        forwarder: Forwarder,
        credential: str | None,
        name: str,
        version: str | None,
        body: bytes,
    ) -> None:
        """A district hub's mirror of a city model: the city answers, through the hub
        (``marketplace.federation.forward``)."""
        caller = await self.state.authenticator.authenticate(credential)
        scope.setdefault("state", {})["principal"] = caller
        template = f"/v2/models/{{handle}}{f'/versions/{version}' if version else ''}/infer"
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        reply = await forwarder.forward(
            caller,
            name,
            scope=ScopeName.INFER.value,
            method="POST",
            path_template=template,
            body=body,
            headers=headers,
        )
        out = [(b"content-length", str(len(reply.body)).encode())]
        out.extend((k.lower().encode(), v.encode("latin-1")) for k, v in reply.headers.items())
        await send({"type": "http.response.start", "status": reply.status, "headers": out})
        await send({"type": "http.response.body", "body": reply.body})

    async def _federated_principal(self, scope: Scope, credential: str | None) -> Principal:
        """City side: the hub's principal naming the original caller it signed for."""
        caller = await self.state.authenticator.authenticate(credential)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        principal = accept_forwarded(
            caller,
            credential,
            headers,
            scope["method"],
            scope["path"],
            guard=self.state.federation_guard,
            max_skew_s=self.state.settings.federation.max_skew_s,
        )
        assert principal is not None
        await asyncio.to_thread(
            audit_forwarded, self.state.session_factory, principal, "POST", scope["path"]
        )
        return principal

    async def _error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """The same error response (and audit of a denial) as any other route would give."""
        scope["app"] = self
        request = Request(scope, receive)
        if isinstance(exc, SERVICE_ERRORS):
            response = await service_error(request, exc)
        elif isinstance(exc, DATABASE_OUTAGES):
            response = database_error(request, exc)
        else:
            response = unexpected_error(request, exc)
        await response(scope, receive, send)
