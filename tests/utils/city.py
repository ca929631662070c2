"""The seeded demo city as tests use it: keys per tenant and request helpers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from marketplace.constants import ALL_SCOPES
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.keys.service import create_key
from marketplace.migrate import upgrade
from marketplace.seed import SeedResult, seed_demo_city
from marketplace.tenants.service import get_tenant_by_slug

_counter = itertools.count(1)


def migrate_and_seed(database_url: str, *, migrate: bool = True, **seed: Any) -> SeedResult:
    """Migrate ``database_url`` to head and seed the demo city into it, as ``citybrain demo``
    does before a server starts; ``seed`` goes to :func:`seed_demo_city` (``blobs=`` for the
    datasets' data and the demo model, ``city_models=``, ``progress=``)."""
    if migrate:
        upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            return seed_demo_city(session, **seed)
    finally:
        engine.dispose()


@dataclass
class City:
    client: TestClient
    keys: dict[str, str]
    session_factory: sessionmaker[Session]
    extra: dict[str, Any] = field(default_factory=dict)

    def headers(self, slug: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[slug]}"} if slug else {}

    def key(self, slug: str, scopes: list[str] | tuple[str, ...] = ALL_SCOPES, **kw: Any) -> str:
        """A fresh key for a tenant, made directly in the database."""
        with transaction(self.session_factory) as session:
            issued = create_key(
                session,
                tenant=get_tenant_by_slug(session, slug),
                scopes=scopes,
                actor="test",
                **kw,
            )
            return issued.token

    def product(
        self,
        owner: str,
        *,
        tier: str = "public",
        publish: bool = True,
        kind: str = "dataset",
        name: str | None = None,
        **fields: Any,
    ) -> str:
        """Create (and by default publish) a product through the API; returns its handle."""
        name = name or f"p{next(_counter)}-{tier}"
        body = {
            "name": name,
            "kind": kind,
            "title": fields.pop("title", f"Product {name}"),
            "domain": fields.pop("domain", "traffic"),
            "tier": tier,
            **fields,
        }
        r = self.client.post("/api/v1/products", json=body, headers=self.headers(owner))
        assert r.status_code == 201, r.text
        handle = r.json()["handle"]
        if publish:
            if tier in ("public", "secret"):
                r = self.client.post(
                    f"/api/v1/products/{handle}/publish", headers=self.headers(owner)
                )
            else:
                r = self.client.post(
                    f"/api/v1/products/{handle}/submit", headers=self.headers(owner)
                )
                assert r.status_code == 200, r.text
                r = self.client.post(
                    f"/api/v1/products/{handle}/approve",
                    json={"note": "ok"},
                    headers=self.headers("data-bureau"),
                )
            assert r.status_code == 200, r.text
        return handle
