"""Which id names a metered act's usage event, and what an ``Idempotency-Key`` may be.

A client that retries a call (or a download) with the same ``Idempotency-Key`` is billed once:
the key names the usage event, and a key already recorded for the tenant marks the act as a
replay (``gateway.metering.record_usage``), answered with ``Idempotent-Replayed: true``.
Without a key the event takes the platform's request id, never an ``X-Request-Id`` the client
chose (it could repeat that on distinct calls to have them billed once).
"""

from __future__ import annotations

from marketplace.context import new_request_id
from marketplace.errors import BadRequestError

__all__ = ["MAX_IDEMPOTENCY_KEY", "check_idempotency_key", "usage_event_id"]

MAX_IDEMPOTENCY_KEY = 255


def check_idempotency_key(value: str | None) -> None:
    """400 unless ``value`` (an ``Idempotency-Key``) is absent or 1-255 printable characters."""
    if value is None:
        return
    if not 0 < len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise BadRequestError(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
        )


def usage_event_id(idempotency_key: str | None, request_id: str, request_id_chosen: bool) -> str:
    """The id of the act's usage event: the client's ``Idempotency-Key``, else the request id
    when the platform made it, else a fresh id of the platform's."""
    if idempotency_key is not None:
        return idempotency_key
    if request_id_chosen:
        return new_request_id()
    return request_id
