"""One usage event per metered act — an inference call, a download — made durable through
billing's :class:`~billing.Meter` before the response leaves.

The gateway's step 6 (``pipeline.meter``) and every download (``gateway.downloads``) record
through :func:`record_usage`, so both bill the same way: the event's id is the client's
``Idempotency-Key`` when it sends one (a retry with the same key is billed once), else the
platform's own request id — never an ``X-Request-Id`` the client chose, which it could repeat
on distinct calls to have them billed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from billing import Meter, UsageEvent
from marketplace.context import Principal, new_request_id
from marketplace.errors import BadRequestError

__all__ = ["MAX_IDEMPOTENCY_KEY", "Recorded", "check_idempotency_key", "record_usage"]

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
    """The id of the act's usage event (see the module docstring)."""
    if idempotency_key is not None:
        return idempotency_key
    if request_id_chosen:
        return new_request_id()
    return request_id


@dataclass(frozen=True, slots=True)
class Recorded:
    """What :func:`record_usage` did: the event's id, and whether it was a retry (then nothing
    was recorded again)."""

    event_id: str
    replayed: bool


async def record_usage(
    usage: Meter,
    principal: Principal,
    *,
    product: str,
    product_id: int,
    version: int,
    unit: str,
    quantity: float,
    latency_ms: float,
    idempotency_key: str | None,
    request_id: str,
    request_id_chosen: bool = False,
    others_in_flight: int = 0,
) -> Recorded:
    """Record one usage event durably (fsynced in the spool) before the response goes out.

    ``others_in_flight``: how many other calls are in progress in this process; with any, the
    event's fsync is made off the event loop while they go on, and under load several calls'
    events share it (:meth:`billing.Meter.record`).

    Raises:
        MeteringUnavailableError: The spool cannot be written (503): the act must fail rather
            than go unbilled.
    """
    event_id = usage_event_id(idempotency_key, request_id, request_id_chosen)
    if idempotency_key is not None and await usage.seen(principal.tenant_id, event_id):
        return Recorded(event_id, replayed=True)
    await usage.record(
        UsageEvent(
            id=event_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            product=product,
            product_id=product_id,
            version=version,
            unit=unit,
            quantity=quantity,
            at=datetime.now(UTC),
            latency_ms=latency_ms,
            request_id=request_id,
        ),
        others_in_flight=others_in_flight,
    )
    return Recorded(event_id, replayed=False)
