"""Artifact downloads obey the rule of use, are allowed by the owner, metered and audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from billing.tables import usage_event
from marketplace.db import transaction
from marketplace.tables import AuditEntry, Tenant
from tests.unit.gateway.conftest import Models

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

ARTIFACT = "/api/v1/products/{}/versions/1/artifact"


def _get(models: Models, handle: str, who: str | None = "parkeasy", **headers: str) -> Any:
    return models.city.client.get(
        ARTIFACT.format(handle), headers={**models.city.headers(who), **headers}
    )


def _allow_downloads(models: Models, handle: str, owner: str = "traffic-police") -> None:
    r = models.city.client.patch(
        f"/api/v1/products/{handle}",
        json={"downloadable": True},
        headers=models.city.headers(owner),
    )
    assert r.status_code == 200 and r.json()["downloadable"] is True, r.text


def _grant(models: Models, who: str, handle: str, decider: str, scopes: list[str]) -> None:
    models.city.grant(who, handle, decider, scopes, purpose="offline evaluation")


def _tenant_id(models: Models, slug: str) -> int:
    with transaction(models.city.session_factory) as s:
        return int(s.scalars(select(Tenant.id).where(Tenant.slug == slug)).one())


def test_downloads_are_off_until_the_owner_allows_them(models: Models) -> None:
    c, h = models.city.client, models.city.headers
    product = c.get(f"/api/v1/products/{models.public}").json()
    assert product["downloadable"] is False  # the default, shown to anyone who sees the listing
    # Anyone who may run the public model still may not download it...
    r = _get(models, models.public)
    assert r.status_code == 403 and r.json()["code"] == "Forbidden"
    assert "does not allow downloads" in r.json()["error"]
    # ...but its owner always may.
    own = _get(models, models.public, who="traffic-police")
    assert own.status_code == 200 and own.content == models.artifact.read_bytes()
    # Only the owner says so: the operator may change a tier, not this.
    r = c.patch(
        f"/api/v1/products/{models.public}", json={"downloadable": True}, headers=h("data-bureau")
    )
    assert r.status_code == 403
    _allow_downloads(models, models.public)
    r = _get(models, models.public)
    assert r.status_code == 200 and r.content == models.artifact.read_bytes()
    assert r.headers["x-artifact-digest"].startswith("sha256:")
    # The flag is part of the listing everywhere it shows, and can be set at creation.
    found = c.get("/api/v1/catalog/search", params={"owner": "traffic-police"}).json()["data"]
    assert {p["handle"]: p["downloadable"] for p in found}[models.public] is True
    r = c.post(
        "/api/v1/products",
        json={
            "name": "open-weights",
            "kind": "model",
            "title": "Open weights",
            "domain": "traffic",
            "downloadable": True,
        },
        headers=h("traffic-police"),
    )
    assert r.status_code == 201 and r.json()["downloadable"] is True


def test_downloads_need_what_running_the_model_needs(models: Models) -> None:
    restricted = models.model("traffic-police", tier="restricted")
    confidential = models.model("traffic-police", tier="confidential")
    for handle in (models.public, restricted, confidential):
        _allow_downloads(models, handle)
    # Anonymous: 401 on a public listing; a hidden one answers exactly as a missing one.
    assert _get(models, models.public, who=None).status_code == 401
    hidden = _get(models, restricted, who=None)
    missing = _get(models, "traffic-police.no-such-model", who=None)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"].replace(restricted, "X") == missing.json()["error"].replace(
        "traffic-police.no-such-model", "X"
    )
    # A key without 'infer' may not run the model, so may not download it.
    reader = models.city.key("parkeasy", scopes=["catalog:read"])
    r = _get(models, models.public, who=None, **{"X-API-Key": reader})
    assert r.status_code == 403 and "'infer'" in r.json()["error"]
    # The bypass: a developer without a grant gets 403 from infer and from download.
    r = _get(models, restricted)
    assert r.status_code == 403 and "access grant" in r.json()["error"]
    assert _get(models, confidential).status_code == 404  # a developer never sees it
    # A grant for data:read is no grant to run the model; one for infer is.
    _grant(models, "parkeasy", restricted, "traffic-police", ["data:read"])
    assert _get(models, restricted).status_code == 403
    _grant(models, "xihu-district", restricted, "traffic-police", ["infer"])
    assert _get(models, restricted, who="xihu-district").status_code == 200
    assert _get(models, confidential, who="xihu-district").status_code == 403
    _grant(models, "xihu-district", confidential, "data-bureau", ["infer"])
    assert _get(models, confidential, who="xihu-district").status_code == 200
    # Drafts and secret models are the owner's alone.
    draft = models.model("traffic-police", publish=False)
    secret = models.model("traffic-police", tier="secret")
    for handle in (draft, secret):
        _allow_downloads(models, handle)
        assert _get(models, handle, who="data-bureau").status_code == 404
        assert _get(models, handle, who="traffic-police").status_code == 200


def test_each_download_is_one_metered_event_and_audited(models: Models) -> None:
    _allow_downloads(models, models.public)
    gateway = models.city.client.app.state.gateway  # type: ignore[attr-defined]
    parkeasy = _tenant_id(models, "parkeasy")
    before = gateway.usage.spool.stats().appended
    first = _get(models, models.public, **{"Idempotency-Key": "pull-1"})
    retry = _get(models, models.public, **{"Idempotency-Key": "pull-1"})
    other = _get(models, models.public)
    assert [r.status_code for r in (first, retry, other)] == [200, 200, 200]
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content == models.artifact.read_bytes()
    # Refused downloads are never billed.
    assert _get(models, models.public, who=None).status_code == 401
    assert _get(models, models.public, **{"Idempotency-Key": "\x01"}).status_code == 400
    assert gateway.usage.spool.stats().appended == before + 2
    gateway.usage.flusher.flush_once()
    with transaction(models.city.session_factory) as s:
        rows = s.execute(
            select(usage_event).where(
                usage_event.c.tenant_id == parkeasy, usage_event.c.unit == "download"
            )
        ).all()
        audit = s.scalars(select(AuditEntry).where(AuditEntry.action == "product.download")).all()
    assert sorted(r.id for r in rows) == sorted(["pull-1", other.headers["x-request-id"]])
    assert all(r.product == models.public and r.version == 1 for r in rows)
    assert all(float(r.quantity) == 1 for r in rows)
    # One audit entry per download served (the retry too: bytes went out again).
    assert len(audit) == 3
    assert {a.target for a in audit} == {f"product:{models.public}:1"}
    assert [a.detail["replayed"] for a in audit] == [False, True, False]
    assert all(a.actor.startswith("key:") and a.tenant_id == parkeasy for a in audit)


def test_downloads_count_against_the_quota_of_calls(models: Models) -> None:
    """A rate limit on a product refuses its artifact downloads as it refuses its calls:
    429 with Retry-After, nothing billed, nothing opened."""
    _allow_downloads(models, models.public)
    c, h = models.city.client, models.city.headers
    body = {"tenant": "parkeasy", "product": models.public, "metric": "requests"}
    r = c.post(
        "/api/v1/quotas",
        json={**body, "window": "minute", "amount": 2},
        headers=h("traffic-police"),
    )
    assert r.status_code == 201, r.text
    gateway = c.app.state.gateway  # type: ignore[attr-defined]
    before = gateway.usage.spool.stats().appended
    answers = [_get(models, models.public) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].json()["code"] == "QuotaExceeded" and answers[2].headers["retry-after"]
    assert gateway.usage.spool.stats().appended == before + 2
