"""Errors raised by the billing package.

Each error names the HTTP status and a stable code; the service (``marketplace``) turns them into
responses. ``billing`` itself never imports an HTTP framework.
"""

from __future__ import annotations

from typing import ClassVar


class BillingError(Exception):
    """Root of billing's errors.

    Attributes:
        status: The HTTP status the service should answer with.
        code: A stable, machine-readable error name.
        message: A human-readable explanation.
        headers: Extra response headers (for example ``Retry-After``).
    """

    status: ClassVar[int] = 500
    code: ClassVar[str] = "BillingError"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        """Create the error.

        Args:
            message: A human-readable explanation.
            headers: Extra response headers to send with the error response.
        """
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class InvalidUsageEventError(BillingError, ValueError):
    """400: a usage event cannot be recorded as given (for example an over-long idempotency key)."""

    status = 400
    code = "InvalidUsageEvent"


class MeteringUnavailableError(BillingError):
    """503: the usage spool cannot be written (full disk, unwritable directory, closed spool).

    The gateway must fail the call rather than serve it unbilled. The response carries
    ``Retry-After``; the spool keeps trying on later appends.
    """

    status = 503
    code = "MeteringUnavailable"

    def __init__(
        self,
        message: str = "usage metering is unavailable",
        *,
        retry_after_s: int = 5,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Create the error.

        Args:
            message: A human-readable explanation (names the underlying OS error if any).
            retry_after_s: Seconds the client should wait before retrying.
            headers: Extra response headers; ``Retry-After`` is added unless present.
        """
        merged = {"Retry-After": str(retry_after_s)}
        merged.update(headers or {})
        super().__init__(message, headers=merged)
        self.retry_after_s = retry_after_s


class SpoolLockedError(MeteringUnavailableError):
    """Another live process holds the spool directory's lock.

    Each process (each server worker) needs its own spool directory.
    """

    code = "MeteringUnavailable"


class InvalidPlanError(BillingError, ValueError):
    """422: a price plan (or an amount in it) is invalid; the message says which field."""

    status = 422
    code = "ValidationError"


class BillingNotFoundError(BillingError):
    """404: no such document or subscription for this caller (the same as a missing one)."""

    status = 404
    code = "NotFound"


class BillingConflictError(BillingError):
    """409: the period or document is in a state that does not allow this (e.g. paying a void
    invoice, closing a period before the previous one)."""

    status = 409
    code = "Conflict"


class SubscriptionRefusedError(BillingError):
    """403: the tenant may not subscribe to this product (a non-public product needs a grant)."""

    status = 403
    code = "Forbidden"
