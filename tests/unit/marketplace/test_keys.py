"""API keys: format, shown once, hashed at rest, expiry, rotation with grace, revocation, scopes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from marketplace.db import transaction
from marketplace.keys.service import KEY_RE
from marketplace.tables import ApiKey, utcnow
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_created_key_is_shown_once_and_stored_only_as_a_hash(city: City) -> None:
    r = city.client.post(
        "/api/v1/keys",
        json={"scopes": ["catalog:read", "infer"], "name": "ci"},
        headers=city.headers("parkeasy"),
    )
    assert r.status_code == 201, r.text
    body = r.json()
    token = body["token"]
    m = KEY_RE.match(token)
    assert m and m.group(1) == body["id"]
    assert body["prefix"] == f"cbk_{body['id']}_"
    secret = m.group(2)
    # The listing never shows the token again.
    listing = city.client.get("/api/v1/keys", headers=city.headers("parkeasy"))
    assert listing.status_code == 200
    assert secret not in listing.text and "token" not in listing.json()["data"][0]
    # Nothing in the database holds the secret.
    with transaction(city.session_factory) as s:
        row = s.get_one(ApiKey, body["id"])
        assert secret not in (row.secret_hash, row.name)
        assert len(row.secret_hash) == 64
    # And it works.
    me = city.client.get("/api/v1/me", headers=_bearer(token))
    assert me.status_code == 200
    assert me.json()["tenant"]["slug"] == "parkeasy"
    assert me.json()["scopes"] == ["catalog:read", "infer"]


def test_x_api_key_header_works_too(city: City) -> None:
    r = city.client.get("/api/v1/me", headers={"X-API-Key": city.keys["tourism"]})
    assert r.status_code == 200 and r.json()["tenant"]["slug"] == "tourism"


def test_missing_malformed_unknown_wrong_secret_keys_get_401(city: City) -> None:
    good = city.keys["tourism"]
    key_id = KEY_RE.match(good).group(1)  # type: ignore[union-attr]
    cases = [
        {},
        _bearer("not-a-key"),
        _bearer("cbk_000000000000_" + "a" * 43),
        _bearer(f"cbk_{key_id}_" + "b" * 43),
        {"Authorization": f"Basic {good}"},
    ]
    for headers in cases:
        r = city.client.get("/api/v1/me", headers=headers)
        assert r.status_code == 401, headers
        body = r.json()
        assert body["code"] == "Unauthenticated" and body["request_id"] == r.headers["x-request-id"]
        assert good not in r.text


def test_expired_key_gets_401(city: City) -> None:
    token = city.key("health", scopes=["catalog:read"], expires_in=timedelta(days=30))
    assert city.client.get("/api/v1/me", headers=_bearer(token)).status_code == 200
    key_id = KEY_RE.match(token).group(1)  # type: ignore[union-attr]
    with transaction(city.session_factory) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = city.client.get("/api/v1/me", headers=_bearer(token))
    assert r.status_code == 401
    listed = city.client.get(f"/api/v1/keys/{key_id}", headers=city.headers("health"))
    assert listed.json()["status"] == "expired"


def test_revoked_key_stops_at_once(city: City) -> None:
    token = city.key("parkeasy", scopes=["catalog:read"])
    key_id = KEY_RE.match(token).group(1)  # type: ignore[union-attr]
    assert city.client.get("/api/v1/me", headers=_bearer(token)).status_code == 200
    r = city.client.delete(f"/api/v1/keys/{key_id}", headers=city.headers("parkeasy"))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert city.client.get("/api/v1/me", headers=_bearer(token)).status_code == 401


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(city: City) -> None:
    old = city.key("tourism", scopes=["catalog:read"])
    key_id = KEY_RE.match(old).group(1)  # type: ignore[union-attr]
    r = city.client.post(f"/api/v1/keys/{key_id}/rotate", headers=city.headers("tourism"))
    assert r.status_code == 200
    new = r.json()["token"]
    assert new != old and KEY_RE.match(new).group(1) == key_id  # type: ignore[union-attr]
    assert city.client.get("/api/v1/me", headers=_bearer(new)).status_code == 200
    assert city.client.get("/api/v1/me", headers=_bearer(old)).status_code == 200
    with transaction(city.session_factory) as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(previous_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert city.client.get("/api/v1/me", headers=_bearer(old)).status_code == 401
    assert city.client.get("/api/v1/me", headers=_bearer(new)).status_code == 200


def test_missing_scope_gets_403(city: City) -> None:
    token = city.key("parkeasy", scopes=["infer"])
    r = city.client.get("/api/v1/keys", headers=_bearer(token))
    assert r.status_code == 403 and r.json()["code"] == "Forbidden"
    assert "admin" in r.json()["error"]
    r = city.client.post(
        "/api/v1/products",
        headers=_bearer(token),
        json={"name": "x1", "kind": "dataset", "title": "X", "domain": "traffic"},
    )
    assert r.status_code == 403


def test_unknown_scope_and_bad_duration_are_422(city: City) -> None:
    r = city.client.post(
        "/api/v1/keys", json={"scopes": ["root"]}, headers=city.headers("parkeasy")
    )
    assert r.status_code == 422 and "root" in r.json()["error"]
    r = city.client.post(
        "/api/v1/keys",
        json={"scopes": ["infer"], "expires_in": "soon"},
        headers=city.headers("parkeasy"),
    )
    assert r.status_code == 422 and "soon" in r.json()["error"]


def test_another_tenants_key_reads_as_missing(city: City) -> None:
    token = city.key("traffic-police", scopes=["infer"])
    key_id = KEY_RE.match(token).group(1)  # type: ignore[union-attr]
    for method, path in (
        ("GET", f"/api/v1/keys/{key_id}"),
        ("DELETE", f"/api/v1/keys/{key_id}"),
        ("POST", f"/api/v1/keys/{key_id}/rotate"),
    ):
        r = city.client.request(method, path, headers=city.headers("parkeasy"))
        missing = city.client.request(
            method, path.replace(key_id, "0123456789ab"), headers=city.headers("parkeasy")
        )
        assert r.status_code == missing.status_code == 404
    # Still working: nothing was revoked or rotated by the other tenant.
    assert city.client.get("/api/v1/me", headers=_bearer(token)).status_code == 200


def test_last_used_time_is_tracked(city: City) -> None:
    token = city.key("tourism", scopes=["catalog:read"])
    key_id = KEY_RE.match(token).group(1)  # type: ignore[union-attr]
    with transaction(city.session_factory) as s:
        assert s.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id)) is None
    city.client.get("/api/v1/me", headers=_bearer(token))
    with transaction(city.session_factory) as s:
        assert s.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id)) is not None
