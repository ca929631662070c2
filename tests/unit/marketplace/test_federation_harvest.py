"""A district hub's harvest: the city's feed, the diff, and mirrors applied to a hub database.

The city is the seeded demo city behind a TestClient; the hub is a second SQLite database of
its own (the two-process version of this is ``tests/integration/test_federation.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.catalog import service as catalog
from marketplace.context import Principal
from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.errors import ForbiddenError, InvalidInputError
from marketplace.federation.harvest import (
    apply_feed,
    mirrored_fields,
    plan_harvest,
    since_for,
    watermark,
)
from marketplace.tables import AuditEntry, Product, Tenant
from marketplace.tenants.service import create_tenant
from tests.utils.city import City

CITY = "https://city.example"
HUB_SCOPES = ["catalog:read", "catalog:write", "infer", "data:read", "federation"]

pytestmark = pytest.mark.databases("sqlite", "postgresql")


def _listing(handle: str, **over: Any) -> dict[str, Any]:
    owner, name = handle.split(".")
    base = {
        "handle": handle,
        "owner": owner,
        "owner_name": owner,
        "owner_kind": "agency",
        "name": name,
        "kind": "dataset",
        "title": name,
        "description": "",
        "title_zh": None,
        "description_zh": None,
        "domain": "traffic",
        "tags": ["a"],
        "tier": "public",
        "license": "",
        "state": "published",
        "latest_version": 1,
        "quality_score": None,
        "updated_at": "2026-01-01T00:00:00+00:00",
    }
    return {**base, **over}


def test_the_diff_creates_updates_keeps_and_withdraws() -> None:
    a, b, c = _listing("t.a"), _listing("t.b"), _listing("t.c")
    mirrors = {"t.a": mirrored_fields(a), "t.b": mirrored_fields(b), "t.gone": mirrored_fields(c)}
    changed = [a, {**b, "state": "deprecated"}, c]
    plan = plan_harvest(mirrors, changed, {"t.a", "t.b", "t.c"})
    assert [x["handle"] for x in plan.create] == ["t.c"]
    assert [x["handle"] for x, _ in plan.update] == ["t.b"]
    assert plan.unchanged == 1 and plan.withdraw == ["t.gone"]
    # The same feed over the result is a no-op.
    after = {h: mirrored_fields(x) for h, x in (("t.a", a), ("t.b", changed[1]), ("t.c", c))}
    again = plan_harvest(after, changed, {"t.a", "t.b", "t.c"})
    assert again.changes == 0 and again.unchanged == 3


def test_a_listing_changed_but_no_longer_listed_is_not_created() -> None:
    plan = plan_harvest({}, [_listing("t.a")], set())
    assert plan.changes == 0


@pytest.mark.parametrize(
    ("over", "message"),
    [({"tier": "secret"}, "secret"), ({"tier": "top"}, "tier"), ({"kind": "app"}, "kind")],
)
def test_a_feed_that_breaks_the_rules_is_refused_whole(over: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        plan_harvest({}, [_listing("t.ok"), _listing("t.a", **over)], {"t.ok", "t.a"})


@pytest.fixture
def hub(tmp_path: Path, sqlite_template: Path) -> Iterator[sessionmaker[Session]]:
    dest = tmp_path / "hub.db"
    shutil.copy(sqlite_template, dest)
    engine = make_engine(f"sqlite:///{dest}")
    yield make_session_factory(engine)
    engine.dispose()


def _hub_key(city: City) -> str:
    return city.key("xihu-district", scopes=HUB_SCOPES)


def _feed(city: City, key: str, since: datetime | None = None) -> dict[str, Any]:
    params = {"modified_since": since.isoformat()} if since else {}
    r = city.client.get(
        "/api/v1/federation/feed", headers={"Authorization": f"Bearer {key}"}, params=params
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_feed_is_what_the_district_may_see_never_secret_nor_its_own(city: City) -> None:
    key = _hub_key(city)
    with transaction(city.session_factory) as session:
        xihu = session.scalars(select(Tenant).where(Tenant.slug == "xihu-district")).one()
        tp = session.scalars(select(Tenant).where(Tenant.slug == "traffic-police")).one()
        for owner, name, tier in ((tp, "hidden", "secret"), (xihu, "own", "public")):
            who = Principal(owner.id, owner.slug, owner.kind, frozenset(HUB_SCOPES))
            catalog.create_product(
                session, who, name=name, kind="dataset", title=name, domain="traffic", tier=tier
            )
            catalog.publish_product(session, who, f"{owner.slug}.{name}")
        listed = session.scalars(
            select(Product).where(Product.state.in_(["published", "deprecated"]))
        ).all()
        expected = {
            p.handle for p in listed if p.tier != "secret" and p.tenant.slug != "xihu-district"
        }
    feed = _feed(city, key)
    assert set(feed["handles"]) == expected
    assert {x["handle"] for x in feed["changed"]} == expected
    assert "confidential" in {x["tier"] for x in feed["changed"]}  # a government district
    # Changes since now: none.
    assert _feed(city, key, datetime.now(UTC))["changed"] == []
    # A developer tenant's key sees no confidential listing.
    dev = _feed(city, city.keys["parkeasy"])
    assert "confidential" not in {x["tier"] for x in dev["changed"]}


def test_harvest_mirrors_idempotently_and_follows_deprecation_and_withdrawal(
    city: City, hub: sessionmaker[Session]
) -> None:
    key = _hub_key(city)
    with transaction(hub) as session:
        # A hub tenant of its own that happens to share a city publisher's slug.
        create_tenant(
            session, slug="health", name="Xihu clinic", kind="agency", domain=None, actor="test"
        )
    feed = _feed(city, key)
    with transaction(hub) as session:
        report = apply_feed(session, CITY, feed)
    assert set(report.created) == {h for h in feed["handles"] if not h.startswith("health.")}
    assert report.skipped and all(h.startswith("health.") for h in report.skipped)
    with transaction(hub) as session:
        local_health = session.scalars(select(Tenant).where(Tenant.slug == "health")).one()
        assert local_health.origin_url is None
        assert (
            session.scalar(
                select(func.count())
                .select_from(Product)
                .where(Product.tenant_id == local_health.id)
            )
            == 0
        )
        since = since_for(session, CITY)
        mark = watermark(session, CITY)
        assert since is not None and mark is not None and since < mark
        audits = session.scalar(select(func.count()).select_from(AuditEntry))

    # Again, with the incremental feed: nothing changes, not even the audit log.
    with transaction(hub) as session:
        again = apply_feed(session, CITY, _feed(city, key, since))
        assert (again.created, again.updated, again.withdrawn) == ([], [], [])
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == audits

    # Mirrors are read-only, even for the hub's operator.
    with transaction(hub) as session:
        ops = create_tenant(
            session, slug="xihu-ops", name="ops", kind="operator", domain=None, actor="test"
        )
        who = Principal(ops.id, ops.slug, ops.kind, frozenset(HUB_SCOPES))
        with pytest.raises(ForbiddenError, match="read-only mirror"):
            catalog.update_product(
                session, who, "environment.air-quality", catalog.ProductFields(tier="secret")
            )

    # The city deprecates one listing and raises another to secret: it leaves the hub.
    raised = next(
        x["handle"]
        for x in feed["changed"]
        if x["owner"] == "traffic-police" and x["tier"] == "public"
    )
    with transaction(city.session_factory) as session:
        env = session.scalars(select(Tenant).where(Tenant.slug == "environment")).one()
        owner = Principal(env.id, env.slug, env.kind, frozenset(HUB_SCOPES))
        catalog.deprecate_product(session, owner, "environment.air-quality")
        tp = session.scalars(select(Tenant).where(Tenant.slug == "traffic-police")).one()
        tpo = Principal(tp.id, tp.slug, tp.kind, frozenset(HUB_SCOPES))
        catalog.update_product(session, tpo, raised, catalog.ProductFields(tier="secret"))
    with transaction(hub) as session:
        changed = apply_feed(session, CITY, _feed(city, key, since_for(session, CITY)))
    assert changed.updated == ["environment.air-quality"]
    assert changed.withdrawn == [raised]
    with transaction(hub) as session:
        air = session.scalars(
            select(Product).where(Product.origin_handle == "environment.air-quality")
        ).one()
        assert air.state == "deprecated"
        assert session.scalar(select(Product).where(Product.origin_handle == raised)) is None


def test_the_schedule_harvests_on_its_own_and_survives_a_failed_run(
    city: City, hub: sessionmaker[Session]
) -> None:
    """``federation.pull_interval_seconds``: the server's loop (``pull.pull_forever``), here
    against the city's app through its TestClient transport."""
    import asyncio

    import httpx
    from pydantic import SecretStr

    from marketplace.config import FederationSettings, Settings
    from marketplace.federation.client import CityClient
    from marketplace.federation.pull import pull_forever

    fed = FederationSettings(
        city_url="http://testserver", hub_key=SecretStr(_hub_key(city)), pull_interval_seconds=0.05
    )
    assert fed.joined
    bad = FederationSettings(city_url="http://testserver", hub_key=SecretStr("cbk_x_y"))

    def mirrors() -> int:
        with hub() as session:
            return int(
                session.scalar(
                    select(func.count()).select_from(Product).where(Product.origin_url.is_not(None))
                )
                or 0
            )

    def relay(request: httpx.Request) -> httpx.Response:
        # The city's app answers (through its TestClient); nothing here is a fake.
        answer = city.client.request(
            request.method,
            request.url.raw_path.decode(),
            headers=request.headers,
            content=request.content,
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    transport = httpx.MockTransport(relay)

    async def run() -> int:
        # A refused key: the loop logs and carries on (nothing harvested).
        with CityClient(bad, transport=transport) as refused:
            task = asyncio.create_task(
                pull_forever(hub, fed.model_copy(update={"hub_key": bad.hub_key}), client=refused)
            )
            await asyncio.sleep(0.2)
            assert not task.done() and mirrors() == 0
            task.cancel()
        with CityClient(fed, transport=transport) as client:
            task = asyncio.create_task(pull_forever(hub, fed, client=client))
            for _ in range(200):
                if mirrors():
                    break
                await asyncio.sleep(0.05)
            task.cancel()
        return mirrors()

    assert asyncio.run(run()) == len(_feed(city, _hub_key(city))["handles"])
    # The settings come from the environment as documented.
    env = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{"federation": {"city_url": "https://city", "pull_interval_seconds": 600}},
    )
    assert env.federation.pull_interval_seconds == 600 and not env.federation.joined
