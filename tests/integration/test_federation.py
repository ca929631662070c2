"""District hub federation between two real platform processes.

The city is the demo city on SQLite (``tests.sdk.server.running_platform``); the hub (Xihu
district) is a second platform on PostgreSQL with tenants of its own, joined to the city with a
key the city issued to its ``xihu-district`` tenant. The hub harvests with ``citybrain
federation pull``, its user calls a mirrored model and queries a mirrored dataset through the
hub (the city meters the hub and audits the user), it pushes a listing of its own to the city,
the city refuses to let a push overwrite a listing the hub did not push, and withdrawals travel
both ways.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from marketplace.db import make_engine, make_session_factory, transaction
from marketplace.federation.signing import sign_caller
from marketplace.keys.service import create_key
from marketplace.migrate import upgrade
from marketplace.tables import AuditEntry, Tenant
from marketplace.tenants.service import create_tenant
from tests.sdk.server import Platform, running_platform
from tests.utils.postgres import scratch_database
from tests.utils.server import ROOT, running_platform_server

HUB_SCOPES = ["catalog:read", "catalog:write", "infer", "data:read", "federation"]
FLOW = [10.0, 30.0, 12.0, 28.0, 14.0, 35.0, 11.0, 29.0]
INFER = {"inputs": [{"name": "flow", "datatype": "FP32", "shape": [1, 8], "data": FLOW}]}
MODEL = "traffic-police.flow-smoother"
DATASET = "environment.air-quality"


@dataclass
class Hub:
    url: str
    database_url: str
    env: dict[str, str]
    keys: dict[str, str]  # local tenant slug → key


@dataclass
class Federation:
    city: Platform
    city_db: str
    hub_key: str
    hub: Hub


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """The city (SQLite, demo city) and a hub joined to it (PostgreSQL), both serving."""
    tmp = tmp_path_factory.mktemp("federation")
    with running_platform(tmp / "city") as city, scratch_database() as hub_db:
        city_db = f"sqlite:///{tmp / 'city' / 'citybrain.db'}"
        engine = make_engine(city_db)
        with transaction(make_session_factory(engine)) as session:
            # What the city operator does: `citybrain keys create --tenant xihu-district ...`.
            district = session.scalars(select(Tenant).where(Tenant.slug == "xihu-district")).one()
            hub_key = create_key(
                session, tenant=district, scopes=HUB_SCOPES, name="xihu hub", actor="test"
            ).token
        engine.dispose()

        upgrade(hub_db.url)
        engine = make_engine(hub_db.url)
        keys: dict[str, str] = {}
        with transaction(make_session_factory(engine)) as session:
            for slug, kind in (
                ("xihu-ops", "operator"),
                ("xihu-district", "district"),
                ("xihu-school", "developer"),
            ):
                tenant = create_tenant(
                    session, slug=slug, name=slug, kind=kind, domain=None, actor="test"
                )
                keys[slug] = create_key(
                    session,
                    tenant=tenant,
                    scopes=["catalog:read", "catalog:write", "infer", "data:read"],
                    actor="test",
                ).token
        engine.dispose()

        env = {
            "CITYBRAIN_DATABASE_URL": hub_db.url,
            "CITYBRAIN_DATA_DIR": str(tmp / "hub"),
            "CITYBRAIN_FEDERATION__CITY_URL": city.url,
            "CITYBRAIN_FEDERATION__HUB_KEY": hub_key,
        }
        with running_platform_server(
            database_url=None, data_dir=None, log=tmp / "hub.log", env=env
        ) as server:
            hub_env = {**os.environ, "CITYBRAIN_LOG_LEVEL": "warning", **env}
            yield Federation(city, city_db, hub_key, Hub(server.url, hub_db.url, hub_env, keys))


def _cli(hub: Hub, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "marketplace.cli", "federation", *args],
        cwd=ROOT,
        env=hub.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def _pull(hub: Hub) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(_cli(hub, "pull", "--json").stdout)
    return report


def _city_audit(fed: Federation, action: str) -> list[AuditEntry]:
    engine = make_engine(fed.city_db)
    try:
        with make_session_factory(engine)() as session:
            return list(session.scalars(select(AuditEntry).where(AuditEntry.action == action)))
    finally:
        engine.dispose()


def _city_usage(fed: Federation, tenant: str, product: str) -> int:
    engine = make_engine(fed.city_db)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM usage_event u JOIN tenant t ON t.id = u.tenant_id"
                        " WHERE t.slug = :t AND u.product = :p"
                    ),
                    {"t": tenant, "p": product},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _wait_usage(fed: Federation, tenant: str, product: str, at_least: int) -> int:
    """Usage reaches the database when the city's spool flushes (every 2 s by default)."""
    deadline = time.monotonic() + 60
    n = _city_usage(fed, tenant, product)
    while n < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
        n = _city_usage(fed, tenant, product)
    return n


def test_harvest_mirrors_what_the_district_may_see_read_only_and_idempotent(
    fed: Federation,
) -> None:
    city, hub = fed.city, fed.hub
    tp = city.keys["traffic-police"]
    # A secret listing on the city: it never reaches the hub.
    r = httpx.post(
        f"{city.url}/api/v1/products",
        headers=_auth(tp),
        json={
            "name": "plate-watchlist",
            "kind": "dataset",
            "title": "Watchlist",
            "domain": "traffic",
            "tier": "secret",
        },
    )
    assert r.status_code == 201, r.text
    assert (
        httpx.post(
            f"{city.url}/api/v1/products/traffic-police.plate-watchlist/publish", headers=_auth(tp)
        ).status_code
        == 200
    )

    report = _pull(hub)
    expected = set(
        httpx.get(f"{city.url}/api/v1/federation/feed", headers=_auth(fed.hub_key)).json()[
            "handles"
        ]
    )
    assert set(report["created"]) == expected
    assert MODEL in expected and DATASET in expected
    assert "traffic-police.plate-watchlist" not in expected
    # Confidential listings cross to a government district hub; its own never come back.
    tiers = {
        p["handle"]: p["tier"]
        for p in httpx.get(
            f"{city.url}/api/v1/products",
            headers=_auth(fed.hub_key),
            params={"per_page": 100},
        ).json()["data"]
    }
    assert {h for h, t in tiers.items() if t == "confidential"} <= expected
    assert not any(h.startswith("xihu-district.") for h in expected)

    # The mirror carries its origin, and is read-only on the hub (even for its operator).
    user = hub.keys["xihu-school"]
    mirror = httpx.get(f"{hub.url}/api/v1/products/{MODEL}", headers=_auth(user)).json()
    assert mirror["origin"] == {"url": city.url, "handle": MODEL}
    refused = httpx.patch(
        f"{hub.url}/api/v1/products/{MODEL}",
        headers=_auth(hub.keys["xihu-ops"]),
        json={"tier": "restricted"},
    )
    assert refused.status_code == 403 and "read-only mirror" in refused.json()["error"]
    listed = httpx.get(f"{hub.url}/api/v1/catalog/search", params={"q": "smoother"}).json()
    assert [p["origin"]["handle"] for p in listed["data"]] == [MODEL]
    assert (
        httpx.get(
            f"{hub.url}/api/v1/products/traffic-police.plate-watchlist", headers=_auth(user)
        ).status_code
        == 404
    )

    # A second run changes nothing.
    again = _pull(hub)
    assert (again["created"], again["updated"], again["withdrawn"]) == ([], [], [])


def test_calls_on_mirrors_are_answered_by_the_city_metered_to_the_hub_audited_to_the_user(
    fed: Federation,
) -> None:
    city, hub = fed.city, fed.hub
    _pull(hub)
    user = hub.keys["xihu-school"]
    before = _city_usage(fed, "xihu-district", MODEL)

    meta = httpx.get(f"{hub.url}/v2/models/{MODEL}", headers=_auth(user))
    assert meta.status_code == 200, meta.text
    assert [i["name"] for i in meta.json()["inputs"]] == ["flow"]
    assert httpx.get(f"{hub.url}/v2/models/{MODEL}/ready", headers=_auth(user)).is_success
    r = httpx.post(f"{hub.url}/v2/models/{MODEL}/infer", headers=_auth(user), json=INFER)
    assert r.status_code == 200, r.text
    (output,) = r.json()["outputs"]
    assert output["name"] == "smoothed" and output["shape"] == [1, 8]
    direct = httpx.post(
        f"{city.url}/v2/models/{MODEL}/infer", headers=_auth(city.keys["parkeasy"]), json=INFER
    )
    assert direct.json()["outputs"][0]["data"] == output["data"]

    q = httpx.post(
        f"{hub.url}/api/v1/products/{DATASET}/query", headers=_auth(user), json={"limit": 3}
    )
    assert q.status_code == 200, q.text
    assert len(q.json()["rows"]) == 3

    # The city metered the hub's tenant ...
    assert _wait_usage(fed, "xihu-district", MODEL, before + 1) == before + 1
    assert _wait_usage(fed, "xihu-district", DATASET, 1) >= 1
    # ... and audited the hub user by name.
    forwarded = _city_audit(fed, "federation.forwarded")
    user_key = user.split("_")[1]
    callers = {(e.target, e.detail["caller"]) for e in forwarded}
    assert (f"/v2/models/{MODEL}/infer", f"xihu-school/key:{user_key}") in callers
    assert (f"/api/v1/products/{DATASET}/query", f"xihu-school/key:{user_key}") in callers
    assert all(e.detail["hub"] == "xihu-district" for e in forwarded)

    # Anonymous callers and mirrors the caller may not see are refused on the hub itself.
    assert httpx.post(f"{hub.url}/v2/models/{MODEL}/infer", json=INFER).status_code == 401


def test_the_city_refuses_forged_replayed_and_unscoped_caller_headers(fed: Federation) -> None:
    city = fed.city
    path = f"/v2/models/{MODEL}/infer"
    signed = sign_caller(fed.hub_key, "xihu-school/key:abc", "POST", path)
    ok = httpx.post(f"{city.url}{path}", headers={**_auth(fed.hub_key), **signed}, json=INFER)
    assert ok.status_code == 200, ok.text
    replayed = httpx.post(f"{city.url}{path}", headers={**_auth(fed.hub_key), **signed}, json=INFER)
    assert replayed.status_code == 401 and "used before" in replayed.json()["error"]

    forged = sign_caller(fed.hub_key, "someone/else", "POST", path)
    forged["X-CityBrain-Caller"] = "xihu-school%2Fkey%3Aother"
    r = httpx.post(f"{city.url}{path}", headers={**_auth(fed.hub_key), **forged}, json=INFER)
    assert r.status_code == 401 and "does not match" in r.json()["error"]

    # Signed with another key than the one presented: refused too.
    other = city.keys["parkeasy"]
    r = httpx.post(
        f"{city.url}{path}",
        headers={**_auth(fed.hub_key), **sign_caller(other, "x/y", "POST", path)},
        json=INFER,
    )
    assert r.status_code == 401
    # A key without the federation scope may not name another caller at all.
    r = httpx.post(
        f"{city.url}{path}",
        headers={**_auth(other), **sign_caller(other, "x/y", "POST", path)},
        json=INFER,
    )
    assert r.status_code == 403 and "federation" in r.json()["error"]
    # The same checks on the JSON API (the data query route).
    qpath = f"/api/v1/products/{DATASET}/query"
    stale = sign_caller(fed.hub_key, "x/y", "POST", qpath, now=time.time() - 3600)
    r = httpx.post(f"{city.url}{qpath}", headers={**_auth(fed.hub_key), **stale}, json={"limit": 1})
    assert r.status_code == 401 and "expired" in r.json()["error"]


def test_withdrawals_and_deprecations_on_the_city_reach_the_hub(fed: Federation) -> None:
    city, hub = fed.city, fed.hub
    tp = _auth(city.keys["traffic-police"])
    handle = "traffic-police.queue-lengths"
    assert (
        httpx.post(
            f"{city.url}/api/v1/products",
            headers=tp,
            json={
                "name": "queue-lengths",
                "kind": "dataset",
                "title": "Queue lengths",
                "domain": "traffic",
                "tier": "public",
            },
        ).status_code
        == 201
    )
    assert httpx.post(f"{city.url}/api/v1/products/{handle}/publish", headers=tp).is_success
    assert handle in _pull(hub)["created"]

    assert httpx.post(f"{city.url}/api/v1/products/{handle}/deprecate", headers=tp).is_success
    assert _pull(hub)["updated"] == [handle]
    user = _auth(hub.keys["xihu-school"])
    assert httpx.get(f"{hub.url}/api/v1/products/{handle}", headers=user).json()["state"] == (
        "deprecated"
    )

    assert httpx.delete(f"{city.url}/api/v1/products/{handle}", headers=tp).status_code == 204
    assert _pull(hub)["withdrawn"] == [handle]
    assert httpx.get(f"{hub.url}/api/v1/products/{handle}", headers=user).status_code == 404


def test_push_publishes_updates_refuses_conflicts_and_withdraws(fed: Federation) -> None:
    city, hub = fed.city, fed.hub
    local = _auth(hub.keys["xihu-district"])
    handle = "xihu-district.street-lights"
    assert (
        httpx.post(
            f"{hub.url}/api/v1/products",
            headers=local,
            json={
                "name": "street-lights",
                "kind": "dataset",
                "title": "Street lights",
                "title_zh": "路灯",
                "domain": "city-management",
                "tier": "public",
            },
        ).status_code
        == 201
    )
    assert httpx.post(f"{hub.url}/api/v1/products/{handle}/publish", headers=local).is_success
    # A listing of the same name that xihu-district made on the city itself, and a secret one.
    city_own = _auth(fed.hub_key)
    assert (
        httpx.post(
            f"{city.url}/api/v1/products",
            headers=city_own,
            json={
                "name": "parks",
                "kind": "dataset",
                "title": "Parks (the city's)",
                "domain": "tourism",
                "tier": "public",
            },
        ).status_code
        == 201
    )
    for name, tier in (("parks", "public"), ("cameras", "secret")):
        assert (
            httpx.post(
                f"{hub.url}/api/v1/products",
                headers=local,
                json={
                    "name": name,
                    "kind": "dataset",
                    "title": name,
                    "domain": "tourism",
                    "tier": tier,
                },
            ).status_code
            == 201
        )
        assert httpx.post(
            f"{hub.url}/api/v1/products/xihu-district.{name}/publish", headers=local
        ).is_success

    done = _cli(hub, "push", "--json", ok=False)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["created"] == [handle]
    assert list(report["refused"]) == ["xihu-district.parks"]
    assert "not pushed from this hub" in report["refused"]["xihu-district.parks"]
    on_city = httpx.get(f"{city.url}/api/v1/products/{handle}", headers=city_own).json()
    assert (on_city["state"], on_city["title_zh"]) == ("published", "路灯")
    parks = httpx.get(f"{city.url}/api/v1/products/xihu-district.parks", headers=city_own)
    assert parks.json()["title"] == "Parks (the city's)"  # never overwritten
    assert (
        httpx.get(f"{city.url}/api/v1/products/xihu-district.cameras", headers=city_own).status_code
        == 404
    )
    # Other tenants of the city see the pushed listing like any other.
    assert httpx.get(f"{city.url}/api/v1/products/{handle}").status_code == 200

    # An update goes the same way.
    assert httpx.patch(
        f"{hub.url}/api/v1/products/{handle}", headers=local, json={"title": "Street lighting"}
    ).is_success
    report = json.loads(_cli(hub, "push", "--json", ok=False).stdout)
    assert report["updated"] == [handle]
    assert httpx.get(f"{city.url}/api/v1/products/{handle}").json()["title"] == "Street lighting"

    # Withdrawn on the hub (deprecated, then deleted): withdrawn from the city.
    assert httpx.post(f"{hub.url}/api/v1/products/{handle}/deprecate", headers=local).is_success
    assert httpx.delete(f"{hub.url}/api/v1/products/{handle}", headers=local).status_code == 204
    report = json.loads(_cli(hub, "push", "--json", ok=False).stdout)
    assert report["withdrawn"] == [handle]
    assert httpx.get(f"{city.url}/api/v1/products/{handle}", headers=city_own).status_code == 404

    # Harvesting again: the hub's own listings never come back as mirrors.
    again = _pull(hub)
    assert not any(h.startswith("xihu-district.") for h in again["created"])
