"""Rating: turn a period's usage into priced lines per consumer tenant.

The heavy lifting is two SQL aggregates over ``usage_event`` (``SUM(quantity)`` grouped by
tenant, product and unit), so rating 10 million events moves a few hundred rows into Python,
never the events themselves.

Which events a run rates (period P, cut-off ``cutoff``, previous run's cut-off ``prev``):

* **on time**: ``at`` in P and ``received_at <= cutoff``;
* **late**: ``at`` before P and ``prev < received_at <= cutoff`` — usage of an already closed
  period that arrived after its close. It is rated with the plan in force in the period it
  happened in, on top of what that period already billed (so graduated tiers and included
  units carry on where they stopped), and itemised as late usage.

Periods close in order, so each event falls in exactly one run. A tenant's use of its own
products is never billed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from billing.catalog import BillingCatalog, ProductInfo
from billing.money import commission_split, round_line
from billing.periods import Period
from billing.plan_store import PlanVersion, active_subscriptions, plans_in_force
from billing.plans import Charge
from billing.tables import billing_document, document_line, usage_event

__all__ = ["RatedLine", "UsageAggregate", "day_of", "month_of", "rate_period", "usage_by_day"]


@dataclass(frozen=True, slots=True)
class RatedLine:
    """One priced line of a consumer tenant's document, rounded (see :mod:`billing.money`)."""

    tenant_id: int
    kind: str  # usage | fee
    product_id: int
    product: str
    publisher_tenant_id: int
    domain: str
    unit: str
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    commission: Decimal
    publisher_share: Decimal
    usage_period: str
    late: bool
    plan_version: int
    currency: str


@dataclass(frozen=True, slots=True)
class UsageAggregate:
    """The summed usage of one tenant, product and unit in one period."""

    tenant_id: int
    product_id: int
    unit: str
    period: str
    quantity: Decimal
    events: int


def month_of(conn: Connection, col: Any) -> ColumnElement[str]:
    """``YYYY-MM`` of a UTC timestamp column, in the connection's SQL dialect."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", col), "YYYY-MM")
    return func.substr(col, 1, 7)


def day_of(conn: Connection, col: Any) -> ColumnElement[str]:
    """``YYYY-MM-DD`` of a UTC timestamp column, in the connection's SQL dialect."""
    if conn.dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", col), "YYYY-MM-DD")
    return func.substr(col, 1, 10)


def _aggregate(
    conn: Connection, period: Period, *, cutoff: datetime, prev_cutoff: datetime | None
) -> tuple[list[UsageAggregate], list[UsageAggregate]]:
    ue = usage_event.c
    qty = func.sum(ue.quantity).label("quantity")
    n = func.count().label("events")
    on_time = conn.execute(
        select(ue.tenant_id, ue.product_id, ue.unit, qty, n)
        .where(ue.at >= period.start, ue.at < period.end, ue.received_at <= cutoff)
        .group_by(ue.tenant_id, ue.product_id, ue.unit)
    )
    current = [
        UsageAggregate(
            r.tenant_id, r.product_id, r.unit, str(period), Decimal(r.quantity), r.events
        )
        for r in on_time
    ]
    month = month_of(conn, ue.at).label("month")
    late_where = [ue.at < period.start, ue.received_at <= cutoff]
    if prev_cutoff is not None:
        late_where.append(ue.received_at > prev_cutoff)
    late_rows = conn.execute(
        select(ue.tenant_id, ue.product_id, ue.unit, month, qty, n)
        .where(and_(*late_where))
        .group_by(ue.tenant_id, ue.product_id, ue.unit, month)
    )
    late = [
        UsageAggregate(r.tenant_id, r.product_id, r.unit, r.month, Decimal(r.quantity), r.events)
        for r in late_rows
    ]
    return current, late


def _already_billed(
    conn: Connection, keys: set[tuple[int, int, str, str]]
) -> dict[tuple[int, int, str, str], Decimal]:
    """(tenant, product, unit, usage period) → plan units already on documents."""
    if not keys:
        return {}
    periods = {k[3] for k in keys}
    dl, bd = document_line.c, billing_document.c
    rows = conn.execute(
        select(bd.tenant_id, dl.product_id, dl.unit, dl.usage_period, func.sum(dl.quantity))
        .select_from(document_line.join(billing_document))
        .where(dl.kind == "usage", dl.usage_period.in_(periods))
        .group_by(bd.tenant_id, dl.product_id, dl.unit, dl.usage_period)
    )
    return {(r[0], r[1], r[2], r[3]): Decimal(r[4]) for r in rows}


def _line(
    tenant_id: int,
    product: ProductInfo,
    version: PlanVersion,
    charge: Charge,
    *,
    usage_period: str,
    late: bool,
    commission_rate: Decimal,
) -> RatedLine:
    amount = round_line(charge.amount)
    commission, share = commission_split(amount, commission_rate)
    description = charge.description + (f" (late usage of {usage_period})" if late else "")
    return RatedLine(
        tenant_id=tenant_id,
        kind=charge.kind,
        product_id=product.id,
        product=product.handle,
        publisher_tenant_id=product.owner_tenant_id,
        domain=product.domain,
        unit=version.plan.unit,
        description=description,
        quantity=charge.quantity,
        unit_price=charge.unit_price,
        amount=amount,
        commission=commission,
        publisher_share=share,
        usage_period=usage_period,
        late=late,
        plan_version=version.version,
        currency=version.plan.currency,
    )


def rate_period(
    conn: Connection,
    period: Period,
    catalog: BillingCatalog,
    *,
    cutoff: datetime,
    prev_cutoff: datetime | None,
    commission_rate: Decimal,
) -> list[RatedLine]:
    """Rate ``period``'s on-time and late usage and its subscription fees.

    Args:
        conn: A connection inside the run's transaction.
        period: The period being closed.
        catalog: Tenants and products (what usage refers to by id).
        cutoff: Usage received after this belongs to a later run.
        prev_cutoff: The previous run's cut-off (None on the first run ever: all older usage
            not yet billed is rated as late).
        commission_rate: The operator's commission, e.g. ``Decimal("0.10")``.

    Returns:
        The lines, ordered by tenant, then on-time before late, then product.
    """
    current, late = _aggregate(conn, period, cutoff=cutoff, prev_cutoff=prev_cutoff)
    plans: dict[str, dict[int, PlanVersion]] = {str(period): plans_in_force(conn, period)}
    subscribed: dict[str, set[tuple[int, int]]] = {str(period): active_subscriptions(conn, period)}
    for agg in late:
        if agg.period not in plans:
            past = Period.parse(agg.period)
            plans[agg.period] = plans_in_force(conn, past)
            subscribed[agg.period] = active_subscriptions(conn, past)

    def pricing(agg: UsageAggregate) -> tuple[ProductInfo, PlanVersion] | None:
        product = catalog.products.get(agg.product_id)
        version = plans[agg.period].get(agg.product_id)
        if product is None or version is None or agg.tenant_id == product.owner_tenant_id:
            return None
        if agg.unit != version.plan.usage_unit:
            return None
        if (
            version.plan.kind == "subscription"
            and (agg.tenant_id, agg.product_id) not in subscribed[agg.period]
        ):
            # Without a subscription there is no fee and no included units: all is overage.
            plan = dataclasses.replace(version.plan, included_units=Decimal(0))
            version = dataclasses.replace(version, plan=plan)
        return product, version

    lines: list[RatedLine] = []
    for tenant_id, product_id in sorted(subscribed[str(period)]):
        product = catalog.products.get(product_id)
        version = plans[str(period)].get(product_id)
        if product is None or version is None or tenant_id == product.owner_tenant_id:
            continue
        fee = version.plan.fee()
        if fee is not None:
            lines.append(
                _line(
                    tenant_id,
                    product,
                    version,
                    fee,
                    usage_period=str(period),
                    late=False,
                    commission_rate=commission_rate,
                )
            )

    def add_usage(
        agg: UsageAggregate,
        product: ProductInfo,
        version: PlanVersion,
        *,
        prior: Decimal,
        late: bool,
    ) -> None:
        units = version.plan.to_plan_units(agg.quantity)
        for charge in version.plan.usage_charges(units, prior=prior):
            lines.append(
                _line(
                    agg.tenant_id,
                    product,
                    version,
                    charge,
                    usage_period=agg.period,
                    late=late,
                    commission_rate=commission_rate,
                )
            )

    for agg in current:
        priced = pricing(agg)
        if priced is not None:
            add_usage(agg, *priced, prior=Decimal(0), late=False)
    priced_late = [(agg, p) for agg in late if (p := pricing(agg)) is not None]
    billed = _already_billed(
        conn, {(a.tenant_id, a.product_id, v.plan.unit, a.period) for a, (_, v) in priced_late}
    )
    for agg, (product, version) in priced_late:
        prior = billed.get((agg.tenant_id, agg.product_id, version.plan.unit, agg.period))
        add_usage(agg, product, version, prior=prior or Decimal(0), late=True)
    lines.sort(key=lambda x: (x.tenant_id, x.late, x.usage_period, x.product, x.kind != "fee"))
    return lines


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """Usage of one tenant, product and unit on one day."""

    tenant_id: int
    day: str
    product_id: int
    product: str
    unit: str
    events: int
    quantity: Decimal


def usage_by_day(
    conn: Connection, period: Period, *, tenant_id: int | None = None
) -> list[DailyUsage]:
    """Usage summed by tenant, day, product and unit (one SQL aggregate); ``tenant_id`` None:
    every tenant's."""
    ue = usage_event.c
    day = day_of(conn, ue.at).label("day")
    stmt = (
        select(
            ue.tenant_id,
            day,
            ue.product_id,
            ue.product,
            ue.unit,
            func.count().label("events"),
            func.sum(ue.quantity).label("quantity"),
        )
        .where(ue.at >= period.start, ue.at < period.end)
        .group_by(ue.tenant_id, day, ue.product_id, ue.product, ue.unit)
        .order_by(day, ue.tenant_id, ue.product, ue.unit)
    )
    if tenant_id is not None:
        stmt = stmt.where(ue.tenant_id == tenant_id)
    return [
        DailyUsage(
            r.tenant_id, r.day, r.product_id, r.product, r.unit, r.events, Decimal(r.quantity)
        )
        for r in conn.execute(stmt)
    ]
