"""Metered usage as recorded by the gateway: the caller's own, or anyone's for the operator."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlalchemy import Date, cast, func, literal_column, select

from billing.tables import usage_event
from marketplace.api.deps import SessionDep, UnboundSessionDep, require
from marketplace.api.params import DayOrInstant
from marketplace.catalog.service import secret_handles
from marketplace.context import Principal
from marketplace.errors import InvalidInputError
from marketplace.tenants.service import get_tenant_by_slug

router = APIRouter(tags=["usage"])


class UsageRow(BaseModel):
    product: str
    day: date | None
    unit: str
    quantity: Decimal
    events: int


class UsagePublic(BaseModel):
    data: list[UsageRow]
    count: int


def _bound(value: date | datetime | None, *, end: bool) -> datetime | None:
    """A whole day (as an end bound, inclusive) or an instant (naive: UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.combine(value + timedelta(days=1) if end else value, time(), tzinfo=UTC)
    except OverflowError as e:
        raise InvalidInputError(f"no day after {value}") from e


@router.get("/usage", response_model=UsagePublic)
def read_usage(
    session: SessionDep,
    unbound: UnboundSessionDep,
    principal: Annotated[Principal, Depends(require("billing:read"))],
    from_: Annotated[
        DayOrInstant | None, Query(alias="from", description="A day or an RFC 3339 instant")
    ] = None,
    to: Annotated[
        DayOrInstant | None, Query(description="An inclusive day, or an exclusive instant")
    ] = None,
    product: str | None = None,
    group_by: Literal["day", "product"] = "day",
    tenant: Annotated[str | None, Query(description="operator only")] = None,
) -> UsagePublic:
    """Usage totals per product (and day), for the caller's tenant."""
    start, end = _bound(from_, end=False), _bound(to, end=True)
    if start and end and start >= end:
        raise InvalidInputError("'from' must be before 'to'")
    c = usage_event.c
    tenant_id: int | None = principal.tenant_id
    if principal.is_operator:
        tenant_id = get_tenant_by_slug(session, tenant).id if tenant else None
    elif tenant and tenant != principal.tenant_slug:
        return UsagePublic(data=[], count=0)  # another tenant's usage reads as none
    day: Any
    if session.get_bind().dialect.name == "postgresql":
        day = cast(literal_column("usage_event.at AT TIME ZONE 'UTC'"), Date)
    else:
        day = func.date(c.at)
    cols: list[Any] = [c.product, c.unit]
    if group_by == "day":
        cols.insert(1, day.label("day"))
    stmt = select(*cols, func.sum(c.quantity), func.count()).group_by(*cols)
    if tenant_id is not None:
        stmt = stmt.where(c.tenant_id == tenant_id)
    if start:
        stmt = stmt.where(c.at >= start)
    if end:
        stmt = stmt.where(c.at < end)
    if product:
        stmt = stmt.where(c.product == product)
    hidden: set[str] = set()
    if principal.is_operator:
        # The operator reads every tenant's usage, but secret products never leave their tenant,
        # not even by name. Row-level security hides them from this session: look up unbound.
        hidden = set(secret_handles(unbound, except_tenant=principal.tenant_id))
    rows: list[UsageRow] = []
    for row in session.execute(stmt.order_by(*cols)):
        values = list(row)
        if group_by == "day":
            handle, d, unit, qty, n = values
            d = date.fromisoformat(d) if isinstance(d, str) else d
        else:
            handle, unit, qty, n = values
            d = None
        if handle in hidden:
            handle = f"{handle.split('.', 1)[0]}.(secret)"
        rows.append(UsageRow(product=handle, day=d, unit=unit, quantity=Decimal(qty), events=n))
    return UsagePublic(data=rows, count=len(rows))
