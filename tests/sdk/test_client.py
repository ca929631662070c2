"""The SDK against the real platform: the README's ten lines, the catalog, typed errors with
request ids, keys, access requests, usage and invoices."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from citybrain_sdk import (
    APIError,
    Client,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Retry,
    Unauthorized,
    ValidationError,
)

from tests.sdk.conftest import await_usage, client_for, skip_unless_route
from tests.sdk.server import Platform, close_month

SMOOTHER = "traffic-police.flow-smoother"


def test_the_ten_lines(platform: Platform) -> None:
    """The first ten lines a developer writes (README, issue 18), as written."""
    KEY = platform.keys["parkeasy"]
    import numpy as np
    from citybrain_sdk import Client, NotFound

    cb = Client(platform.url, api_key=KEY)
    hits = cb.catalog.search("air", domain="environment")  # .data, .count, .facets
    out = cb.models.infer("traffic-police.flow-smoother", {"flow": np.ones((2, 16), np.float32)})
    out["smoothed"]  # a numpy array
    assert [p.handle for p in hits.data] == ["environment.air-quality"] and hits.count == 1
    assert hits.facets["domain"] == {"environment": 1}
    assert isinstance(out["smoothed"], np.ndarray) and out["smoothed"].shape == (2, 16)
    np.testing.assert_allclose(out["smoothed"], np.ones((2, 16), np.float32))
    try:
        page = cb.datasets.query(
            "traffic-police.intersection-flow", select=["intersection"], limit=5
        )
    except NotFound as e:
        no_query_route: NotFound | None = e  # skipped below, after the last line has run
    else:
        no_query_route = None
        assert page.column_names == ["intersection"] and 0 < len(page.rows) <= 5
    with pytest.raises(NotFound) as caught:
        cb.catalog.get("traffic-police.no-such-product")  # raises NotFound (.request_id)
    assert caught.value.request_id and caught.value.status == 404
    if no_query_route is not None:
        skip_unless_route(no_query_route)


def test_search_facets_count_only_what_the_caller_sees(platform: Platform) -> None:
    with Client(platform.url) as anonymous, client_for(platform, "traffic-police") as agency:
        public = anonymous.catalog.search(per_page=100)
        seen = agency.catalog.search(per_page=100)
    assert {p.tier for p in public} == {"public"}
    assert public.facets["tier"] == {"public": public.count}
    assert seen.count > public.count
    assert sum(seen.facets["tier"].values()) == seen.count
    assert "traffic-police.signal-timing-plans" in {p.handle for p in seen}  # its own secret


def test_get_and_versions(cb: Client) -> None:
    product = cb.catalog.get(SMOOTHER)
    assert (product.kind, product.tier, product.owner) == ("model", "public", "traffic-police")
    versions = cb.catalog.versions(SMOOTHER)
    assert [v.version for v in versions] == [product.latest_version]
    one = cb.catalog.version(SMOOTHER, versions[0].version)
    assert one.artifact_digest and one.artifact_digest.startswith("sha256:")
    assert one.manifest is not None and one.manifest["format"] == "torchscript"


def test_errors_are_typed_and_carry_the_request_id(platform: Platform, cb: Client) -> None:
    with pytest.raises(NotFound) as missing:
        cb.catalog.get("traffic-police.no-such-product")
    e = missing.value
    assert (e.status, e.code) == (404, "NotFound")
    assert "no-such-product" in e.server_message
    assert e.request_id and e.headers["x-request-id"] == e.request_id
    assert e.request_id in str(e)

    # Another tenant's secret product answers exactly like a missing one.
    with pytest.raises(NotFound) as secret:
        cb.catalog.get("traffic-police.signal-timing-plans")
    assert secret.value.server_message.replace("signal-timing-plans", "x") == (
        e.server_message.replace("no-such-product", "x")
    )

    with (
        Client(platform.url, api_key="cbk_nope_nope", retry=Retry(max_retries=0)) as bad,
        pytest.raises(Unauthorized) as unauth,
    ):
        bad.me()
    assert (unauth.value.status, unauth.value.code) == (401, "Unauthenticated")

    reader = cb.keys.create(["catalog:read"], name="reader")
    with (
        Client(platform.url, api_key=reader.token) as limited,
        pytest.raises(Forbidden) as forbidden,
    ):
        limited.models.infer(SMOOTHER, {"flow": np.ones((1, 4), np.float32)})
    assert "infer" in forbidden.value.server_message and forbidden.value.request_id

    with pytest.raises(ValidationError) as invalid:
        cb.catalog.create("bad", kind="model", title="", domain="traffic")
    assert invalid.value.status == 422 and invalid.value.code == "ValidationError"

    big = {"name": "big", "kind": "dataset", "title": "t", "domain": "traffic"}
    with pytest.raises(PayloadTooLarge) as too_large:  # the JSON API takes 1 MiB by default
        cb.request("POST", "/api/v1/products", json={**big, "description": "x" * 2_000_000})
    assert too_large.value.status == 413 and too_large.value.request_id

    name = "sdk-conflict"
    cb.catalog.create(name, kind="dataset", title="Conflict probe", domain="traffic")
    with pytest.raises(Conflict):
        cb.catalog.create(name, kind="dataset", title="Conflict probe", domain="traffic")
    assert issubclass(Conflict, APIError)


def test_keys_create_rotate_revoke(platform: Platform, cb: Client) -> None:
    issued = cb.keys.create("catalog:read,infer", name="sdk-test", expires_in="1d")
    assert issued.token.startswith("cbk_") and issued.key.scopes == ("catalog:read", "infer")
    assert issued.key.id in {k.id for k in cb.keys.list()}
    with Client(platform.url, api_key=issued.token) as fresh:
        assert fresh.me().scopes == ("catalog:read", "infer")
    rotated = cb.keys.rotate(issued.key.id)
    assert rotated.token != issued.token and rotated.key.id == issued.key.id
    revoked = cb.keys.revoke(issued.key.id)
    assert revoked.status == "revoked"
    with (
        Client(platform.url, api_key=rotated.token, retry=Retry(max_retries=0)) as gone,
        pytest.raises(Unauthorized),
    ):
        gone.me()


def test_access_request_approve_and_reject(platform: Platform) -> None:
    """Restricted dataset: the developer asks, its owner decides; the grant appears for both."""
    handle = "city-management.manhole-covers"
    with (
        client_for(platform, "tourism") as asker,
        client_for(platform, "city-management") as owner,
    ):
        rejected = asker.access.request(handle, "crowd routing near inspections")
        assert (rejected.state, rejected.scopes) == ("pending", ("data:read",))
        assert rejected.id in {r.id for r in owner.access.list(state="pending")}
        owner.access.reject(rejected.id, "purpose too vague")
        assert asker.access.get(rejected.id).reason == "purpose too vague"

        asked = asker.access.request(handle, "plan tour bus stops away from open manholes")
        approved = owner.access.approve(asked.id, "fine for the tour-bus pilot")
        assert approved.state == "approved" and approved.grant_id
        grants = {g.id: g for g in asker.access.grants()}
        assert grants[approved.grant_id].status == "active"
        assert grants[approved.grant_id].product == handle
        assert asker.access.revoke(approved.grant_id).status == "revoked"


def test_confidential_products_are_for_government_tenants(cb: Client) -> None:
    with pytest.raises(NotFound):
        # Invisible to a developer company: asking is answered like a missing product.
        cb.access.request("traffic-police.violation-records", "app", scopes=["data:read"])


def test_usage_and_invoices(platform: Platform) -> None:
    """A priced call shows in usage, and after the operator closes the month, on the
    developer's invoice and on a government tenant's chargeback statement."""
    with client_for(platform, "traffic-police") as owner:
        plan = {"kind": "per_unit", "unit": "call", "unit_price": "0.50", "currency": "CNY"}
        owner.request("PUT", f"/api/v1/products/{SMOOTHER}/plan", json=plan)
    with client_for(platform, "parkeasy") as dev, client_for(platform, "health") as health:
        before = sum(r.events for r in dev.usage.list(product=SMOOTHER))
        dev.models.infer(SMOOTHER, {"flow": np.ones((1, 8), np.float32)})
        health.models.infer(SMOOTHER, {"flow": np.ones((1, 8), np.float32)})
        rows = await_usage(dev, SMOOTHER, events=before + 1)
        assert sum(r.events for r in rows) == before + 1 and rows[-1].unit == "call"
        await_usage(health, SMOOTHER, events=1)
        assert [r.product for r in health.usage.list(group_by="product")] == [SMOOTHER]
        assert dev.invoices.list().count == 0

        period = close_month(platform)

        invoices = dev.invoices.list(period=period)
        assert invoices.count == 1 and invoices.data[0].kind == "invoice"
        detail = dev.invoices.get(invoices.data[0].id)
        line = next(ln for ln in detail.lines if ln.product == SMOOTHER)
        assert line.unit_price == Decimal("0.50") and line.quantity >= 1
        assert detail.document.total >= Decimal("0.50")
        statements = health.invoices.statements(period=period)
        assert statements.count == 1
        statement = health.invoices.statement(statements.data[0].id)
        assert statement.allocation_by_publisher.get("traffic-police") == Decimal("0.50")
        with pytest.raises(NotFound):  # another tenant's invoice reads as missing
            health.invoices.get(invoices.data[0].id)


def test_request_passes_any_route(cb: Client) -> None:
    tenants = cb.request("GET", "/api/v1/tenants")
    assert "parkeasy" in {t["slug"] for t in tenants["data"]}
    with pytest.raises(NotFound) as e:
        cb.request("GET", "/api/v1/nowhere")
    assert e.value.server_message.startswith("no route")
