"""The billing run: rating usage into invoices and statements, idempotency, late usage,
plan versions, subscriptions and the invoice lifecycle (SQLite; PostgreSQL in integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from sqlalchemy import Engine, func, select

from billing.errors import BillingConflictError, BillingNotFoundError, SubscriptionRefusedError
from billing.invoices import (
    RunConfig,
    close_period,
    get_document,
    issue_document,
    list_documents,
    mark_paid,
    void_document,
)
from billing.periods import Period
from billing.plan_store import (
    active_subscriptions,
    cancel_subscription,
    plan_in_force,
    set_plan,
    subscribe,
)
from billing.plans import PricePlan
from billing.rating import usage_by_day
from billing.tables import billing_document, document_line
from tests.unit.billing.billing_city import (
    AIR,
    ASR,
    CATALOG,
    FLOW,
    OPERATOR,
    PARKEASY,
    PARKING,
    POLICE,
    ROADAI,
    TILES,
    XIHU,
    add_usage,
    month,
    set_all_plans,
)


@pytest.fixture
def engine(rating_engine: Engine) -> Engine:
    """Billing's usage and rating tables, on SQLite and on PostgreSQL (see conftest.py)."""
    return rating_engine


OCT, NOV, DEC = Period.parse("2026-10"), Period.parse("2026-11"), Period.parse("2026-12")
CLOSE_OCT = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # cut-off 00:55 (5 min settle)
CLOSE_NOV = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)


def _never(tenant_id: int, product: object) -> bool:
    return False


def _october(engine: Engine) -> None:
    with engine.begin() as conn:
        set_all_plans(conn)
        subscribe(
            conn,
            tenant_id=ROADAI,
            product=CATALOG.products[PARKING],
            acting_tenant_id=ROADAI,
            grant_check=_never,
            now=month("2026-10", 5),
        )
        add_usage(conn, tenant=PARKEASY, product=FLOW, at=month("2026-10"), events=250)
        add_usage(
            conn,
            tenant=PARKEASY,
            product=ASR,
            at=month("2026-10"),
            quantity=1001,
            unit="audio-second",
        )
        add_usage(conn, tenant=PARKEASY, product=PARKING, at=month("2026-10"), events=30)  # own
        add_usage(
            conn, tenant=ROADAI, product=AIR, at=month("2026-10", 2), quantity=1500, unit="row"
        )
        add_usage(
            conn, tenant=ROADAI, product=TILES, at=month("2026-10"), quantity=3_000_000, unit="byte"
        )
        add_usage(
            conn, tenant=ROADAI, product=TILES, at=month("2026-10"), quantity=5, unit="call"
        )  # unpriced unit
        add_usage(conn, tenant=ROADAI, product=PARKING, at=month("2026-10"), quantity=1200)
        add_usage(conn, tenant=XIHU, product=FLOW, at=month("2026-10", 20), quantity=1000)
        add_usage(conn, tenant=XIHU, product=AIR, at=month("2026-10", 20), quantity=200, unit="row")
        add_usage(conn, tenant=POLICE, product=FLOW, at=month("2026-10"), quantity=500)  # own
        add_usage(conn, tenant=POLICE, product=AIR, at=month("2026-10"), quantity=100, unit="row")
        # Received just after the cut-off: it belongs to the next run, as late usage.
        add_usage(
            conn,
            tenant=PARKEASY,
            product=FLOW,
            at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC),
            quantity=7,
            received_at=datetime(2026, 11, 1, 0, 58, tzinfo=UTC),
        )


def _run(engine: Engine, period: Period, now: datetime, **cfg: object):  # type: ignore[no-untyped-def]
    with engine.begin() as conn:
        return close_period(conn, period, CATALOG, now=now, config=RunConfig(**cfg))  # type: ignore[arg-type]


def _by_tenant(result) -> dict[int, object]:  # type: ignore[no-untyped-def]
    return {d.tenant_id: d for d in result.documents}


def test_a_run_invoices_developers_and_sends_statements_to_government(engine: Engine) -> None:
    _october(engine)
    result = _run(engine, OCT, CLOSE_OCT)
    docs = _by_tenant(result)
    assert result.created and set(docs) == {PARKEASY, ROADAI, XIHU, POLICE}
    parkeasy, roadai, xihu, police = docs[PARKEASY], docs[ROADAI], docs[XIHU], docs[POLICE]
    assert (parkeasy.kind, parkeasy.status, parkeasy.number) == (
        "invoice",
        "issued",
        "INV-2026-10-000004",
    )
    # 250 calls x 0.01 = 2.50; 1001 audio-seconds x 0.0025 = 2.5025 -> 2.50 (rounded once).
    assert [(x.product, x.amount) for x in parkeasy.lines] == [
        ("traffic-police.asr", D("2.50")),
        ("traffic-police.flow", D("2.50")),
    ]
    assert parkeasy.total == D("5.00") and parkeasy.currency == "CNY"
    # Subscription: fee 100 + 1000 included + 200 x 0.05; graduated rows 1000 x 0.002 + 500 x
    # 0.001; 3,000,000 bytes = 3 MB x 0.5. Calls on the MB-priced product are not charged.
    assert [(x.kind, x.product, x.quantity, x.amount) for x in roadai.lines] == [
        ("usage", "data-bureau.air", D(1000), D("2.00")),
        ("usage", "data-bureau.air", D(500), D("0.50")),
        ("fee", "parkeasy.parking", D(1), D("100.00")),
        ("usage", "parkeasy.parking", D(1000), D("0.00")),
        ("usage", "parkeasy.parking", D(200), D("10.00")),
        ("usage", "traffic-police.tiles", D(3), D("1.50")),
    ]
    assert roadai.total == D("114.00") == sum(x.amount for x in roadai.lines)
    # Government tenants: statements, allocated by domain and publisher; own usage is free.
    assert (xihu.kind, xihu.number, xihu.total) == ("statement", "CBS-2026-10-000003", D("10.40"))
    assert xihu.allocation("domain") == {"environment": D("0.40"), "traffic": D("10.00")}
    assert xihu.allocation("publisher") == {str(OPERATOR): D("0.40"), str(POLICE): D("10.00")}
    assert [(x.product, x.amount) for x in police.lines] == [("data-bureau.air", D("0.20"))]
    # Revenue share: 10 % commission per line, the publisher keeps the rest, to the cent.
    for doc in docs.values():
        assert doc.commission + doc.publisher_share == doc.total
        for line in doc.lines:
            assert line.commission == (line.amount * D("0.1")).quantize(D("0.01"))
    assert roadai.commission == D("11.40")


def test_running_a_period_twice_returns_the_same_documents_and_charges_once(engine: Engine) -> None:
    _october(engine)
    first = _run(engine, OCT, CLOSE_OCT)
    again = _run(engine, OCT, CLOSE_OCT + timedelta(days=3), commission_rate=D("0.5"))
    assert not again.created
    assert again.documents == first.documents
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(billing_document)).scalar() == 4
        lines = conn.execute(select(func.count()).select_from(document_line)).scalar()
    assert lines == sum(len(d.lines) for d in first.documents)


def test_late_usage_goes_to_the_next_period_rated_by_the_plan_of_its_own_period(
    engine: Engine,
) -> None:
    _october(engine)
    _run(engine, OCT, CLOSE_OCT)
    with engine.begin() as conn:
        # FLOW's price changes in November: in force from December, not before.
        v2 = set_plan(
            conn,
            FLOW,
            PricePlan.from_dict({"kind": "per_unit", "unit": "call", "unit_price": "0.02"}),
            now=month("2026-11", 15),
        )
        assert v2.effective_from == DEC.first_day
        # October rows that arrive in November: rated on top of October's 1500 rows.
        add_usage(
            conn,
            tenant=ROADAI,
            product=AIR,
            at=month("2026-10", 30),
            quantity=9000,
            unit="row",
            received_at=month("2026-11", 2),
        )
        add_usage(conn, tenant=PARKEASY, product=FLOW, at=month("2026-11"), quantity=100)
    result = _run(engine, NOV, CLOSE_NOV)
    docs = _by_tenant(result)
    roadai = docs[ROADAI]
    late = [x for x in roadai.lines if x.late]
    assert [(x.usage_period, x.quantity, x.amount) for x in late] == [
        ("2026-10", D(8500), D("8.50")),  # rows 1501-10000 at tier 2
        ("2026-10", D(500), D("0.25")),  # rows 10001-10500 at tier 3
    ]
    assert "late usage of 2026-10" in late[0].description
    # The subscription is still active in November: its fee again, no usage.
    assert [x.kind for x in roadai.lines if not x.late] == ["fee"]
    parkeasy = docs[PARKEASY]
    assert [(x.late, x.quantity, x.unit_price, x.amount) for x in parkeasy.lines] == [
        (False, D(100), D("0.01"), D("1.00")),  # November, still at the old price
        (True, D(7), D("0.01"), D("0.07")),  # received after October's cut-off
    ]
    with engine.connect() as conn:
        assert plan_in_force(conn, FLOW, DEC).version == 2  # type: ignore[union-attr]
        assert plan_in_force(conn, FLOW, NOV).version == 1  # type: ignore[union-attr]


def test_periods_close_in_order_and_only_once_over(engine: Engine) -> None:
    _october(engine)
    with pytest.raises(BillingConflictError, match="not over"):
        _run(engine, OCT, datetime(2026, 11, 1, 0, 3, tzinfo=UTC))
    _run(engine, OCT, CLOSE_OCT)
    with pytest.raises(BillingConflictError, match="close 2026-11 first"):
        _run(engine, DEC, datetime(2027, 1, 2, tzinfo=UTC))
    with pytest.raises(BillingConflictError, match="already closed"):
        _run(engine, Period.parse("2026-09"), CLOSE_OCT)


def test_draft_issue_pay_and_void(engine: Engine) -> None:
    _october(engine)
    result = _run(engine, OCT, CLOSE_OCT, issue=False)
    docs = _by_tenant(result)
    inv, stmt = docs[PARKEASY], docs[XIHU]
    assert inv.status == "draft" and stmt.status == "issued"
    now = CLOSE_OCT + timedelta(days=1)
    with engine.begin() as conn:
        with pytest.raises(BillingConflictError, match="is draft"):
            mark_paid(conn, inv.id, now=now)
        assert issue_document(conn, inv.id, now=now).status == "issued"
        assert mark_paid(conn, inv.id, now=now).paid_at is not None
        with pytest.raises(BillingConflictError, match="is paid"):
            void_document(conn, inv.id, now=now)
        with pytest.raises(BillingConflictError, match="chargeback statement"):
            mark_paid(conn, stmt.id, now=now)
        assert void_document(conn, docs[ROADAI].id, now=now).status == "void"


def test_documents_are_read_per_tenant(engine: Engine) -> None:
    _october(engine)
    result = _run(engine, OCT, CLOSE_OCT)
    inv = _by_tenant(result)[PARKEASY]
    with engine.connect() as conn:
        assert get_document(conn, inv.id, kind="invoice", tenant_id=PARKEASY).total == D("5.00")
        assert get_document(conn, inv.id, kind="invoice", tenant_id=None).id == inv.id
        with pytest.raises(BillingNotFoundError) as other:
            get_document(conn, inv.id, kind="invoice", tenant_id=ROADAI)
        with pytest.raises(BillingNotFoundError) as missing:
            get_document(conn, 99999, kind="invoice", tenant_id=ROADAI)
        assert str(other.value).replace(str(inv.id), "99999") == str(missing.value)
        with pytest.raises(BillingNotFoundError):
            get_document(conn, inv.id, kind="statement", tenant_id=None)
        docs, count = list_documents(conn, kind="statement", tenant_id=None)
        assert count == 2 and {d.tenant_id for d in docs} == {XIHU, POLICE}
        assert list_documents(conn, kind="invoice", tenant_id=XIHU) == ([], 0)


def test_subscriptions_self_service_for_public_products_only(engine: Engine) -> None:
    tiles = CATALOG.products[TILES]  # restricted
    now = month("2026-10")
    with engine.begin() as conn:
        with pytest.raises(SubscriptionRefusedError, match="needs an access grant"):
            subscribe(
                conn,
                tenant_id=ROADAI,
                product=tiles,
                acting_tenant_id=ROADAI,
                grant_check=_never,
                now=now,
            )
        # The grants seam: a grant lets the consumer subscribe itself.
        granted = subscribe(
            conn,
            tenant_id=PARKEASY,
            product=tiles,
            acting_tenant_id=PARKEASY,
            grant_check=lambda t, p: (t, p.id) == (PARKEASY, TILES),
            now=now,
        )
        # The owner subscribes its consumer, whatever the tier.
        by_owner = subscribe(
            conn,
            tenant_id=ROADAI,
            product=tiles,
            acting_tenant_id=POLICE,
            grant_check=_never,
            now=now,
        )
        with pytest.raises(BillingConflictError, match="already subscribed"):
            subscribe(
                conn,
                tenant_id=ROADAI,
                product=tiles,
                acting_tenant_id=POLICE,
                grant_check=_never,
                now=now,
            )
        with pytest.raises(BillingConflictError, match="own product"):
            subscribe(
                conn,
                tenant_id=POLICE,
                product=tiles,
                acting_tenant_id=POLICE,
                grant_check=_never,
                now=now,
            )
        with pytest.raises(SubscriptionRefusedError, match="only a product's owner"):
            subscribe(
                conn,
                tenant_id=XIHU,
                product=CATALOG.products[FLOW],
                acting_tenant_id=ROADAI,
                grant_check=_never,
                now=now,
            )
        cancel_subscription(conn, by_owner, now=month("2026-10", 20))
        # Active at some moment of October: in; cancelled before November: out.
        assert active_subscriptions(conn, OCT) == {(PARKEASY, TILES), (ROADAI, TILES)}
        assert active_subscriptions(conn, NOV) == {(PARKEASY, TILES)}
    assert granted.state == "active"


def test_usage_by_day_sums_per_product_and_day(engine: Engine) -> None:
    _october(engine)
    with engine.connect() as conn:
        rows = usage_by_day(conn, OCT, tenant_id=XIHU)
    assert [(r.day, r.product, r.events, r.quantity) for r in rows] == [
        ("2026-10-20", "data-bureau.air", 1, D(200)),
        ("2026-10-20", "traffic-police.flow", 1, D(1000)),
    ]
