"""A small city for billing's tests: tenants, products and usage rows as plain data."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, insert

from billing.catalog import BillingCatalog, ProductInfo, TenantInfo
from billing.plan_store import set_plan
from billing.plans import PricePlan
from billing.tables import metadata, rating_metadata, usage_event
from tests.utils.postgres import scratch_database


def billing_engine(tmp_path: Path, backend: str = "sqlite") -> Iterator[Engine]:
    """A database with all of billing's tables (usage and rating), for an ``engine`` fixture:
    ``yield from billing_engine(tmp_path)``. ``backend="postgresql"``: a fresh scratch
    PostgreSQL database (dropped afterwards) instead of a SQLite file."""
    if backend == "postgresql":
        with scratch_database("citybrain_test_rating") as db:
            yield from _with_tables(create_engine(db.url))
    else:
        yield from _with_tables(create_engine(f"sqlite:///{tmp_path / 'billing.db'}"))


def _with_tables(eng: Engine) -> Iterator[Engine]:
    try:
        metadata.create_all(eng)
        rating_metadata.create_all(eng)
        yield eng
    finally:
        eng.dispose()


OPERATOR, POLICE, XIHU, PARKEASY, ROADAI = 1, 2, 3, 4, 5
FLOW, AIR, PARKING, ASR, TILES = 10, 11, 12, 13, 14

CATALOG = BillingCatalog(
    tenants={
        OPERATOR: TenantInfo(OPERATOR, "data-bureau", "operator"),
        POLICE: TenantInfo(POLICE, "traffic-police", "agency"),
        XIHU: TenantInfo(XIHU, "xihu-district", "district"),
        PARKEASY: TenantInfo(PARKEASY, "parkeasy", "developer"),
        ROADAI: TenantInfo(ROADAI, "roadai", "developer"),
    },
    products={
        FLOW: ProductInfo(FLOW, "traffic-police.flow", POLICE, "traffic"),
        AIR: ProductInfo(AIR, "data-bureau.air", OPERATOR, "environment"),
        PARKING: ProductInfo(PARKING, "parkeasy.parking", PARKEASY, "traffic"),
        ASR: ProductInfo(ASR, "traffic-police.asr", POLICE, "safety"),
        TILES: ProductInfo(TILES, "traffic-police.tiles", POLICE, "traffic", "restricted"),
    },
)

PLANS: dict[int, dict[str, Any]] = {
    FLOW: {"kind": "per_unit", "unit": "call", "unit_price": "0.01"},
    AIR: {
        "kind": "graduated",
        "unit": "row",
        "tiers": [
            {"up_to": "1000", "unit_price": "0.002"},
            {"up_to": "10000", "unit_price": "0.001"},
            {"up_to": None, "unit_price": "0.0005"},
        ],
    },
    PARKING: {
        "kind": "subscription",
        "unit": "call",
        "monthly_fee": "100",
        "included_units": "1000",
        "overage_price": "0.05",
    },
    ASR: {"kind": "per_unit", "unit": "audio-second", "unit_price": "0.0025"},
    TILES: {"kind": "per_unit", "unit": "mb", "unit_price": "0.5"},
}

#: Plans are set in September, so they are in force from 2026-09 on.
PLANS_SET_AT = datetime(2026, 9, 3, tzinfo=UTC)
_ids = itertools.count(1)


def set_all_plans(conn: Connection) -> None:
    for product_id, spec in PLANS.items():
        set_plan(conn, product_id, PricePlan.from_dict(spec), now=PLANS_SET_AT, actor="test")


def month(period: str, day: int = 10, hour: int = 12) -> datetime:
    y, m = (int(x) for x in period.split("-"))
    return datetime(y, m, day, hour, tzinfo=UTC)


def add_usage(
    conn: Connection,
    *,
    tenant: int,
    product: int,
    at: datetime,
    quantity: str | int = 1,
    events: int = 1,
    unit: str = "call",
    received_at: datetime | None = None,
) -> None:
    """``events`` usage events of ``quantity`` each, received a second after ``at`` by default."""
    handle = CATALOG.products[product].handle
    rows = []
    for i in range(events):
        n = next(_ids)
        rows.append(
            {
                "tenant_id": tenant,
                "id": f"ev-{n:08d}",
                "key_id": None,
                "product": handle,
                "product_id": product,
                "version": 1,
                "unit": unit,
                "quantity": Decimal(quantity),
                "at": at + timedelta(microseconds=i),
                "latency_ms": 3.0,
                "request_id": f"rq-{n:08d}",
                "received_at": received_at or at + timedelta(seconds=1),
            }
        )
    conn.execute(insert(usage_event), rows)
