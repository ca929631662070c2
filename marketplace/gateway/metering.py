"""Step 6 of the request path, and downloads: one usage event per metered act, made durable
through billing's :class:`~billing.Meter` before the response leaves.

The gateway's step 6 (``pipeline.Gateway.infer``) and every download (``gateway.downloads``)
record through :func:`record_usage`, so both bill the same way: the event is named by
:func:`marketplace.gateway.idempotency.usage_event_id`, and a retry with an ``Idempotency-Key``
already recorded for the tenant is billed once. A call whose event cannot be made durable fails
with 503, so nothing is served unbilled; failed calls are never metered. What an inference call
counts is its manifest's metering spec (:func:`usage_quantity`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from billing import Meter, UsageEvent
from marketplace.context import Principal
from marketplace.gateway.idempotency import usage_event_id
from marketplace.gateway.resolve import ResolvedModel

__all__ = ["Recorded", "record_usage", "usage_quantity"]


def usage_quantity(
    model: ResolvedModel, outputs: dict[str, np.ndarray[Any, Any]]
) -> tuple[str, float]:
    """An inference call's billing unit and quantity, as the manifest's metering spec says:
    one call, or the sum of an output (e.g. the audio seconds a speech model transcribed)."""
    assert model.manifest is not None
    spec = model.manifest.metering
    if spec.quantity_output is None:
        return spec.unit, 1.0
    values = outputs.get(spec.quantity_output)
    quantity = float(np.sum(values)) if values is not None else 0.0
    return spec.unit, max(quantity, 0.0)


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
