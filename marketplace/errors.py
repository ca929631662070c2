"""Domain errors of the service. Each says which HTTP status it maps to; ``api/errors.py``
is the one place that turns them (and model_store's and billing's) into responses."""

from __future__ import annotations

from typing import Any, ClassVar


class CityBrainError(Exception):
    """Root of the service's errors. ``status`` is the HTTP status, ``code`` a stable name."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "InternalError"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class BadRequestError(CityBrainError):
    """400: malformed input (the message names what is wrong)."""

    status = 400
    code = "BadRequest"


class UnauthenticatedError(CityBrainError):
    """401: no credentials, or unknown, expired or revoked ones."""

    status = 401
    code = "Unauthenticated"


class ForbiddenError(CityBrainError):
    """403: authenticated, but the scope, role or tier does not allow this."""

    status = 403
    code = "Forbidden"


class NotFoundError(CityBrainError):
    """404: missing, or not visible to the caller (the two are indistinguishable)."""

    status = 404
    code = "NotFound"


class ConflictError(CityBrainError):
    """409: the resource exists already, or its state does not allow the transition."""

    status = 409
    code = "Conflict"


class PayloadTooLargeError(CityBrainError):
    """413: the body is over the configured limit."""

    status = 413
    code = "PayloadTooLarge"


class InvalidInputError(CityBrainError):
    """422: well-formed but invalid values."""

    status = 422
    code = "ValidationError"


class QuotaExceededError(CityBrainError):
    """429: a quota or rate limit refuses the call (``Retry-After`` says when to retry)."""

    status = 429
    code = "QuotaExceeded"


class UnavailableError(CityBrainError):
    """503: a runtime or dependency is not available right now."""

    status = 503
    code = "Unavailable"
