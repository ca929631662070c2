"""Portal login with bearer JWTs from a real OpenID provider shaped like a Keycloak realm.

The provider is panva's oidc-provider (tests/oidc/server.mjs), serving Keycloak's URL layout
and claims; the platform validates its tokens with python-keycloak exactly as against Keycloak.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from marketplace.api.app import create_app
from marketplace.config import OIDCSettings, Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city

OIDC_DIR = Path(__file__).resolve().parents[1] / "oidc"
SECRET = "test-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    node = shutil.which("node")
    if node is None or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail(
            "the test OIDC provider is not installed: run `npm ci` in tests/oidc (make test does)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [node, str(OIDC_DIR / "server.mjs"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY"), f"OIDC provider did not start: {line!r}"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def token(provider: str, client_id: str, realm: str = "citybrain") -> str:
    r = httpx.post(
        f"{provider}/realms/{realm}/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _client(settings: Settings, provider: str, **oidc: object) -> TestClient:
    cfg = settings.model_copy(
        update={"oidc": OIDCSettings(server_url=provider, realm="citybrain", leeway_s=0, **oidc)}  # type: ignore[arg-type]
    )
    return TestClient(create_app(cfg), raise_server_exceptions=False)


@pytest.fixture
def portal(
    settings: Settings, provider: str, session_factory
) -> Iterator[tuple[TestClient, dict[str, str]]]:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as s:
        keys = seed_demo_city(s).keys
    with _client(settings, provider) as c:
        yield c, keys


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_a_valid_token_signs_in_the_user_of_its_tenant(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    me = client.get("/api/v1/me", headers=bearer(token(provider, "parkeasy-admin")))
    assert me.status_code == 200, me.text
    assert me.json()["tenant"]["slug"] == "parkeasy" and "admin" in me.json()["scopes"]
    r = client.post(
        "/api/v1/products",
        headers=bearer(token(provider, "parkeasy-admin")),
        json={
            "name": "portal-made",
            "kind": "dataset",
            "title": "Made in the portal",
            "domain": "traffic",
        },
    )
    assert r.status_code == 201
    audit = client.get("/api/v1/audit", headers=bearer(token(provider, "parkeasy-admin"))).json()[
        "data"
    ]
    assert any(
        e["action"] == "product.create" and e["actor"] == "user:parkeasy-admin" for e in audit
    )


def test_roles_map_to_scopes(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    member = bearer(token(provider, "parkeasy-member"))
    assert client.get("/api/v1/products", headers=member).status_code == 200
    r = client.post(
        "/api/v1/products",
        headers=member,
        json={"name": "nope", "kind": "dataset", "title": "N", "domain": "traffic"},
    )
    assert r.status_code == 403 and "catalog:write" in r.json()["error"]
    assert client.get("/api/v1/keys", headers=member).status_code == 403
    op = bearer(token(provider, "operator-admin"))
    assert client.get("/api/v1/me", headers=op).json()["tenant"]["kind"] == "operator"


def test_roles_and_tenant_are_enforced(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    r = client.get("/api/v1/me", headers=bearer(token(provider, "parkeasy-claims-operator")))
    assert r.status_code == 403 and "operator" in r.json()["error"]
    r = client.get("/api/v1/me", headers=bearer(token(provider, "no-roles")))
    assert r.status_code == 403
    r = client.get("/api/v1/me", headers=bearer(token(provider, "unknown-tenant")))
    assert r.status_code == 401
    # A member of one tenant sees another tenant's secret product as missing.
    secret = client.get(
        "/api/v1/products/traffic-police.signal-timing-plans",
        headers=bearer(token(provider, "parkeasy-member")),
    )
    own = client.get(
        "/api/v1/products/traffic-police.signal-timing-plans",
        headers=bearer(token(provider, "traffic-member")),
    )
    assert secret.status_code == 404 and own.status_code == 200


def test_expired_token_gets_401(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    t = token(provider, "short-lived")  # 4 s lifetime; the platform allows no leeway here
    assert client.get("/api/v1/me", headers=bearer(t)).status_code == 200
    # Past its expiry by its own clock (the valid call above may have been slow to come).
    expires = jwt.decode(t, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expires - time.time()) + 1.2)
    r = client.get("/api/v1/me", headers=bearer(t))
    assert r.status_code == 401 and r.json()["code"] == "Unauthenticated"


def test_wrong_issuer_and_wrong_audience_get_401(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    # Same signing key, another realm: only the issuer is wrong.
    r = client.get(
        "/api/v1/me", headers=bearer(token(provider, "parkeasy-admin", realm="elsewhere"))
    )
    assert r.status_code == 401
    r = client.get("/api/v1/me", headers=bearer(token(provider, "wrong-audience")))
    assert r.status_code == 401


def test_a_token_signed_by_another_key_gets_401(portal, provider: str) -> None:  # type: ignore[no-untyped-def]
    client, _ = portal
    real = token(provider, "operator-admin")
    header = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))
    claims = jwt.decode(real, options={"verify_signature": False})
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": header["kid"]})
    r = client.get("/api/v1/me", headers=bearer(forged))
    assert r.status_code == 401
    unsigned = jwt.encode(claims, "", algorithm="none")
    assert client.get("/api/v1/me", headers=bearer(unsigned)).status_code == 401


def test_api_keys_keep_working_beside_tokens(portal) -> None:  # type: ignore[no-untyped-def]
    client, keys = portal
    r = client.get("/api/v1/me", headers=bearer(keys["tourism"]))
    assert r.status_code == 200 and r.json()["tenant"]["slug"] == "tourism"


def test_introspection_confirms_active_tokens(
    settings: Settings, provider: str, session_factory
) -> None:  # type: ignore[no-untyped-def]
    with transaction(session_factory) as s:
        seed_demo_city(s)
    with _client(
        settings, provider, introspect=True, client_id="parkeasy-admin", client_secret=SECRET
    ) as c:
        assert (
            c.get("/api/v1/me", headers=bearer(token(provider, "parkeasy-member"))).status_code
            == 200
        )
