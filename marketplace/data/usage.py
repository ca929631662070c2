"""Metering and quotas of data reads: one usage event per query or download, unit ``rows``.

The same contract as inference (``marketplace.gateway.pipeline``'s meter step): the event is
durable in the spool before the response leaves; its id is the client's ``Idempotency-Key``
(a retry is served again but billed once, and says ``Idempotent-Replayed: true``), else the
request id, never an id the client chose as its ``X-Request-Id``; a failed read is never
metered. The quantity is the rows returned. Quota limits on ``units`` count those rows, on
``requests`` the calls; a refused read answers 429 and is not metered.

Only the narrow interfaces are used: the ``billing.Meter`` (``seen``, ``record``) and any quota
object with ``check`` and ``add_units`` (the gateway's ``LimitQuota``, shared, so one tenant's
limits cover its models and its datasets alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from billing import Meter, UsageEvent
from marketplace.context import Principal, new_request_id
from marketplace.errors import BadRequestError

__all__ = ["ROWS_UNIT", "DataCall", "RowQuota", "check_idempotency_key", "meter_rows"]

#: The usage unit of data reads.
ROWS_UNIT = "rows"
_MAX_IDEMPOTENCY_KEY = 255


class Target(Protocol):
    """What a read is metered against (a ``DatasetTarget``)."""

    @property
    def product_id(self) -> int: ...

    @property
    def label(self) -> str: ...

    @property
    def version(self) -> int: ...


class RowQuota(Protocol):
    """Quotas and rate limits (``marketplace.gateway.quota.LimitQuota``)."""

    async def check(self, principal: Principal, model: Target) -> None: ...

    async def add_units(self, principal: Principal, model: Target, units: float) -> None: ...


@dataclass(frozen=True, slots=True)
class DataCall:
    """Who reads, and the ids the read's usage event is named by."""

    principal: Principal
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False


def check_idempotency_key(value: str | None) -> None:
    if value is None:
        return
    if not 0 < len(value) <= _MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise BadRequestError(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} printable characters"
        )


def _event_id(call: DataCall) -> str:
    if call.idempotency_key is not None:
        return call.idempotency_key
    # Never an id the client chose: repeating it on distinct reads would bill them once.
    return new_request_id() if call.request_id_chosen else call.request_id


async def meter_rows(
    meter: Meter,
    call: DataCall,
    target: Target,
    rows: int,
    latency_ms: float,
    *,
    others_in_flight: int = 0,
) -> bool:
    """Record one read's usage event; True if its ``Idempotency-Key`` was recorded before
    (then nothing is recorded again)."""
    event_id = _event_id(call)
    principal = call.principal
    if call.idempotency_key is not None and await meter.seen(principal.tenant_id, event_id):
        return True
    await meter.record(
        UsageEvent(
            id=event_id,
            tenant_id=principal.tenant_id,
            key_id=principal.key_id,
            product=target.label,
            product_id=target.product_id,
            version=target.version,
            unit=ROWS_UNIT,
            quantity=float(rows),
            at=datetime.now(UTC),
            latency_ms=latency_ms,
            request_id=call.request_id,
        ),
        others_in_flight=others_in_flight,
    )
    return False
