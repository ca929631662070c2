"""The seeded demo city as tests use it: keys per tenant and request helpers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from billing.plan_store import set_plan
from billing.plans import PricePlan
from marketplace.config import Settings
from marketplace.constants import ALL_SCOPES
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.keys.service import create_key
from marketplace.migrate import upgrade
from marketplace.seed import SeedResult, seed_demo_city
from marketplace.tenants.service import get_tenant_by_slug
from tests.utils.publish import model_upload_headers

if TYPE_CHECKING:
    # The response type of starlette's TestClient (httpx2, the successor of httpx).
    from httpx2 import Response

_counter = itertools.count(1)


@contextmanager
def city_app(settings: Settings) -> Iterator[City]:
    """The app on ``settings`` (its database migrated) in a TestClient, the demo city's tenants
    and keys seeded; the engine disposed afterwards."""
    from marketplace.api.app import create_app  # not at import: benches import this module

    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            with transaction(factory) as session:
                keys = seed_demo_city(session).keys
            yield City(client=client, keys=keys, session_factory=factory)
    finally:
        engine.dispose()


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

    def set_price_plan(self, product_id: int, spec: dict[str, Any], *, since: datetime) -> None:
        """Give product ``product_id`` the price plan ``spec`` (a plan's JSON), in force from
        the period of ``since``."""
        with transaction(self.session_factory) as s:
            set_plan(s.connection(), product_id, PricePlan.from_dict(spec), now=since)

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
        handle: str = r.json()["handle"]
        if publish:
            self.publish(owner, handle, tier)
        return handle

    def publish(self, owner: str, handle: str, tier: str = "public") -> None:
        """Publish a draft: directly (public, secret) or submitted and approved by the operator."""
        if tier in ("public", "secret"):
            r = self.client.post(f"/api/v1/products/{handle}/publish", headers=self.headers(owner))
        else:
            r = self.client.post(f"/api/v1/products/{handle}/submit", headers=self.headers(owner))
            assert r.status_code == 200, r.text
            r = self.client.post(
                f"/api/v1/products/{handle}/approve",
                json={"note": "ok"},
                headers=self.headers("data-bureau"),
            )
        assert r.status_code == 200, r.text

    def grant(
        self,
        who: str,
        handle: str,
        decider: str,
        scopes: list[str] | tuple[str, ...] = ("infer",),
        purpose: str = "testing",
        **body: Any,
    ) -> str:
        """``who`` asks for access to ``handle``, ``decider`` approves; the grant's id."""
        request = {"product": handle, "purpose": purpose, "scopes": list(scopes), **body}
        r = self.client.post("/api/v1/access-requests", json=request, headers=self.headers(who))
        assert r.status_code == 201, r.text
        r = self.client.post(
            f"/api/v1/access-requests/{r.json()['id']}/approve",
            json={"reason": "ok"},
            headers=self.headers(decider),
        )
        assert r.status_code == 200, r.text
        return str(r.json()["grant_id"])

    def cli_runner(self, monkeypatch: Any, module: ModuleType, factory: str) -> CliRunner:
        """A CliRunner for commands of ``module`` whose HTTP client (``module.<factory>(url,
        api_key)``) is this city's TestClient, authenticated with the key the command got."""

        def client(url: str, api_key: str | None) -> object:
            self.client.headers["Authorization"] = f"Bearer {api_key}"
            return contextlib.nullcontext(self.client)

        monkeypatch.setattr(module, factory, client)
        return CliRunner()

    def upload_model(
        self, owner: str, handle: str, artifact: Path, manifest: Any, **headers: str
    ) -> Response:
        """Upload ``artifact`` as a new version of model ``handle`` under ``manifest`` (a
        ``ModelManifest`` or a document); the response, unchecked."""
        return self.client.post(
            f"/api/v1/products/{handle}/versions/model",
            content=artifact.read_bytes(),
            headers={**self.headers(owner), **model_upload_headers(manifest), **headers},
        )

    def model(
        self,
        owner: str,
        artifact: Path,
        manifest: Any,
        *,
        tier: str = "public",
        publish: bool = True,
        **fields: Any,
    ) -> str:
        """A model product with ``artifact`` as its first version, published by default."""
        handle = self.product(owner, tier=tier, kind="model", publish=False, **fields)
        r = self.upload_model(owner, handle, artifact, manifest)
        assert r.status_code == 201, r.text
        if publish:
            self.publish(owner, handle, tier)
        return handle
