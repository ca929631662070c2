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
