"""GET /api/v1/usage: the caller's metered usage by product and day; never another tenant's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.utils.city import City
from tests.utils.usage import insert_usage_rows

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _events(
    city: City, slug: str, product: str, when: datetime, n: int, unit: str = "call", qty: float = 1
) -> None:
    row = {"product": product, "product_id": 1, "unit": unit, "quantity": qty, "at": when}
    insert_usage_rows(city.session_factory, slug, [row] * n)


def test_usage_by_day_and_by_product(city: City) -> None:
    _events(
        city, "parkeasy", "traffic-police.flow-smoother", datetime(2026, 11, 2, 8, tzinfo=UTC), 3
    )
    _events(
        city,
        "parkeasy",
        "traffic-police.flow-smoother",
        datetime(2026, 11, 3, 23, 59, tzinfo=UTC),
        2,
    )
    _events(
        city,
        "parkeasy",
        "hotline-12345.hotline-asr",
        datetime(2026, 11, 3, 9, tzinfo=UTC),
        2,
        unit="audio-second",
        qty=4.5,
    )
    _events(
        city, "tourism", "traffic-police.flow-smoother", datetime(2026, 11, 2, 8, tzinfo=UTC), 7
    )
    h = city.headers("parkeasy")
    by_day = city.client.get("/api/v1/usage?group_by=day", headers=h).json()
    rows = {
        (r["product"], r["day"]): (r["unit"], float(r["quantity"]), r["events"])
        for r in by_day["data"]
    }
    assert rows == {
        ("hotline-12345.hotline-asr", "2026-11-03"): ("audio-second", 9.0, 2),
        ("traffic-police.flow-smoother", "2026-11-02"): ("call", 3.0, 3),
        ("traffic-police.flow-smoother", "2026-11-03"): ("call", 2.0, 2),
    }
    assert by_day["count"] == 3
    by_product = city.client.get("/api/v1/usage?group_by=product", headers=h).json()["data"]
    assert {(r["product"], r["day"], r["events"]) for r in by_product} == {
        ("hotline-12345.hotline-asr", None, 2),
        ("traffic-police.flow-smoother", None, 5),
    }
    window = city.client.get(
        "/api/v1/usage?from=2026-11-03&to=2026-11-03&product=traffic-police.flow-smoother",
        headers=h,
    ).json()["data"]
    assert [(r["day"], r["events"]) for r in window] == [("2026-11-03", 2)]


def test_another_tenants_usage_is_never_visible(city: City) -> None:
    _events(city, "tourism", "traffic-police.flow-smoother", datetime(2026, 11, 2, tzinfo=UTC), 7)
    h = city.headers("parkeasy")
    assert city.client.get("/api/v1/usage", headers=h).json() == {"data": [], "count": 0}
    assert city.client.get("/api/v1/usage?tenant=tourism", headers=h).json() == {
        "data": [],
        "count": 0,
    }
    op = city.client.get(
        "/api/v1/usage?tenant=tourism&group_by=product", headers=city.headers("data-bureau")
    ).json()
    assert op["data"][0]["events"] == 7
    everyone = city.client.get(
        "/api/v1/usage?group_by=product", headers=city.headers("data-bureau")
    ).json()
    assert everyone["data"][0]["events"] == 7


def test_usage_needs_billing_read_and_valid_dates(city: City) -> None:
    r = city.client.get(
        "/api/v1/usage", headers={"X-API-Key": city.key("parkeasy", scopes=["infer"])}
    )
    assert r.status_code == 403
    assert city.client.get("/api/v1/usage").status_code == 401
    r = city.client.get("/api/v1/usage?from=yesterday", headers=city.headers("parkeasy"))
    assert r.status_code == 422 and "yesterday" in r.json()["error"]
    r = city.client.get(
        "/api/v1/usage?from=2026-11-05&to=2026-11-01", headers=city.headers("parkeasy")
    )
    assert r.status_code == 422
    r = city.client.get("/api/v1/usage?group_by=hour", headers=city.headers("parkeasy"))
    assert r.status_code == 422
