"""Cross-tenant probe over every route of the OpenAPI document.

For each ordered pair of the demo city's tenants (A owns, B probes), A publishes a product of
every tier (plus a draft, keys, an access request, a grant, a subscription, a billing document,
a quota and metered usage); then B sees exactly the listings the tier table allows, with
search facet counts to match and none of A's usage, and every route is called as B:
- a route that addresses one of A's resources B may not see (a hidden product, its versions,
  A's keys) must answer exactly as it does for a resource that does not exist (same status,
  same body but for the request id), and must leave the resource unchanged;
- every route's answer must not mention A's hidden resources at all.
Routes are taken from the app's OpenAPI document, so routes added later are probed too: a route
with a path parameter this test does not know fails the test until a substitution is added.

Download routes (a version's bytes) are probed once more against the download rule itself: for
every product (each tier, downloadable or not, a draft) × every tenant (with and without the
use scope, with a grant of the use scope, of another scope, or none) and anonymous × every
route in ``DOWNLOAD_ROUTES``, the download succeeds exactly when the rule says it may. A
download route the app serves but ``DOWNLOAD_ROUTES`` lacks fails the test until it is added.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from billing.tables import usage_event
from marketplace.db import transaction
from marketplace.seed import TENANTS
from tests.unit.model_store.factories import make_torchscript_model
from tests.utils.city import City
from tests.utils.usage import insert_usage_rows

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

# Every ordered pair of the demo city's tenants (all but parkeasy are government).
PROBED = [slug for slug, *_ in TENANTS]
GOVERNMENT = {slug for slug, _, kind, _ in TENANTS if kind != "developer"}
PAIRS = [(a, b) for a, b in itertools.permutations(PROBED, 2)]
TIERS = ("public", "restricted", "confidential", "secret")

# Path parameters that name no resource of their own.
FIXED_PARAMS = {"version": "1"}

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


def _billing_ids(city: City, owner: str, prober: str) -> dict[str, str]:
    """Make the owner a subscription and a billing document (usage, plan, a closed period)."""
    from decimal import Decimal

    from sqlalchemy import select

    from billing.invoices import RunConfig
    from billing.periods import Period
    from billing.plan_store import set_plan
    from billing.plans import PricePlan
    from billing.tables import billing_document
    from marketplace.billing.service import run_billing
    from marketplace.tables import Product, Tenant

    handle = next(  # public, and its owner is neither A nor B
        h
        for h in (
            "environment.air-quality",
            "tourism.scenic-spot-visitors",
            "parkeasy.parking-availability",
        )
        if h.split(".")[0] not in (owner, prober)
    )
    r = city.client.post(
        "/api/v1/subscriptions", json={"product": handle}, headers=city.headers(owner)
    )
    assert r.status_code == 201, r.text
    slug, name = handle.split(".")
    at = datetime(2026, 9, 10, tzinfo=UTC)
    with transaction(city.session_factory) as s:
        product = s.scalars(
            select(Product).join(Tenant).where(Tenant.slug == slug, Product.name == name)
        ).one()
        tenant_id = s.scalars(select(Tenant.id).where(Tenant.slug == owner)).one()
        plan = PricePlan.from_dict({"kind": "per_unit", "unit": "call", "unit_price": "0.01"})
        set_plan(s.connection(), product.id, plan, now=datetime(2026, 8, 1, tzinfo=UTC))
        s.execute(
            insert(usage_event).values(
                tenant_id=tenant_id,
                id="probe-usage",
                key_id=None,
                product=handle,
                product_id=product.id,
                version=1,
                unit="call",
                quantity=Decimal(3),
                at=at,
                latency_ms=1.0,
                request_id="probe",
                received_at=at,
            )
        )
        run_billing(
            s, Period.parse("2026-09"), now=datetime(2026, 10, 1, 1, tzinfo=UTC), config=RunConfig()
        )
        doc_id = s.execute(
            select(billing_document.c.id).where(billing_document.c.tenant_id == tenant_id)
        ).scalar_one()
    return {"subscription_id": str(r.json()["id"]), "document_id": str(doc_id)}


def _usage(city: City, owner: str, handles: list[str]) -> None:
    insert_usage_rows(
        city.session_factory, owner, [{"product": h, "request_id": "probe"} for h in handles]
    )


@pytest.mark.parametrize(("owner", "prober"), PAIRS)
def test_nothing_of_a_tenant_leaks_to_another(city: City, owner: str, prober: str) -> None:
    spec = city.client.get("/openapi.json").json()
    components = spec.get("components", {}).get("schemas", {})
    hidden: list[str] = []
    visible: dict[str, str] = {}
    hidden_tiers = _hidden_tiers(owner, prober)
    for tier in TIERS:  # one published product of every tier
        handle = city.product(
            owner, tier=tier, name=f"probe-{tier}", title=f"Probe {tier} zebra", tags=["zebra"]
        )
        city.client.post(
            f"/api/v1/products/{handle}/versions", json={}, headers=city.headers(owner)
        )
        if tier in hidden_tiers:
            hidden.append(handle)
        else:
            visible[handle] = tier
    draft = city.product(
        owner, tier="public", publish=False, name="hidden-draft", title="Draft zebra"
    )
    city.client.post(f"/api/v1/products/{draft}/versions", json={}, headers=city.headers(owner))
    hidden.append(draft)
    owner_key = city.key(owner, scopes=["infer"])
    owner_key_id = owner_key.split("_")[1]
    secrets_ = [owner_key.split("_", 2)[2], city.keys[owner].split("_", 2)[2]]
    # A's access request and grant for a third tenant's restricted product: hidden from B
    # unless B is the operator (who oversees all requests and grants).
    resources: dict[str, list[tuple[str, str]]] = {
        "handle": [(h_, f"{owner}.no-such-product") for h_ in hidden],
        "name": [(h_, f"{owner}.no-such-product") for h_ in hidden],
        "key_id": [(owner_key_id, "0123456789ab")],
        "request_id": [],
        "grant_id": [],
    }
    if prober != "data-bureau":
        third = next(t for t in ("tourism", "health", "environment") if t not in (owner, prober))
        shared = city.product(third, tier="restricted", name="shared-thing")
        req = city.client.post(
            "/api/v1/access-requests",
            json={"product": shared, "purpose": "probe", "scopes": ["infer"]},
            headers=city.headers(owner),
        ).json()
        grant_id = city.client.post(
            f"/api/v1/access-requests/{req['id']}/approve",
            json={"reason": "ok"},
            headers=city.headers(third),
        ).json()["grant_id"]
        resources["request_id"] = [(req["id"], "ar_00000000deadbeef")]
        resources["grant_id"] = [(grant_id, "gr_00000000deadbeef")]
        secrets_ += [req["id"], grant_id]
    # A's subscription and billing document; the operator reads every tenant's documents.
    billing_ids = _billing_ids(city, owner, prober)
    resources["subscription_id"] = [(billing_ids["subscription_id"], "999999")]
    for param in ("invoice_id", "statement_id"):
        resources[param] = (
            [] if prober == "data-bureau" else [(billing_ids["document_id"], "999999")]
        )
    # A limit A set on its own key: hidden from B unless B is the operator.
    quota = city.client.post(
        "/api/v1/quotas",
        json={"key_id": owner_key_id, "metric": "requests", "window": "minute", "amount": 5},
        headers=city.headers(owner),
    )
    assert quota.status_code == 201, quota.text
    resources["quota_id"] = (
        [] if prober == "data-bureau" else [(quota.json()["id"], "ql_00000000deadbeef")]
    )
    if prober != "data-bureau":
        secrets_.append(quota.json()["id"])
    before = {
        h: city.client.get(f"/api/v1/products/{h}", headers=city.headers(owner)).json()
        for h in hidden
    }

    h = city.headers(prober)
    # What B may see, it sees; facet counts count exactly that.
    for handle in visible:
        assert city.client.get(f"/api/v1/products/{handle}", headers=h).status_code == 200
    found = city.client.get("/api/v1/catalog/search", params={"q": "zebra"}, headers=h).json()
    expected_tiers: dict[str, int] = {}
    for tier in visible.values():
        expected_tiers[tier] = expected_tiers.get(tier, 0) + 1
    assert found["facets"]["tier"] == expected_tiers, (owner, prober)
    assert found["count"] == len(visible)
    # A's metered usage, of hidden and visible products alike, is A's alone.
    _usage(city, owner, [*hidden, *visible])
    usage = city.client.get("/api/v1/usage", params={"group_by": "product"}, headers=h).json()
    if prober == "data-bureau":
        # The operator sees every tenant's usage, but a secret product only as "(secret)".
        names = {r["product"] for r in usage["data"]}
        assert f"{owner}.probe-secret" not in names and f"{owner}.(secret)" in names
        assert names >= {h_ for h_ in [*hidden, *visible] if not h_.endswith("-secret")}
    else:
        assert usage == {"data": [], "count": 0}
    probed = 0
    for method, path, op in _routes(city):
        params = re.findall(r"{(\w+)}", path)
        sent: dict[str, Any] = {}
        if "requestBody" in op:
            content = op["requestBody"]["content"]
            if "application/json" in content:
                sent["json"] = _sample(content["application/json"]["schema"], components)
            else:  # a data upload: a small file and its schema
                sent["files"] = {"file": ("probe.csv", b"a\n1\n", "text/csv")}
                sent["data"] = {"schema": '{"columns": [{"name": "a"}]}'}
        query = {"owner": owner, "tenant": owner, "q": "zebra", "per_page": 100}
        if not params:
            if method != "GET":
                continue  # creating things of one's own cannot reach another tenant's
            r = city.client.get(path, params=query, headers=h)
            text = r.text
            needles = [*hidden, owner_key_id, *secrets_]
            if (
                path in ("/api/v1/audit", "/api/v1/quotas", "/api/v1/usage")
                and prober == "data-bureau"
            ):
                # The operator reads every tenant's audit, limits and usage (drafts and key ids
                # included), but never the names of secret products, nor any secret.
                needles = [n for n in needles if "secret" in n or n in secrets_]
            for needle in needles:
                assert needle not in text, (path, needle)
            probed += 1
            continue
        if path == "/api/3/action/{name}":
            probed += _probe_ckan(city, method, h, owner, hidden)
            continue
        varying = [p for p in params if p not in FIXED_PARAMS]
        unknown = [p for p in varying if p not in resources]
        if unknown or len(varying) != 1:
            pytest.fail(f"route {method} {path}: teach this probe the parameters {params!r}")
        targets = [
            ({varying[0]: real, **FIXED_PARAMS}, {varying[0]: absent, **FIXED_PARAMS})
            for real, absent in resources[varying[0]]
        ]
        for subs, missing in targets:
            real = city.client.request(method, path.format(**subs), params=query, headers=h, **sent)
            fake = city.client.request(
                method, path.format(**missing), params=query, headers=h, **sent
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


def _probe_ckan(city: City, method: str, h: dict[str, str], owner: str, hidden: list[str]) -> int:
    """CKAN's actions (``/api/3/action/{name}``): lists name none of A's hidden listings, and
    showing one answers exactly as showing a missing one."""

    def call(action: str, **params: Any) -> Any:
        if method == "GET":
            return city.client.get(f"/api/3/action/{action}", params=params, headers=h)
        return city.client.post(f"/api/3/action/{action}", json=params, headers=h)

    probed = 0
    for action in ("package_list", "tag_list", "organization_list"):
        r = call(action)
        assert r.status_code == 200, r.text
        assert not set(hidden) & set(r.json()["result"]), (method, action)
        probed += 1
    r = call("package_search", q="zebra", rows=100)
    assert not set(hidden) & {p["name"] for p in r.json()["result"]["results"]}
    for handle in hidden:
        real = call("package_show", id=handle)
        fake = call("package_show", id=f"{owner}.no-such-product")
        assert (real.status_code, real.json()) == (fake.status_code, fake.json()), handle
        assert real.status_code == 404
        probed += 1
    return probed


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True)
class DownloadRoute:
    """A route that hands out a version's bytes, and how to make a product that has some.

    Attributes:
        path: The route, with ``{handle}`` and ``{version}``.
        use_scope: The scope that using (so downloading) such a product takes.
        make: ``(city, owner, name, tier, downloadable, publish, tmp) -> (handle, bytes)``: a
            product of the route's kind with version 1 holding those bytes.
    """

    path: str
    use_scope: str
    make: Callable[[City, str, str, str, bool, bool, Path], tuple[str, bytes]]


def _model_with_artifact(
    city: City, owner: str, name: str, tier: str, downloadable: bool, publish: bool, tmp: Path
) -> tuple[str, bytes]:
    handle = city.product(
        owner, tier=tier, kind="model", name=name, publish=publish, downloadable=downloadable
    )
    artifact, manifest = make_torchscript_model(tmp)
    r = city.upload_model(owner, handle, artifact, manifest)
    assert r.status_code == 201, r.text
    return handle, artifact.read_bytes()


def _dataset_with_data(
    city: City, owner: str, name: str, tier: str, downloadable: bool, publish: bool, tmp: Path
) -> tuple[str, bytes]:
    """A dataset whose columns are all public: every reader downloads the same bytes."""
    from tests.utils.datasets import Datasets

    handle = Datasets(city).dataset(
        owner,
        tier=tier,
        publish=publish,
        data="station,pm25\nS-01,31.5\nS-02,40.0\n",
        schema={"columns": [{"name": "station"}, {"name": "pm25"}]},
        name=name,
        downloadable=downloadable,
    )
    r = city.client.get(f"/api/v1/products/{handle}/versions/1/data", headers=city.headers(owner))
    assert r.status_code == 200, r.text
    return handle, r.content


DOWNLOAD_ROUTES = [
    DownloadRoute(
        "/api/v1/products/{handle}/versions/{version}/artifact", "infer", _model_with_artifact
    ),
    DownloadRoute(
        "/api/v1/products/{handle}/versions/{version}/data", "data:read", _dataset_with_data
    ),
]
# Path endings that name a download, besides routes documented as answering other than JSON.
_DOWNLOAD_ENDINGS = ("artifact", "data", "download", "export")
# GET routes that answer something other than JSON but hand out no bytes of a product: the
# catalog's own metadata as RDF.
_METADATA_ROUTES = {"/api/v1/catalog/dcat", "/api/v1/products/{handle}/dcat"}


def test_every_download_route_is_probed(city: City) -> None:
    spec = city.client.get("/openapi.json").json()
    served = set()
    for path, item in spec["paths"].items():
        op = item.get("get")
        if op is None:
            continue
        content = op.get("responses", {}).get("200", {}).get("content", {})
        binary = any(kind != "application/json" for kind in content)
        if path in _METADATA_ROUTES:
            continue
        if binary or path.rsplit("/", 1)[-1] in _DOWNLOAD_ENDINGS:
            served.add(path)
    assert served == {route.path for route in DOWNLOAD_ROUTES}


def _visible(prober: str | None, owner: str, tier: str, published: bool) -> bool:
    if prober == owner:
        return True
    if not published:
        return False
    if prober is None:
        return tier == "public"
    return tier in ("public", "restricted") or (tier == "confidential" and prober in GOVERNMENT)


def _may_download(
    prober: str | None,
    owner: str,
    *,
    tier: str,
    published: bool,
    downloadable: bool,
    scopes: set[str],
    granted: set[str],
    use_scope: str,
) -> bool:
    """The rule, written out once more: the owner always (reading its catalog or using it);
    others when they may use the product (the scope; a grant of it where the tier asks) and
    its owner allows downloads; anonymous callers never."""
    if prober is None:
        return False
    if prober == owner:
        return bool({"catalog:read", use_scope} & scopes)
    if not published or tier == "secret" or not downloadable or use_scope not in scopes:
        return False
    if tier == "public":
        return True
    if tier == "confidential" and prober not in GOVERNMENT:
        return False
    return use_scope in granted


def _grant(city: City, prober: str, handle: str, decider: str, scopes: list[str]) -> None:
    city.grant(prober, handle, decider, scopes, purpose="probe")


@pytest.mark.parametrize("route", DOWNLOAD_ROUTES, ids=lambda r: r.path.rsplit("/", 1)[-1])
@pytest.mark.parametrize("owner", ["traffic-police", "parkeasy"])
def test_downloads_follow_the_rule_for_every_tenant(
    city: City, owner: str, route: DownloadRoute, tmp_path: Path
) -> None:
    # Every tier, downloadable or not, published; and a downloadable draft.
    products: dict[str, tuple[str, bool, bool, bytes]] = {}
    for tier, downloadable in itertools.product(TIERS, (False, True)):
        name = f"dl-{tier}-{'on' if downloadable else 'off'}"
        handle, payload = route.make(city, owner, name, tier, downloadable, True, tmp_path)
        products[handle] = (tier, True, downloadable, payload)
    handle, payload = route.make(city, owner, "dl-draft", "public", True, False, tmp_path)
    products[handle] = ("public", False, True, payload)
    # Grants, by the prober's place: of the use scope, of another scope only, or none.
    other_scope = "data:read" if route.use_scope != "data:read" else "infer"
    granted: dict[tuple[str, str], set[str]] = {}
    probers = [slug for slug in PROBED if slug != owner]
    for i, prober in enumerate(probers):
        scopes = [[route.use_scope], [other_scope], []][i % 3]
        for handle, (tier, _, _, _) in products.items():
            if not scopes or tier not in ("restricted", "confidential"):
                continue
            if tier == "confidential" and prober not in GOVERNMENT:
                continue  # cannot even be asked for
            decider = owner if tier == "restricted" else "data-bureau"
            _grant(city, prober, handle, decider, scopes)
            granted[(prober, handle)] = set(scopes)
    callers: list[tuple[str | None, set[str], dict[str, str]]] = [(None, set(), {})]
    for slug in PROBED:
        for scopes in ({"catalog:read", route.use_scope}, {"catalog:read"}):
            callers.append((slug, scopes, {"X-API-Key": city.key(slug, scopes=sorted(scopes))}))
    missing_path = route.path.format(handle=f"{owner}.no-such-product", version=1)
    checked = allowed = 0
    for handle, (tier, published, downloadable, payload) in products.items():
        path = route.path.format(handle=handle, version=1)
        for prober, scopes, headers in callers:
            r = city.client.get(path, headers=headers)
            expected = _may_download(
                prober,
                owner,
                tier=tier,
                published=published,
                downloadable=downloadable,
                scopes=scopes,
                granted=granted.get((prober or "", handle), set()),
                use_scope=route.use_scope,
            )
            where = (handle, prober, sorted(scopes), r.status_code)
            assert (r.status_code == 200) == expected, where
            if expected:
                assert r.content == payload, where
                allowed += 1
            elif not _visible(prober, owner, tier, published):
                # What the caller may not see answers exactly as what does not exist.
                fake = city.client.get(missing_path, headers=headers)
                got, want = _strip(r), _strip(fake)
                got[1]["error"] = got[1]["error"].replace(handle, f"{owner}.no-such-product")
                assert got == want, where
            else:
                assert r.status_code in (401, 403), where
            checked += 1
    assert checked == len(products) * len(callers)
    assert 0 < allowed < checked
