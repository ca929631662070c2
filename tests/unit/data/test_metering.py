"""Data reads are metered like inference: one usage event per query or download, unit
``rows``, once per Idempotency-Key, never for a failed read; ``units`` quotas count rows;
price plans per 1,000 rows, and ``citybrain billing run`` prices them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import select
from sqlglot import exp
from typer.testing import CliRunner

from billing.invoices import RunConfig
from billing.periods import Period
from billing.tables import usage_event
from marketplace.billing import service as svc
from marketplace.cli import app as cli
from marketplace.config import Settings
from marketplace.data.engine import Snapshot
from marketplace.data.errors import QueryTimeoutError
from marketplace.db import transaction
from marketplace.tables import Product, Tenant
from tests.utils.datasets import DOWNLOAD, Datasets
from tests.utils.usage import insert_usage_rows

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _meter(datasets: Datasets) -> Any:
    return datasets.city.client.app.state.data.meter  # type: ignore[attr-defined]


def _appended(datasets: Datasets) -> int:
    return int(_meter(datasets).spool.stats().appended)


def _events(datasets: Datasets, handle: str) -> list[tuple[str, str, float]]:
    _meter(datasets).flusher.flush_once()
    with transaction(datasets.city.session_factory) as s:
        rows = s.execute(
            select(usage_event.c.id, usage_event.c.unit, usage_event.c.quantity)
            .where(usage_event.c.product == handle)
            .order_by(usage_event.c.received_at, usage_event.c.id)
        )
        return [(i, u, float(q)) for i, u, q in rows]


def test_each_query_is_one_event_of_its_rows_once_per_idempotency_key(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police")
    plan = {"select": ["record_id"], "where": [{"column": "fine_cny", "op": "ge", "value": 200}]}
    first = datasets.query("parkeasy", handle, plan, **{"Idempotency-Key": "q-1"})
    retry = datasets.query("parkeasy", handle, plan, **{"Idempotency-Key": "q-1"})
    assert first.status_code == retry.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json()["rows"] == first.json()["rows"] == [["V1"], ["V2"]]
    other = datasets.query("parkeasy", handle, {"limit": 3})
    events = _events(datasets, handle)
    assert sorted(events) == sorted(
        [("q-1", "rows", 2.0), (other.headers["x-request-id"], "rows", 3.0)]
    )


def test_failed_reads_are_never_metered(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", tier="restricted")
    before = _appended(datasets)
    assert datasets.query("parkeasy", handle, {}).status_code == 403
    assert datasets.query("traffic-police", handle, {"select": ["nope"]}).status_code == 422
    assert datasets.query("traffic-police", "traffic-police.nope", {}).status_code == 404
    bad_key = datasets.query("traffic-police", handle, {}, **{"Idempotency-Key": "\x01"})
    assert bad_key.status_code == 400

    class Timeout:
        name, dialect = "fake", "duckdb"

        def run(self, snapshot: Snapshot, query: exp.Expr, params: Mapping[str, Any]) -> pa.Table:
            raise QueryTimeoutError("the query ran past the time limit of 30 s")

    plane = datasets.city.client.app.state.data  # type: ignore[attr-defined]
    real, plane.engine = plane.engine, Timeout()
    try:
        r = datasets.query("traffic-police", handle, {})
    finally:
        plane.engine = real
    assert r.status_code == 503 and r.json()["code"] == "QueryTimeout"
    assert _appended(datasets) == before
    assert datasets.query("traffic-police", handle, {}).status_code == 200
    assert _appended(datasets) == before + 1


def test_downloads_are_metered_for_every_row_of_the_view(datasets: Datasets) -> None:
    handle = datasets.dataset("traffic-police", downloadable=True)
    url = DOWNLOAD.format(handle, 1)
    h = {**datasets.city.headers("parkeasy"), "Idempotency-Key": "dl-1"}
    assert datasets.city.client.get(url, headers=h).status_code == 200
    again = datasets.city.client.get(url, headers=h)
    assert again.headers["idempotent-replayed"] == "true"
    assert _events(datasets, handle) == [("dl-1", "rows", 4.0)]


def test_units_quotas_count_rows(datasets: Datasets) -> None:
    city = datasets.city
    handle = datasets.dataset("traffic-police")
    r = city.client.post(
        "/api/v1/quotas",
        json={
            "tenant": "parkeasy",
            "product": handle,
            "metric": "units",
            "window": "day",
            "amount": 5,
        },
        headers=city.headers("traffic-police"),
    )
    assert r.status_code == 201, r.text
    statuses = [datasets.query("parkeasy", handle, {"limit": 3}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 3 rows, 6 rows: the budget of 5 is spent
    assert datasets.query("tourism", handle, {"limit": 3}).status_code == 200


def _ids(datasets: Datasets) -> tuple[dict[str, int], dict[str, int]]:
    with transaction(datasets.city.session_factory) as s:
        tenants = {t.slug: t.id for t in s.scalars(select(Tenant))}
        products = {f"{p.tenant.slug}.{p.name}": p.id for p in s.scalars(select(Product))}
    return tenants, products


PER_K_ROWS = {"kind": "per_unit", "unit": "k-rows", "unit_price": "0.5"}


def test_rows_are_priced_per_thousand(datasets: Datasets) -> None:
    city = datasets.city
    rows = "n\n" + "".join(f"{i}\n" for i in range(600))
    handle = datasets.dataset("traffic-police", data=rows, schema={"columns": [{"name": "n"}]})
    r = city.client.put(
        f"/api/v1/products/{handle}/plan", json=PER_K_ROWS, headers=city.headers("traffic-police")
    )
    assert r.status_code == 200, r.text
    for limit in (600, 400):  # 1,000 rows in two queries
        assert datasets.query("parkeasy", handle, {"limit": limit}).status_code == 200
    assert sum(q for _, _, q in _events(datasets, handle)) == 1000
    period = Period.of(datetime.now(UTC))
    with transaction(city.session_factory) as s:
        svc.run_billing(s, period, now=period.end + timedelta(hours=1), config=RunConfig())
    (inv,) = city.client.get("/api/v1/invoices", headers=city.headers("parkeasy")).json()["data"]
    detail = city.client.get(
        f"/api/v1/invoices/{inv['id']}", headers=city.headers("parkeasy")
    ).json()
    assert [
        (x["product"], x["quantity"], x["unit_price"], x["amount"]) for x in detail["lines"]
    ] == [(handle, "1", "0.5", "0.50")]


def test_citybrain_billing_run_prices_rows(datasets: Datasets, settings: Settings) -> None:
    city = datasets.city
    flow = "traffic-police.intersection-flow"
    _, products = _ids(datasets)
    city.set_price_plan(products[flow], PER_K_ROWS, since=datetime(2026, 8, 5, tzinfo=UTC))
    at = datetime(2026, 9, 10, tzinfo=UTC)
    insert_usage_rows(
        city.session_factory,
        "parkeasy",
        [
            {
                "id": f"rows-{i}",
                "product": flow,
                "product_id": products[flow],
                "unit": "rows",
                "quantity": Decimal(n),
                "at": at + timedelta(minutes=i),
                "received_at": at + timedelta(minutes=i, seconds=1),
            }
            for i, n in enumerate((1200, 1300))
        ],
    )
    r = CliRunner().invoke(
        cli, ["--database-url", settings.database_url, "billing", "run", "--period", "2026-09"]
    )
    assert r.exit_code == 0, r.output
    assert "1.25 CNY" in r.output  # 2,500 rows at 0.5 per 1,000
