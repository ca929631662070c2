"""Portal login with bearer JWTs from a real OpenID provider shaped like a Keycloak realm.

The provider is panva's oidc-provider (tests/oidc/server.mjs), serving Keycloak's URL layout
and claims; the platform validates its tokens with python-keycloak exactly as against Keycloak.
Tokens go wherever API keys go (one authentication function): /api/v1, /v2 inference (metered
to the user's tenant), metadata and readiness, and model uploads.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from sqlalchemy import select

from billing.tables import usage_event
from marketplace.api.app import create_app
from marketplace.config import OIDCSettings, Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from marketplace.tenants.service import get_tenant_by_slug
from tests.unit.gateway.conftest import UPLOAD, Models
from tests.unit.model_store.factories import make_torchscript_model
from tests.utils.city import City
from tests.utils.oidc import oidc_provider

SECRET = "test-secret"


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider() as url:
        yield url


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


# --------------------------------------------------------------------------- one authentication
# Portal users' tokens go where API keys go: /v2 (the inference fast path, metadata, readiness)
# and model uploads, through the same authentication function.

INFER_BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}


@pytest.fixture
def models(portal, session_factory, tmp_path: Path) -> Models:  # type: ignore[no-untyped-def]
    client, keys = portal
    artifact, manifest = make_torchscript_model(tmp_path)
    city = City(client=client, keys=keys, session_factory=session_factory)
    m = Models(city=city, tmp=tmp_path, public="", artifact=artifact, manifest=manifest)
    m.public = m.model("traffic-police")
    return m


def _usage(models: Models, tenant: str) -> list[Any]:
    """The usage events of ``tenant`` in the database, once the spool is flushed."""
    models.city.client.app.state.gateway.usage.flusher.flush_once()  # type: ignore[attr-defined]
    with transaction(models.city.session_factory) as s:
        tenant_id = get_tenant_by_slug(s, tenant).id
        return list(s.execute(select(usage_event).where(usage_event.c.tenant_id == tenant_id)))


def test_a_portal_token_calls_a_model_and_the_call_is_metered_to_its_tenant(
    models: Models, provider: str
) -> None:
    client, handle = models.city.client, models.public
    member = bearer(token(provider, "parkeasy-member"))
    assert _usage(models, "parkeasy") == []

    r = client.post(
        f"/v2/models/{handle}/infer",
        json=INFER_BODY,
        headers={**member, "Idempotency-Key": "portal-call-1"},
    )

    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [2.0, 4.0, 6.0]
    events = _usage(models, "parkeasy")
    assert [(e.id, e.product, e.key_id, e.unit) for e in events] == [
        ("portal-call-1", handle, None, "call")
    ]
    assert _usage(models, "traffic-police") == []  # the owner is not billed for it
    # Metadata and readiness take the same token.
    meta = client.get(f"/v2/models/{handle}", headers=member)
    assert meta.status_code == 200 and meta.json()["name"] == handle
    assert client.get(f"/v2/models/{handle}/ready", headers=member).status_code == 200
    # The tier policy applies to users as to keys: a restricted model needs a grant.
    restricted = models.model("traffic-police", tier="restricted")
    r = client.post(f"/v2/models/{restricted}/infer", json=INFER_BODY, headers=member)
    assert r.status_code == 403 and "access grant" in r.json()["error"]
    assert len(_usage(models, "parkeasy")) == 1


def test_a_bad_token_gets_401_on_v2_and_is_not_metered(models: Models, provider: str) -> None:
    client, handle = models.city.client, models.public
    real = token(provider, "parkeasy-member")
    header = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))
    claims = jwt.decode(real, options={"verify_signature": False})
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": header["kid"]})
    wrong_audience = token(provider, "wrong-audience")
    for bad in (forged, wrong_audience, real[:-4] + "AAAA", "eyJub3QiOiJhIHRva2VuIn0.e30.e30"):
        r = client.post(f"/v2/models/{handle}/infer", json=INFER_BODY, headers=bearer(bad))
        assert r.status_code == 401, (bad, r.text)
        assert r.json()["code"] == "Unauthenticated"
        assert client.get(f"/v2/models/{handle}", headers=bearer(bad)).status_code == 401
    assert _usage(models, "parkeasy") == []


def test_a_portal_token_uploads_a_model_version_when_its_role_grants_catalog_write(
    models: Models, provider: str
) -> None:
    client = models.city.client
    admin = bearer(token(provider, "parkeasy-admin"))  # tenant-admin: catalog:write
    r = client.post(
        "/api/v1/products",
        headers=admin,
        json={
            "name": "portal-model",
            "kind": "model",
            "title": "Portal model",
            "domain": "traffic",
        },
    )
    assert r.status_code == 201, r.text
    handle = r.json()["handle"]
    manifest = json.dumps(models.manifest.model_dump(mode="json"))
    upload = {"Content-Type": "application/octet-stream", "X-Model-Manifest": manifest}

    member = bearer(token(provider, "parkeasy-member"))  # member: no catalog:write
    r = client.post(
        UPLOAD.format(handle), content=models.artifact.read_bytes(), headers={**member, **upload}
    )
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "Forbidden" and "catalog:write" in r.json()["error"]

    r = client.post(
        UPLOAD.format(handle), content=models.artifact.read_bytes(), headers={**admin, **upload}
    )
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1
    versions = client.get(f"/api/v1/products/{handle}/versions", headers=member).json()
    assert [v["version"] for v in versions["data"]] == [1]
    audit = client.get("/api/v1/audit?per_page=100", headers=admin).json()["data"]
    assert any(
        e["action"] == "version.create" and e["actor"] == "user:parkeasy-admin" for e in audit
    ), [e["action"] for e in audit]
