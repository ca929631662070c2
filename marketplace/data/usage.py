"""Metering and quotas of data reads: one usage event per query or download, unit ``rows``.

The same contract as inference (``marketplace.gateway.pipeline``'s meter step): the event is
durable in the spool before the response leaves; its id is the client's ``Idempotency-Key``
(a retry is served again but billed once, and says ``Idempotent-Replayed: true``), else the
request id, never an id the client chose as its ``X-Request-Id``; a failed read is never
metered. The quantity is the rows returned. Quota limits on ``units`` count those rows, on
``requests`` the calls; a refused read answers 429 and is not metered.

Events are recorded through ``marketplace.gateway.metering.record_usage``, as inference calls
and artifact downloads are; quotas through any object with ``check`` and ``add_units`` (the
gateway's ``LimitQuota``, shared, so one tenant's limits cover its models and datasets alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from billing import Meter
from marketplace.context import Caller, Principal
from marketplace.gateway.idempotency import check_idempotency_key
from marketplace.gateway.metering import Recorded, record_usage

__all__ = ["ROWS_UNIT", "DataCall", "RowQuota", "check_idempotency_key", "meter_rows"]

#: The usage unit of data reads.
ROWS_UNIT = "rows"


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
    """Who reads (None: anonymous, refused before anything is read), and the ids the read's
    usage event is named by."""

    principal: Caller
    idempotency_key: str | None
    request_id: str
    request_id_chosen: bool = False


async def meter_rows(
    meter: Meter,
    principal: Principal,
    call: DataCall,
    target: Target,
    rows: int,
    latency_ms: float,
    *,
    others_in_flight: int = 0,
) -> Recorded:
    """Record one read's usage event (``replayed`` if its ``Idempotency-Key`` was recorded
    before: then nothing is recorded again)."""
    return await record_usage(
        meter,
        principal,
        product=target.label,
        product_id=target.product_id,
        version=target.version,
        unit=ROWS_UNIT,
        quantity=float(rows),
        latency_ms=latency_ms,
        idempotency_key=call.idempotency_key,
        request_id=call.request_id,
        request_id_chosen=call.request_id_chosen,
        others_in_flight=others_in_flight,
    )
