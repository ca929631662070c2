"""Usage events as tests and benches make them: valid by default, any field overridden."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from billing.events import UsageEvent

__all__ = ["make_usage_event"]

_counter = itertools.count(1)


def make_usage_event(id: str | None = None, *, prefix: str = "req", **overrides: Any) -> UsageEvent:
    """A valid call of ``traffic-police.flow-smoother`` by tenant 7, now; ``id`` and
    ``request_id`` are numbered (``<prefix>-00000001``, ``rq-00000001``) unless given."""
    n = next(_counter)
    fields: dict[str, Any] = {
        "id": id if id is not None else f"{prefix}-{n:08d}",
        "tenant_id": 7,
        "key_id": "k3y1d",
        "product": "traffic-police.flow-smoother",
        "product_id": 42,
        "version": 3,
        "unit": "call",
        "quantity": 1.0,
        "at": datetime.now(UTC),
        "latency_ms": 12.5,
        "request_id": f"rq-{n:08d}",
    }
    fields.update(overrides)
    return UsageEvent(**fields)
