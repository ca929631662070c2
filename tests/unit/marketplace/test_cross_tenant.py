"""Cross-tenant probe over every route of the OpenAPI document.

For each ordered pair of tenants (A owns, B probes), every route is called as B:
- a route that addresses one of A's resources B may not see (a hidden product, its versions,
  A's keys) must answer exactly as it does for a resource that does not exist (same status,
  same body but for the request id), and must leave the resource unchanged;
- every route's answer must not mention A's hidden resources at all.
Routes are taken from the app's OpenAPI document, so routes added later are probed too: a route
with a path parameter this test does not know fails the test until a substitution is added.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from tests.utils.city import City

# One of each kind: operator, agency, district, developer.
PROBED = ["data-bureau", "traffic-police", "xihu-district", "parkeasy"]
GOVERNMENT = {"data-bureau", "traffic-police", "xihu-district"}
PAIRS = [(a, b) for a, b in itertools.permutations(PROBED, 2)]

SAMPLE_STRINGS = {
    "name": "probe-made",
    "kind": "dataset",
    "domain": "traffic",
    "tier": "public",
    "title": "Probe",
    "slug": "probe-tenant",
    "note": "probe",
    "expires_in": "1d",
}


def _sample(schema: dict[str, Any], components: dict[str, Any], field: str = "") -> Any:
    """A small valid instance of a JSON schema from the OpenAPI document."""
    if "$ref" in schema:
        return _sample(components[schema["$ref"].rsplit("/", 1)[1]], components, field)
    if "anyOf" in schema:
        return _sample(schema["anyOf"][0], components, field)
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {
            k: _sample(v, components, k)
            for k, v in props.items()
            if k in schema.get("required", props)
        }
    if kind == "array":
        return ["catalog:read"] if field == "scopes" else []
    if kind == "integer":
        return 1
    if kind == "boolean":
        return True
    if kind == "number":
        return 1.0
    return SAMPLE_STRINGS.get(field, "probe")


def _hidden_tiers(owner: str, viewer: str) -> list[str]:
    hidden = ["secret"]
    if viewer not in GOVERNMENT:
        hidden.append("confidential")
    return hidden


def _strip(r: Any) -> tuple[int, Any]:
    try:
        body = r.json()
    except ValueError:
        return r.status_code, r.text
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "request_id"}
    return r.status_code, body


def _routes(city: City) -> list[tuple[str, str, dict[str, Any]]]:
    spec = city.client.get("/openapi.json").json()
    out = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            out.append((method.upper(), path, op))
    return out


@pytest.mark.parametrize(("owner", "prober"), PAIRS)
def test_nothing_of_a_tenant_leaks_to_another(city: City, owner: str, prober: str) -> None:
    spec = city.client.get("/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    hidden: list[str] = []
    for tier in _hidden_tiers(owner, prober):
        handle = city.product(
            owner, tier=tier, name=f"hidden-{tier}", title=f"Hidden {tier} zebra", tags=["zebra"]
        )
        city.client.post(
            f"/api/v1/products/{handle}/versions", json={}, headers=city.headers(owner)
        )
        hidden.append(handle)
    draft = city.product(
        owner, tier="public", publish=False, name="hidden-draft", title="Draft zebra"
    )
    city.client.post(f"/api/v1/products/{draft}/versions", json={}, headers=city.headers(owner))
    hidden.append(draft)
    owner_key = city.key(owner, scopes=["infer"])
    owner_key_id = owner_key.split("_")[1]
    secrets_ = [owner_key.split("_", 2)[2], city.keys[owner].split("_", 2)[2]]
    before = {
        h: city.client.get(f"/api/v1/products/{h}", headers=city.headers(owner)).json()
        for h in hidden
    }

    h = city.headers(prober)
    probed = 0
    for method, path, op in _routes(city):
        params = re.findall(r"{(\w+)}", path)
        body = None
        if "requestBody" in op:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            body = _sample(schema, components)
        query = {"owner": owner, "tenant": owner, "q": "zebra", "per_page": 100}
        if not params:
            if method != "GET":
                continue  # creating things of one's own cannot reach another tenant's
            r = city.client.get(path, params=query, headers=h)
            text = r.text
            needles = [*hidden, owner_key_id, *secrets_]
            if path == "/api/v1/audit" and prober == "data-bureau":
                # The operator reads every tenant's audit entries (drafts and key ids
                # included), but never the names of secret products, nor any secret.
                needles = [n for n in needles if "secret" in n or n in secrets_]
            for needle in needles:
                assert needle not in text, (path, needle)
            probed += 1
            continue
        targets: list[tuple[dict[str, str], dict[str, str]]] = []
        for handle in hidden:
            subs, missing = {}, {}
            for p in params:
                if p == "handle":
                    subs[p], missing[p] = handle, f"{owner}.no-such-product"
                elif p == "version":
                    subs[p] = missing[p] = "1"
                elif p == "key_id":
                    break
                else:
                    pytest.fail(f"route {method} {path}: teach this probe the parameter {p!r}")
            else:
                targets.append((subs, missing))
        if params == ["key_id"]:
            targets.append(({"key_id": owner_key_id}, {"key_id": "0123456789ab"}))
        for subs, missing in targets:
            real = city.client.request(
                method, path.format(**subs), json=body, params=query, headers=h
            )
            fake = city.client.request(
                method, path.format(**missing), json=body, params=query, headers=h
            )
            got, expected = _strip(real), _strip(fake)
            if isinstance(got[1], dict) and "error" in got[1]:
                for s, m in zip(subs.values(), missing.values(), strict=True):
                    got[1]["error"] = got[1]["error"].replace(s, m)
            assert got == expected, (method, path, subs)
            # Equal to the missing case is what matters; a success would mean it acted on A.
            assert real.status_code >= 400, (method, path, real.status_code)
            probed += 1
    assert probed > 20
    # Nothing changed, and the owner's key still works.
    after = {
        h_: city.client.get(f"/api/v1/products/{h_}", headers=city.headers(owner)).json()
        for h_ in hidden
    }
    assert after == before
    assert city.client.get("/api/v1/me", headers={"X-API-Key": owner_key}).status_code == 200
