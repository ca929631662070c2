"""Access requests → grants: who may ask, who decides, expiry and revocation, audit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from marketplace.access.service import grant_conditions
from marketplace.db import transaction
from marketplace.tables import Grant, Product, utcnow
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _request(city: City, who: str, handle: str, **body: object):  # type: ignore[no-untyped-def]
    payload = {
        "product": handle,
        "purpose": "route planning for delivery vans",
        "scopes": ["infer"],
        "duration_days": 30,
        **body,
    }
    return city.client.post("/api/v1/access-requests", json=payload, headers=city.headers(who))


def _ids(city: City, handle: str, tenant: str) -> tuple[int, int]:
    with transaction(city.session_factory) as s:
        product = s.query(Product).filter(Product.name == handle.split(".", 1)[1]).one()
        from marketplace.tenants.service import get_tenant_by_slug

        return get_tenant_by_slug(s, tenant).id, product.id


def test_restricted_request_is_decided_by_the_owner(city: City) -> None:
    handle = city.product("city-management", tier="restricted", kind="model")
    r = _request(city, "parkeasy", handle)
    assert r.status_code == 201, r.text
    req = r.json()
    assert req["state"] == "pending" and req["tenant"] == "parkeasy" and req["tier"] == "restricted"
    # The operator does not decide restricted requests; a bystander cannot even see it.
    op = city.client.post(
        f"/api/v1/access-requests/{req['id']}/approve",
        json={"reason": "ok"},
        headers=city.headers("data-bureau"),
    )
    assert op.status_code == 403 and "owner" in op.json()["error"]
    other = city.client.get(f"/api/v1/access-requests/{req['id']}", headers=city.headers("tourism"))
    assert other.status_code == 404
    # The owner sees it in its queue and approves it.
    queue = city.client.get(
        "/api/v1/access-requests?state=pending", headers=city.headers("city-management")
    )
    assert req["id"] in {x["id"] for x in queue.json()["data"]}
    ok = city.client.post(
        f"/api/v1/access-requests/{req['id']}/approve",
        json={"reason": "purpose fits", "conditions": {"max_rps": 5}},
        headers=city.headers("city-management"),
    )
    assert ok.status_code == 200, ok.text
    decided = ok.json()
    assert decided["state"] == "approved" and decided["grant_id"]
    grant = city.client.get(
        f"/api/v1/grants/{decided['grant_id']}", headers=city.headers("parkeasy")
    ).json()
    assert grant["status"] == "active" and grant["scopes"] == ["infer"]
    assert grant["conditions"] == {"max_rps": 5}
    tenant_id, product_id = _ids(city, handle, "parkeasy")
    with transaction(city.session_factory) as s:
        assert grant_conditions(s, tenant_id, product_id, "infer") is not None
        assert grant_conditions(s, tenant_id, product_id, "data:read") is None
    again = city.client.post(
        f"/api/v1/access-requests/{req['id']}/reject",
        json={"reason": "x"},
        headers=city.headers("city-management"),
    )
    assert again.status_code == 409


def test_confidential_is_requested_by_government_and_decided_by_the_operator(city: City) -> None:
    handle = city.product("health", tier="confidential")
    # A developer cannot see it, so it cannot be requested: exactly like a missing product.
    dev = _request(city, "parkeasy", handle)
    missing = _request(city, "parkeasy", "health.no-such-thing")
    assert dev.status_code == missing.status_code == 404
    r = _request(city, "xihu-district", handle, scopes=["data:read"])
    assert r.status_code == 201
    rid = r.json()["id"]
    owner = city.client.post(
        f"/api/v1/access-requests/{rid}/approve",
        json={"reason": "mine"},
        headers=city.headers("health"),
    )
    assert owner.status_code == 403 and "operator" in owner.json()["error"]
    ok = city.client.post(
        f"/api/v1/access-requests/{rid}/reject",
        json={"reason": "no legal basis"},
        headers=city.headers("data-bureau"),
    )
    assert (
        ok.status_code == 200 and ok.json()["state"] == "rejected" and ok.json()["grant_id"] is None
    )


def test_public_own_and_secret_products_cannot_be_requested(city: City) -> None:
    public = city.product("tourism", tier="public")
    assert _request(city, "parkeasy", public).status_code == 409
    own = city.product("parkeasy", tier="restricted")
    assert _request(city, "parkeasy", own).status_code == 409
    secret = city.product("tourism", tier="secret")
    assert _request(city, "data-bureau", secret).status_code == 404


def test_bad_requests_are_422(city: City) -> None:
    handle = city.product("city-management", tier="restricted")
    for body in (
        {"scopes": ["admin"]},
        {"duration_days": 0},
        {"duration_days": 1000},
        {"purpose": ""},
    ):
        r = _request(city, "parkeasy", handle, **body)
        assert r.status_code == 422, (body, r.text)
    assert _request(city, "parkeasy", handle).status_code == 201
    assert _request(city, "parkeasy", handle).status_code == 409  # one pending at a time


def _granted(city: City) -> tuple[str, str, int, int]:
    handle = city.product("city-management", tier="restricted")
    rid = _request(city, "parkeasy", handle).json()["id"]
    gid = city.client.post(
        f"/api/v1/access-requests/{rid}/approve",
        json={"reason": "ok"},
        headers=city.headers("city-management"),
    ).json()["grant_id"]
    tenant_id, product_id = _ids(city, handle, "parkeasy")
    return handle, gid, tenant_id, product_id


def test_revoked_and_expired_grants_stop_at_once(city: City) -> None:
    _, gid, tenant_id, product_id = _granted(city)
    r = city.client.delete(f"/api/v1/grants/{gid}", headers=city.headers("city-management"))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    with transaction(city.session_factory) as s:
        assert grant_conditions(s, tenant_id, product_id, "infer") is None
    _, gid2, tenant_id, product_id = _granted(city)
    with transaction(city.session_factory) as s:
        assert grant_conditions(s, tenant_id, product_id, "infer") is not None
        s.execute(
            update(Grant).where(Grant.id == gid2).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with transaction(city.session_factory) as s:
        assert grant_conditions(s, tenant_id, product_id, "infer") is None
    assert (
        city.client.get(f"/api/v1/grants/{gid2}", headers=city.headers("parkeasy")).json()["status"]
        == "expired"
    )


def test_grants_are_seen_by_grantee_owner_and_operator_only(city: City) -> None:
    _, gid, _, _ = _granted(city)
    for who, status in (
        ("parkeasy", 200),
        ("city-management", 200),
        ("data-bureau", 200),
        ("tourism", 404),
    ):
        assert (
            city.client.get(f"/api/v1/grants/{gid}", headers=city.headers(who)).status_code
            == status
        )
    assert (
        city.client.delete(f"/api/v1/grants/{gid}", headers=city.headers("tourism")).status_code
        == 404
    )
    listed = city.client.get("/api/v1/grants", headers=city.headers("tourism")).json()
    assert gid not in {g["id"] for g in listed["data"]}


def test_every_decision_is_audited(city: City) -> None:
    _, gid, _, _ = _granted(city)
    city.client.delete(f"/api/v1/grants/{gid}", headers=city.headers("parkeasy"))
    actions = [
        e["action"]
        for e in city.client.get(
            "/api/v1/audit?per_page=100", headers=city.headers("data-bureau")
        ).json()["data"]
    ]
    for action in ("access.request", "access.approve", "grant.revoke"):
        assert action in actions


def test_cli_lists_approves_and_revokes(city: City, settings) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from marketplace.cli import app as cli

    def run(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(cli, ["--database-url", settings.database_url, "access", *args])
        return r.exit_code, r.output

    handle = city.product("health", tier="confidential")
    rid = _request(city, "xihu-district", handle).json()["id"]
    code, out = run("requests", "--state", "pending")
    assert code == 0 and rid in out
    code, out = run("approve", rid, "--reason", "epidemic response")
    assert code == 0 and "approved" in out
    gid = out.rsplit("grant ", 1)[1].strip()
    assert (
        city.client.get(f"/api/v1/grants/{gid}", headers=city.headers("xihu-district")).json()[
            "status"
        ]
        == "active"
    )
    code, out = run("revoke", gid, "--reason", "done")
    assert code == 0
    assert (
        city.client.get(f"/api/v1/grants/{gid}", headers=city.headers("xihu-district")).json()[
            "status"
        ]
        == "revoked"
    )
    code, out = run("approve", "ar_missing", "--reason", "x")
    assert code == 1 and "not found" in out
