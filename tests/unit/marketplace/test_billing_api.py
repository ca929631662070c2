"""Billing through the API and the CLI: plans on products, subscriptions, usage summaries,
invoices and statements per tenant, ``citybrain billing run`` and ``report``."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import insert, select
from typer.testing import CliRunner

from billing.invoices import RunConfig
from billing.periods import Period
from billing.tables import usage_event
from marketplace.billing import service as svc
from marketplace.cli import app as cli
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.tables import Product, Tenant
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

_n = itertools.count(1)
PER_CALL = {"kind": "per_unit", "unit": "call", "unit_price": "0.01"}


def _ids(city: City) -> tuple[dict[str, int], dict[str, int]]:
    with transaction(city.session_factory) as s:
        tenants = {t.slug: t.id for t in s.scalars(select(Tenant))}
        products = {f"{p.tenant.slug}.{p.name}": p.id for p in s.scalars(select(Product))}
    return tenants, products


def _usage(
    city: City, tenant: str, handle: str, at: datetime, quantity: int = 1, events: int = 1
) -> None:
    tenants, products = _ids(city)
    rows = []
    for i in range(events):
        n = next(_n)
        rows.append(
            {
                "tenant_id": tenants[tenant],
                "id": f"api-{n:06d}",
                "key_id": None,
                "product": handle,
                "product_id": products[handle],
                "version": 1,
                "unit": "call",
                "quantity": D(quantity),
                "at": at + timedelta(microseconds=i),
                "latency_ms": 1.0,
                "request_id": f"rq-{n:06d}",
                "received_at": at + timedelta(seconds=1),
            }
        )
    with transaction(city.session_factory) as s:
        s.execute(insert(usage_event), rows)


def _close(city: City, period: Period) -> None:
    with transaction(city.session_factory) as s:
        svc.run_billing(s, period, now=period.end + timedelta(hours=1), config=RunConfig())


def test_the_owner_sets_a_plan_others_read_it(city: City) -> None:
    c, h = city.client, city.headers
    flow = "traffic-police.intersection-flow"
    r = c.put(f"/api/v1/products/{flow}/plan", json=PER_CALL, headers=h("traffic-police"))
    assert r.status_code == 200, r.text
    body = r.json()
    this_month = Period.of(datetime.now(UTC))
    assert body["current"]["plan"] == {**PER_CALL, "currency": "CNY"}
    assert body["current"]["effective_from"] == this_month.first_day.isoformat()
    # A change applies from the next period; this one keeps its plan.
    r = c.put(
        f"/api/v1/products/{flow}/plan",
        json={
            "kind": "graduated",
            "tiers": [
                {"up_to": "100", "unit_price": "0.02"},
                {"up_to": None, "unit_price": "0.01"},
            ],
        },
        headers=h("traffic-police"),
    )
    body = r.json()
    assert [v["version"] for v in body["versions"]] == [2, 1]
    assert body["versions"][0]["effective_from"] == this_month.next().first_day.isoformat()
    assert body["current"]["version"] == 1
    assert c.get(f"/api/v1/products/{flow}/plan").json()["current"]["version"] == 1  # public
    r = c.put(f"/api/v1/products/{flow}/plan", json=PER_CALL, headers=h("parkeasy"))
    assert r.status_code == 403 and r.json()["code"] == "Forbidden"
    r = c.put(
        f"/api/v1/products/{flow}/plan", json={"kind": "per_unit"}, headers=h("traffic-police")
    )
    assert r.status_code == 422 and "unit_price" in r.json()["error"]
    secret = "traffic-police.signal-timing-plans"
    missing = c.get("/api/v1/products/traffic-police.nope/plan", headers=h("parkeasy"))
    hidden = c.get(f"/api/v1/products/{secret}/plan", headers=h("parkeasy"))
    assert hidden.status_code == missing.status_code == 404


def test_subscriptions_public_self_service_others_by_grant_or_owner(city: City) -> None:
    c, h = city.client, city.headers
    r = c.post(
        "/api/v1/subscriptions",
        json={"product": "parkeasy.parking-availability"},
        headers=h("xihu-district"),
    )
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["tenant"], sub["product"], sub["state"]) == (
        "xihu-district",
        "parkeasy.parking-availability",
        "active",
    )
    again = c.post(
        "/api/v1/subscriptions",
        json={"product": "parkeasy.parking-availability"},
        headers=h("xihu-district"),
    )
    assert again.status_code == 409
    # restricted: a grant is needed; the owner may subscribe its consumer instead.
    restricted = "city-management.manhole-covers"
    r = c.post("/api/v1/subscriptions", json={"product": restricted}, headers=h("parkeasy"))
    assert r.status_code == 403 and "grant" in r.json()["error"]
    r = c.post(
        "/api/v1/subscriptions",
        json={"product": restricted, "tenant": "parkeasy"},
        headers=h("city-management"),
    )
    assert r.status_code == 201 and r.json()["tenant"] == "parkeasy"
    r = c.post(
        "/api/v1/subscriptions",
        json={"product": restricted, "tenant": "tourism"},
        headers=h("parkeasy"),
    )
    assert r.status_code == 403
    # Lists: one's own, and those to one's products; the operator sees all.
    mine = c.get("/api/v1/subscriptions", headers=h("parkeasy")).json()["data"]
    assert {(s["tenant"], s["product"]) for s in mine} == {
        ("xihu-district", "parkeasy.parking-availability"),
        ("parkeasy", restricted),
    }
    assert c.get("/api/v1/subscriptions", headers=h("data-bureau")).json()["count"] == 2
    assert c.get("/api/v1/subscriptions", headers=h("tourism")).json()["count"] == 0
    # Cancelling: the subscriber (or the owner); to anyone else it does not exist.
    other = c.delete(f"/api/v1/subscriptions/{sub['id']}", headers=h("tourism"))
    missing = c.delete("/api/v1/subscriptions/999999", headers=h("tourism"))
    assert other.status_code == missing.status_code == 404
    r = c.delete(f"/api/v1/subscriptions/{sub['id']}", headers=h("xihu-district"))
    assert r.status_code == 200 and r.json()["state"] == "cancelled"
    # With an approved access grant, a tenant subscribes itself.
    city.grant("health", restricted, "city-management", ["data:read"], "street works planning")
    r = c.post("/api/v1/subscriptions", json={"product": restricted}, headers=h("health"))
    assert r.status_code == 201, r.text


def test_tenants_read_their_own_invoices_statements_and_usage(city: City) -> None:
    c, h = city.client, city.headers
    flow = "traffic-police.intersection-flow"
    assert (
        c.put(
            f"/api/v1/products/{flow}/plan", json=PER_CALL, headers=h("traffic-police")
        ).status_code
        == 200
    )
    period = Period.of(datetime.now(UTC))
    day = period.start + timedelta(days=1, hours=3)
    _usage(city, "parkeasy", flow, day, events=120)
    _usage(city, "xihu-district", flow, day, quantity=500)
    _usage(city, "traffic-police", flow, day, quantity=50)  # its own product: never billed
    _close(city, period)

    invoices = c.get("/api/v1/invoices", headers=h("parkeasy")).json()
    assert invoices["count"] == 1
    inv = invoices["data"][0]
    assert (inv["tenant"], inv["period"], inv["status"], inv["total"]) == (
        "parkeasy",
        str(period),
        "issued",
        "1.20",
    )
    detail = c.get(f"/api/v1/invoices/{inv['id']}", headers=h("parkeasy")).json()
    assert [
        (x["product"], x["quantity"], x["unit_price"], x["amount"]) for x in detail["lines"]
    ] == [(flow, "120", "0.01", "1.20")]
    statements = c.get("/api/v1/statements", headers=h("xihu-district")).json()["data"]
    assert [s["total"] for s in statements] == ["5.00"]
    stmt = c.get(f"/api/v1/statements/{statements[0]['id']}", headers=h("xihu-district")).json()
    assert stmt["allocation_by_domain"] == {"traffic": "5.00"}
    assert stmt["allocation_by_publisher"] == {"traffic-police": "5.00"}
    assert c.get("/api/v1/invoices", headers=h("traffic-police")).json()["count"] == 0
    assert c.get("/api/v1/statements", headers=h("traffic-police")).json()["count"] == 0

    # Another tenant's invoice answers exactly like a missing one; the operator reads all.
    other = c.get(f"/api/v1/invoices/{inv['id']}", headers=h("tourism"))
    missing = c.get("/api/v1/invoices/999999", headers=h("tourism"))
    assert other.status_code == missing.status_code == 404
    assert other.json()["error"].replace(str(inv["id"]), "999999") == missing.json()["error"]
    assert c.get(f"/api/v1/invoices/{inv['id']}", headers=h("data-bureau")).status_code == 200
    assert c.get(f"/api/v1/statements/{inv['id']}", headers=h("data-bureau")).status_code == 404
    assert (
        c.get("/api/v1/invoices", params={"tenant": "parkeasy"}, headers=h("tourism")).json()[
            "count"
        ]
        == 0
    )
    assert (
        c.get("/api/v1/invoices", params={"tenant": "parkeasy"}, headers=h("data-bureau")).json()[
            "count"
        ]
        == 1
    )
    assert c.get("/api/v1/invoices", headers=city.headers(None)).status_code == 401
    no_scope = city.key("parkeasy", scopes=["catalog:read"])
    assert c.get("/api/v1/invoices", headers={"X-API-Key": no_scope}).status_code == 403

    usage = c.get(
        "/api/v1/billing/usage", params={"period": str(period)}, headers=h("parkeasy")
    ).json()
    assert [
        (u["tenant"], u["day"], u["product"], u["events"], u["quantity"]) for u in usage["data"]
    ] == [("parkeasy", day.date().isoformat(), flow, 120, "120")]
    everyone = c.get(
        "/api/v1/billing/usage", params={"period": str(period)}, headers=h("data-bureau")
    ).json()
    assert {u["tenant"] for u in everyone["data"]} == {
        "parkeasy",
        "xihu-district",
        "traffic-police",
    }
    bad = c.get("/api/v1/billing/usage", params={"period": "2026-13"}, headers=h("parkeasy"))
    assert bad.status_code == 422


def _cli(settings: Settings, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--database-url", settings.database_url, *args])
    return r.exit_code, r.output


def test_cli_billing_run_is_idempotent_and_reports_in_three_formats(
    city: City, settings: Settings, tmp_path: Path
) -> None:
    flow = "traffic-police.intersection-flow"
    _, products = _ids(city)
    city.set_price_plan(products[flow], PER_CALL, since=datetime(2026, 8, 5, tzinfo=UTC))
    _usage(city, "parkeasy", flow, datetime(2026, 9, 10, tzinfo=UTC), quantity=300)
    _usage(city, "xihu-district", flow, datetime(2026, 9, 12, tzinfo=UTC), quantity=1234)

    code, out = _cli(settings, "billing", "run", "--period", "2026-09", "--commission", "0.2")
    assert code == 0, out
    assert "period 2026-09 closed: 2 documents" in out
    assert "INV-2026-09-" in out and "3.00 CNY" in out and "12.34 CNY" in out
    code, again = _cli(settings, "billing", "run", "--period", "2026-09")
    assert code == 0 and "already closed; unchanged" in again
    assert again.split("\n", 1)[1] == out.split("\n", 1)[1]  # the same documents
    code, out = _cli(settings, "billing", "run", "--period", "2026-11")
    assert code == 1 and "close 2026-10 first" in out
    code, out = _cli(settings, "billing", "run", "--period", "2026-9")
    assert code == 1 and "period must look like 2026-11" in out

    code, out = _cli(settings, "billing", "report", "--period", "2026-09", "--format", "csv")
    assert code == 0
    rows = {
        (r["section"], r["key"], r["detail"]): r["amount"] for r in csv.DictReader(io.StringIO(out))
    }
    assert rows[("total", "all", "CNY")] == "15.34"
    assert rows[("total", "operator_commission", "CNY")] == "3.07"  # 0.60 + 2.47 at 20 %
    assert rows[("revenue_share", "traffic-police", "publisher_share")] == "12.27"
    html_file, pdf_file = tmp_path / "r.html", tmp_path / "r.pdf"
    assert (
        _cli(
            settings,
            "billing",
            "report",
            "--period",
            "2026-09",
            "--format",
            "html",
            "--output",
            str(html_file),
        )[0]
        == 0
    )
    assert "<svg" in html_file.read_text() and "15.34" in html_file.read_text()
    assert (
        _cli(
            settings,
            "billing",
            "report",
            "--period",
            "2026-09",
            "--format",
            "pdf",
            "--output",
            str(pdf_file),
        )[0]
        == 0
    )
    text = "".join(p.extract_text() for p in PdfReader(str(pdf_file)).pages)
    assert "15.34" in text and "12.34" in text and "parkeasy" in text
    code, out = _cli(settings, "billing", "invoice", "INV-2026-09-999999", "paid")
    assert code == 1 and "no document" in out
