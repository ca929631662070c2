"""Catalog: products, handles, versions, the listing life cycle and tier changes."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.db import transaction
from marketplace.tables import AuditEntry, Product
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _create(city: City, owner: str, **body: object):  # type: ignore[no-untyped-def]
    payload = {"name": "bus-gps", "kind": "dataset", "title": "Bus GPS", "domain": "traffic"}
    payload.update(body)
    return city.client.post("/api/v1/products", json=payload, headers=city.headers(owner))


def test_create_product_gives_a_draft_with_a_handle(city: City) -> None:
    r = _create(city, "traffic-police", tags=["GPS", "bus", "gps"], description="Bus positions")
    assert r.status_code == 201, r.text
    p = r.json()
    assert p["handle"] == "traffic-police.bus-gps"
    assert p["state"] == "draft" and p["tier"] == "public" and p["owner"] == "traffic-police"
    assert p["tags"] == ["gps", "bus"]


def test_name_is_unique_per_tenant_only(city: City) -> None:
    assert _create(city, "traffic-police").status_code == 201
    dup = _create(city, "traffic-police")
    assert dup.status_code == 409 and dup.json()["code"] == "Conflict"
    assert _create(city, "parkeasy").status_code == 201


def test_invalid_fields_are_422_and_write_nothing(city: City) -> None:
    with transaction(city.session_factory) as s:
        before = (
            s.scalar(select(func.count(Product.id))),
            s.scalar(select(func.count(AuditEntry.seq))),
        )
    for bad in (
        {"tier": "top"},
        {"domain": "space"},
        {"kind": "app"},
        {"name": "Bad Name"},
        {"tags": ["ok", "no spaces allowed"]},
        {"unexpected": 1},
    ):
        r = _create(city, "traffic-police", **bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "ValidationError"
    with transaction(city.session_factory) as s:
        after = (
            s.scalar(select(func.count(Product.id))),
            s.scalar(select(func.count(AuditEntry.seq))),
        )
    assert after == before


def test_public_product_is_published_by_its_owner(city: City) -> None:
    handle = city.product("parkeasy", tier="public", publish=False)
    r = city.client.post(f"/api/v1/products/{handle}/publish", headers=city.headers("parkeasy"))
    assert r.status_code == 200 and r.json()["state"] == "published"
    anon = city.client.get(f"/api/v1/products/{handle}")
    assert anon.status_code == 200


def test_restricted_and_confidential_need_operator_approval(city: City) -> None:
    for tier in ("restricted", "confidential"):
        handle = city.product("traffic-police", tier=tier, publish=False)
        owner = city.headers("traffic-police")
        r = city.client.post(f"/api/v1/products/{handle}/publish", headers=owner)
        assert r.status_code == 403 and "operator approval" in r.json()["error"]
        # The owner cannot approve its own submission.
        assert (
            city.client.post(f"/api/v1/products/{handle}/submit", headers=owner).status_code == 200
        )
        r = city.client.post(f"/api/v1/products/{handle}/approve", json={}, headers=owner)
        assert r.status_code == 403
        r = city.client.post(
            f"/api/v1/products/{handle}/approve",
            json={"note": "fine"},
            headers=city.headers("data-bureau"),
        )
        assert r.status_code == 200 and r.json()["state"] == "published"


def test_rejection_needs_a_reason_and_returns_to_draft(city: City) -> None:
    handle = city.product("health", tier="restricted", publish=False)
    city.client.post(f"/api/v1/products/{handle}/submit", headers=city.headers("health"))
    op = city.headers("data-bureau")
    r = city.client.post(f"/api/v1/products/{handle}/reject", json={"note": " "}, headers=op)
    assert r.status_code == 422
    r = city.client.post(
        f"/api/v1/products/{handle}/reject", json={"note": "describe the columns"}, headers=op
    )
    assert r.status_code == 200
    assert r.json()["state"] == "draft" and r.json()["review_note"] == "describe the columns"


def test_state_machine_refuses_invalid_transitions(city: City) -> None:
    handle = city.product("parkeasy", tier="public")
    h = city.headers("parkeasy")
    assert city.client.post(f"/api/v1/products/{handle}/submit", headers=h).status_code == 409
    assert city.client.delete(f"/api/v1/products/{handle}", headers=h).status_code == 409
    r = city.client.post(f"/api/v1/products/{handle}/deprecate", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "deprecated"
    r = city.client.post(f"/api/v1/products/{handle}/versions", json={}, headers=h)
    assert r.status_code == 409
    assert city.client.delete(f"/api/v1/products/{handle}", headers=h).status_code == 204
    assert city.client.get(f"/api/v1/products/{handle}", headers=h).status_code == 404


def test_versions_are_numbered_and_immutable(city: City) -> None:
    handle = city.product("environment", tier="public")
    h = city.headers("environment")
    for i in (1, 2):
        r = city.client.post(
            f"/api/v1/products/{handle}/versions",
            json={"notes": f"v{i}", "metadata": {"rows": i * 10}},
            headers=h,
        )
        assert r.status_code == 201 and r.json()["version"] == i
    listing = city.client.get(f"/api/v1/products/{handle}/versions").json()
    assert [v["version"] for v in listing["data"]] == [1, 2] and listing["count"] == 2
    assert city.client.get(f"/api/v1/products/{handle}").json()["latest_version"] == 2
    one = city.client.get(f"/api/v1/products/{handle}/versions/1").json()
    assert one["metadata"] == {"rows": 10}
    for method in ("PUT", "PATCH", "DELETE"):
        r = city.client.request(method, f"/api/v1/products/{handle}/versions/1", json={}, headers=h)
        assert r.status_code == 405 and r.json()["code"] == "MethodNotAllowed"
    assert city.client.get(f"/api/v1/products/{handle}/versions/9").status_code == 404


def test_tier_is_raised_by_owner_and_lowered_only_by_operator(city: City) -> None:
    handle = city.product("traffic-police", tier="public")
    owner = city.headers("traffic-police")
    r = city.client.patch(f"/api/v1/products/{handle}", json={"tier": "restricted"}, headers=owner)
    assert r.status_code == 200 and r.json()["tier"] == "restricted"
    r = city.client.patch(f"/api/v1/products/{handle}", json={"tier": "public"}, headers=owner)
    assert r.status_code == 403 and "operator" in r.json()["error"]
    op = city.headers("data-bureau")
    r = city.client.patch(f"/api/v1/products/{handle}", json={"tier": "public"}, headers=op)
    assert r.status_code == 200 and r.json()["tier"] == "public"
    # The operator may change the tier but not the owner's content.
    r = city.client.patch(f"/api/v1/products/{handle}", json={"title": "Mine"}, headers=op)
    assert r.status_code == 403


def test_non_owner_who_can_see_gets_403_on_writes(city: City) -> None:
    handle = city.product("traffic-police", tier="public")
    other = city.headers("parkeasy")
    r = city.client.patch(f"/api/v1/products/{handle}", json={"title": "x"}, headers=other)
    assert r.status_code == 403
    r = city.client.post(f"/api/v1/products/{handle}/versions", json={}, headers=other)
    assert r.status_code == 403


def test_listing_is_paginated_with_count(city: City) -> None:
    for _ in range(3):
        city.product("parkeasy", tier="public")
    r = city.client.get("/api/v1/products?owner=parkeasy&per_page=2&page=1").json()
    assert r["count"] == 4 and len(r["data"]) == 2 and r["per_page"] == 2
    r2 = city.client.get("/api/v1/products?owner=parkeasy&per_page=2&page=2").json()
    assert len(r2["data"]) == 2
    assert {p["handle"] for p in r["data"]}.isdisjoint({p["handle"] for p in r2["data"]})
    bad = city.client.get("/api/v1/products?per_page=1000")
    assert bad.status_code == 422
