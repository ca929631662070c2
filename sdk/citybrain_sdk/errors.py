"""The SDK's exceptions, mirroring the platform's stable error codes, and the one function that
maps a response to them (:func:`raise_for_status`).

The server answers every error as ``{"error": "<message>", "code": "<StableCode>",
"request_id": "<id>"}``. Each class below names the ``code`` values and the HTTP ``status`` it
stands for; a class registers itself when it is defined, so a code the SDK knows maps to its
exact class, an unknown code to the class of its status, and anything else to :class:`APIError`.
Quote ``request_id`` when reporting a problem: the platform's logs and audit trail carry it.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, ClassVar

import httpx

__all__ = [
    "APIError",
    "BadRequest",
    "CityBrainError",
    "Conflict",
    "ConnectionFailed",
    "DigestMismatch",
    "Forbidden",
    "InternalError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "Unauthenticated",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "raise_for_status",
]

_BY_CODE: dict[str, type[APIError]] = {}
_BY_STATUS: dict[int, type[APIError]] = {}


class CityBrainError(Exception):
    """Root of every exception the SDK raises.

    Example:
        >>> try:
        ...     cb.catalog.get("traffic-police.intersection-flow")
        ... except CityBrainError as e:
        ...     print("the platform said no:", e)
    """


class APIError(CityBrainError):
    """The platform answered with an error status.

    Attributes:
        status: The HTTP status.
        code: The platform's stable error code (``"NotFound"``, ``"QuotaExceeded"`` …).
        server_message: The human-readable message the server sent.
        request_id: The request id (``X-Request-Id``) to quote when reporting it.
        headers: The response headers.

    Example:
        >>> try:
        ...     cb.catalog.get("traffic-police.no-such-product")
        ... except APIError as e:
        ...     print(e.status, e.code, e.request_id)
        404 NotFound 4f0c…
    """

    status: int = 0
    codes: ClassVar[tuple[str, ...]] = ()
    statuses: ClassVar[tuple[int, ...]] = ()

    def __init_subclass__(
        cls, codes: tuple[str, ...] = (), statuses: tuple[int, ...] = (), **kwargs: Any
    ) -> None:
        """Register the subclass for the platform's ``codes`` and the HTTP ``statuses`` it
        stands for (``class NotFound(APIError, codes=("NotFound",), statuses=(404,))``)."""
        super().__init_subclass__(**kwargs)
        if codes:
            cls.codes = codes
        if statuses:
            cls.statuses = statuses
        for code in codes:
            _BY_CODE[code] = cls
        for status in statuses:
            _BY_STATUS.setdefault(status, cls)

    def __init__(
        self,
        server_message: str,
        *,
        status: int,
        code: str,
        request_id: str | None,
        headers: httpx.Headers | None = None,
    ) -> None:
        self.server_message = server_message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.headers = headers if headers is not None else httpx.Headers()
        super().__init__(self._describe())

    def _describe(self) -> str:
        rid = f", request {self.request_id}" if self.request_id else ""
        return f"{self.server_message} ({self.status} {self.code}{rid})"


class BadRequest(APIError, codes=("BadRequest", "InvalidUsageEvent"), statuses=(400,)):
    """400: the request is malformed (the message names what is wrong)."""


class Unauthorized(APIError, codes=("Unauthenticated",), statuses=(401,)):
    """401: no credentials, or an unknown, expired or revoked key or token."""


Unauthenticated = Unauthorized
"""The server's own name for :class:`Unauthorized` (code ``Unauthenticated``)."""


class Forbidden(APIError, codes=("Forbidden",), statuses=(403,)):
    """403: authenticated, but the key's scope, the tenant's role or the tier does not allow it
    (for a restricted or confidential product: no access grant yet)."""


class NotFound(APIError, codes=("NotFound",), statuses=(404,)):
    """404: missing, or not visible to the caller: the platform answers both alike."""


class MethodNotAllowed(APIError, codes=("MethodNotAllowed",), statuses=(405,)):
    """405: the route exists but not with this method."""


class Conflict(APIError, codes=("Conflict",), statuses=(409,)):
    """409: the resource exists already, or its state does not allow the change."""


class PayloadTooLarge(APIError, codes=("PayloadTooLarge",), statuses=(413,)):
    """413: the body (a request, an upload, a tensor) is over the platform's limit."""


class UnsupportedMediaType(APIError, codes=("UnsupportedMediaType",), statuses=(415,)):
    """415: the body's content type is not one the route reads."""


class ValidationError(APIError, codes=("ValidationError", "InvalidArtifact"), statuses=(422,)):
    """422: well-formed but invalid values (an invalid manifest or artifact included)."""


class QuotaExceeded(APIError, codes=("QuotaExceeded",), statuses=(429,)):
    """429: a quota or rate limit refused the call; it was not billed.

    Attributes:
        retry_after: Seconds the server asked to wait (``Retry-After``), or None.
    """

    def __init__(
        self,
        server_message: str,
        *,
        status: int,
        code: str,
        request_id: str | None,
        headers: httpx.Headers | None = None,
    ) -> None:
        self.retry_after = retry_after_seconds(headers)
        super().__init__(
            server_message, status=status, code=code, request_id=request_id, headers=headers
        )


class InternalError(
    APIError, codes=("InternalError", "InferenceFailed", "BillingError"), statuses=(500,)
):
    """500: the platform failed; quote ``request_id`` when reporting it."""


class Unavailable(
    APIError,
    codes=("Unavailable", "ModelUnavailable", "QueueFull", "MeteringUnavailable"),
    statuses=(503, 502, 504),
):
    """503: a model runtime, the metering spool or another dependency is unavailable right now
    (the call was not billed); retrying later is safe."""


class ConnectionFailed(CityBrainError):
    """The platform could not be reached, or the connection broke, after the retries allowed.

    Attributes:
        url: The URL of the request that failed.
    """

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        super().__init__(message)


class DigestMismatch(CityBrainError):
    """A download's bytes do not hash to the digest the server announced (nothing is kept)."""


def retry_after_seconds(headers: httpx.Headers | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None when absent or bad.

    Args:
        headers: Response headers.

    Returns:
        The non-negative number of seconds to wait, or None.

    Example:
        >>> retry_after_seconds(httpx.Headers({"Retry-After": "2"}))
        2.0
    """
    if headers is None:
        return None
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content) if response.content else {}
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def error_for(response: httpx.Response) -> APIError:
    """The typed exception for an error response (the body must have been read).

    Args:
        response: A response with a status of 400 or more.

    Returns:
        An instance of the class registered for the body's ``code``, else for the status,
        else :class:`APIError`.

    Example:
        >>> raise error_for(response)
    """
    body = _error_body(response)
    code = body.get("code")
    message = body.get("error") or body.get("detail") or response.reason_phrase or "error"
    request_id = body.get("request_id") or response.headers.get("x-request-id")
    status = response.status_code
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(status) or (InternalError if status >= 500 else APIError)
    return cls(
        str(message),
        status=status,
        code=code if isinstance(code, str) else cls.codes[0] if cls.codes else str(status),
        request_id=str(request_id) if request_id else None,
        headers=response.headers,
    )


def raise_for_status(response: httpx.Response) -> None:
    """Raise the typed exception for an error response; do nothing for a success.

    Every call of :class:`~citybrain_sdk.Client` and :class:`~citybrain_sdk.AsyncClient` goes
    through here. A streamed response must have been read first (``response.read()``).

    Args:
        response: The response to check.

    Raises:
        APIError: A subclass chosen by the platform's stable ``code`` (or the status).

    Example:
        >>> r = httpx.get("http://127.0.0.1:8000/api/v1/products/x.y")
        >>> raise_for_status(r)
        Traceback (most recent call last):
        citybrain_sdk.errors.NotFound: product 'x.y' not found (404 NotFound, request …)
    """
    if response.status_code < 400:
        return
    raise error_for(response)
