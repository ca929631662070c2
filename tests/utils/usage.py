"""Usage events as tests and benches make them: valid by default, any field overridden; usage
rows written straight to the table for tests of what reads them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from billing.events import UsageEvent
from billing.tables import usage_event
from marketplace.db import transaction
from marketplace.tenants.service import get_tenant_by_slug

__all__ = ["insert_usage_rows", "make_usage_event"]

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


def insert_usage_rows(
    session_factory: sessionmaker[Session], slug: str, rows: Iterable[Mapping[str, Any]]
) -> None:
    """Write usage rows of tenant ``slug`` straight into ``usage_event`` (what the spool's
    ingest writes), each row naming only the fields its test cares about: the rest are a
    call of product id 0, version 1, quantity 1, now, with numbered ids."""
    with transaction(session_factory) as session:
        tenant_id = get_tenant_by_slug(session, slug).id
        filled = []
        for row in rows:
            n = next(_counter)
            filled.append(
                {
                    "id": f"row-{n:08d}",
                    "tenant_id": tenant_id,
                    "key_id": None,
                    "product_id": 0,
                    "version": 1,
                    "unit": "call",
                    "quantity": 1,
                    "at": datetime.now(UTC),
                    "latency_ms": 1.0,
                    "request_id": f"rq-{n:08d}",
                    **row,
                }
            )
        session.execute(insert(usage_event), filled)
