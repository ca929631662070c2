"""Helpers of the portal's tests (unit, integration and end-to-end): a month of billable
history for the demo city, and signing in to the portal through its own forms."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from billing.periods import Period
from billing.tables import usage_event
from marketplace.billing.service import set_plan
from marketplace.constants import ALL_SCOPES
from marketplace.context import Principal
from marketplace.tables import Product, Tenant
from tests.utils.usage import make_usage_event

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a portal page's forms carry."""
    m = CSRF_RE.search(html)
    assert m, "the page has no form with a CSRF token"
    return m.group(1)


def last_month() -> Period:
    return Period.of(datetime.now(UTC)).prev()


def bill_last_month(
    session: Session, *, consumer: str, handle: str, calls: int, unit_price: str = "0.05"
) -> Period:
    """Give ``handle`` a per-call plan in force since last month, and ``calls`` usage events of
    ``consumer`` spread over last month: what a billing run of last month then invoices."""
    month = last_month()
    owner_slug, name = handle.split(".", 1)
    owner = session.scalars(select(Tenant).where(Tenant.slug == owner_slug)).one()
    product = session.scalars(
        select(Product).where(Product.tenant_id == owner.id, Product.name == name)
    ).one()
    who = Principal(owner.id, owner.slug, owner.kind, frozenset(ALL_SCOPES), actor="test")
    # A first plan applies from the period of ``now``: last month's middle.
    set_plan(
        session,
        who,
        handle,
        {"kind": "per_unit", "unit": "call", "unit_price": unit_price, "currency": "CNY"},
        now=month.start + timedelta(days=14),
    )
    tenant = session.scalars(select(Tenant).where(Tenant.slug == consumer)).one()
    days = month.days()
    events = [
        make_usage_event(
            f"history-{consumer}-{i}",
            tenant_id=tenant.id,
            key_id=None,
            product=handle,
            product_id=product.id,
            version=1,
            at=datetime.combine(days[(i * 7) % len(days)], datetime.min.time(), UTC)
            + timedelta(hours=9, minutes=i % 60),
            request_id=f"history-{i}",
        )
        for i in range(calls)
    ]
    # Received when they happened (as a flusher would have written them then): a billing run
    # leaves usage received within its settle time to the next run.
    rows = [{**e.to_row(), "received_at": e.at} for e in events]
    session.execute(insert(usage_event), rows)
    return month
