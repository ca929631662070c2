"""Quotas and rate limits in the gateway: 429 with Retry-After before the runtime, nothing billed."""

from __future__ import annotations

from typing import Any

from tests.unit.gateway.conftest import Models
from tests.unit.gateway.test_infer import _infer, _json_body


def _set(models: Models, who: str, **body: Any) -> Any:
    r = models.city.client.post("/api/v1/quotas", json=body, headers=models.city.headers(who))
    return r


def _billed(models: Models) -> int:
    """Usage events appended to the spool (the durable record a call is billed from)."""
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    return int(gateway.usage.spool.stats().appended)


def test_a_rate_limit_refuses_with_429_and_bills_nothing(models: Models) -> None:
    r = _set(
        models,
        "traffic-police",
        tenant="parkeasy",
        product=models.public,
        metric="requests",
        window="minute",
        amount=3,
    )
    assert r.status_code == 201, r.text
    before = _billed(models)
    statuses = [_infer(models.city, models.public, _json_body()).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    refused = _infer(models.city, models.public, _json_body())
    assert refused.json()["code"] == "QuotaExceeded"
    assert "3 requests per minute" in refused.json()["error"]
    assert int(refused.headers["retry-after"]) >= 1
    assert _billed(models) == before + 3
    # Other tenants are not covered by parkeasy's limit.
    assert _infer(models.city, models.public, _json_body(), who="tourism").status_code == 200


def test_a_product_wide_limit_is_shared_by_every_consumer(models: Models) -> None:
    r = _set(
        models, "traffic-police", product=models.public, metric="requests", window="day", amount=2
    )
    assert r.status_code == 201
    assert _infer(models.city, models.public, _json_body(), who="parkeasy").status_code == 200
    assert _infer(models.city, models.public, _json_body(), who="tourism").status_code == 200
    assert _infer(models.city, models.public, _json_body(), who="health").status_code == 429


def test_a_tenant_limits_its_own_key(models: Models) -> None:
    token = models.city.key("parkeasy", scopes=["infer"])
    key_id = token.split("_")[1]
    r = _set(models, "parkeasy", key_id=key_id, metric="requests", window="second", amount=1)
    assert r.status_code == 201, r.text
    hdr = {"X-API-Key": token}
    assert _infer(models.city, models.public, _json_body(), who=None, **hdr).status_code == 200
    assert _infer(models.city, models.public, _json_body(), who=None, **hdr).status_code == 429
    # The tenant's other key is unaffected.
    assert _infer(models.city, models.public, _json_body(), who="parkeasy").status_code == 200


def test_unit_budgets_count_metered_units(models: Models) -> None:
    r = _set(models, "data-bureau", tenant="parkeasy", metric="units", window="month", amount=2)
    assert r.status_code == 201
    assert [_infer(models.city, models.public, _json_body()).status_code for _ in range(3)] == [
        200,
        200,
        429,
    ]


def test_who_may_set_what(models: Models) -> None:
    # A developer cannot limit another tenant, nor a product it does not own.
    r = _set(models, "parkeasy", tenant="tourism", metric="requests", window="minute", amount=1)
    assert r.status_code == 403
    r = _set(
        models, "parkeasy", product=models.public, metric="requests", window="minute", amount=1
    )
    assert r.status_code == 403
    # Bad limits are 422 and write nothing.
    for bad in (
        {"metric": "units", "window": "second"},
        {"metric": "bytes", "window": "day"},
        {"metric": "requests", "window": "week"},
        {"metric": "requests", "window": "day", "amount": 0},
    ):
        body = {"tenant": "parkeasy", "amount": 1, **bad}
        assert _set(models, "parkeasy", **body).status_code == 422, bad
    assert _set(models, "parkeasy", metric="requests", window="day", amount=5).status_code == 422
    # Who sees and removes a limit.
    qid = _set(
        models,
        "traffic-police",
        tenant="parkeasy",
        product=models.public,
        metric="requests",
        window="minute",
        amount=9,
    ).json()["id"]
    c, h = models.city.client, models.city.headers
    assert c.get(f"/api/v1/quotas/{qid}", headers=h("parkeasy")).status_code == 200
    assert c.get(f"/api/v1/quotas/{qid}", headers=h("tourism")).status_code == 404
    assert c.delete(f"/api/v1/quotas/{qid}", headers=h("parkeasy")).status_code == 403
    assert c.delete(f"/api/v1/quotas/{qid}", headers=h("traffic-police")).status_code == 204
    assert c.get(f"/api/v1/quotas/{qid}", headers=h("traffic-police")).status_code == 404
