"""Keys never appear in logs or error bodies; they are listed by prefix only."""

from __future__ import annotations

import logging

import pytest

from tests.utils.city import City


def test_no_key_reaches_logs_or_bodies(city: City, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    good = city.key("parkeasy", scopes=["catalog:read"])
    admin = city.keys["parkeasy"]
    key_id = good.split("_")[1]
    forged = f"cbk_{key_id}_" + "Z" * 43  # right id, wrong secret: must not be echoed either
    bodies: list[str] = []
    calls = [
        ("GET", "/api/v1/me", {"Authorization": f"Bearer {good}"}, None),
        ("GET", "/api/v1/me", {"X-API-Key": forged}, None),
        ("GET", "/api/v1/me", {"Authorization": f"Token {good}"}, None),
        ("GET", "/api/v1/keys", {"X-API-Key": good}, None),  # 403: lacks admin
        ("POST", "/api/v1/products", {"X-API-Key": admin}, {"name": "Bad Name"}),  # 422
        ("GET", "/api/v1/products/traffic-police.signal-timing-plans", {"X-API-Key": admin}, None),
        ("GET", "/api/v1/keys", {"X-API-Key": admin}, None),
        ("POST", f"/api/v1/keys/{key_id}/rotate", {"X-API-Key": admin}, None),
        ("GET", f"/api/v1/nowhere?key={good}", {"X-API-Key": admin}, None),
        ("POST", "/api/v1/keys", {"X-API-Key": admin}, {"scopes": ["infer"]}),
    ]
    issued: list[str] = []
    for method, path, headers, body in calls:
        r = city.client.request(method, path, headers=headers, json=body)
        if path.endswith("/rotate") or (path == "/api/v1/keys" and method == "POST"):
            issued.append(r.json()["token"])  # the one place a secret is shown: its creation
            continue
        bodies.append(r.text)
    secrets = [t.split("_", 2)[2] for t in (good, admin, forged, *issued)]
    # Everything the server side logged (the test's own HTTP client logs the URLs it sends).
    logged = "\n".join(
        f"{rec.getMessage()} {rec.exc_text or ''} {rec.args!r}"
        for rec in caplog.records
        if not rec.name.startswith("httpx")
    )
    assert logged  # the capture saw the server's records
    audit = city.client.get("/api/v1/audit?per_page=100", headers={"X-API-Key": admin}).text
    for secret in secrets:
        assert secret not in logged
        assert all(secret not in b for b in bodies)
        assert secret not in audit
    listing = city.client.get("/api/v1/keys", headers={"X-API-Key": admin}).json()["data"]
    assert all(k["prefix"] == f"cbk_{k['id']}_" for k in listing)
    assert any(k["last_used_at"] for k in listing)


def test_settings_never_show_their_secrets() -> None:
    """Settings reach tracebacks and debug output by their repr: no password, secret or key."""
    from marketplace.config import BillingSettings, OIDCSettings, Settings, StripeSettings

    cfg = Settings(
        database_url="postgresql://citybrain:db-pass-1@db.city:5432/citybrain",
        billing=BillingSettings(database_url="postgresql://usage:db-pass-2@pooler:6432/citybrain"),
        oidc=OIDCSettings(server_url="https://sso.city", client_secret="oidc-secret-3"),
        stripe=StripeSettings(api_key="sk_live_stripe-key-4"),
    )
    shown = "\n".join([repr(cfg), str(cfg), f"{cfg!r}", repr(cfg.billing), repr(cfg.oidc)])
    for secret in ("db-pass-1", "db-pass-2", "oidc-secret-3", "stripe-key-4"):
        assert secret not in shown
    assert "postgresql://citybrain:***@db.city:5432/citybrain" in shown  # still useful
    assert cfg.database_url.endswith(":db-pass-1@db.city:5432/citybrain")  # the value is intact
