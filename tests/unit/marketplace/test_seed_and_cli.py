"""The demo city seed and the ``citybrain`` CLI against a real database file."""

from __future__ import annotations

import re

from sqlalchemy import select
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.config import Settings
from marketplace.db import transaction
from marketplace.seed import seed_demo_city
from marketplace.tables import Product, Tenant
from tests.utils.city import City

KEY = re.compile(r"cbk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


def test_seed_creates_the_demo_city_once(city: City) -> None:
    with transaction(city.session_factory) as s:
        tenants = {t.slug: (t.name, t.kind, t.domain) for t in s.scalars(select(Tenant))}
        again = seed_demo_city(s)
        tiers = {p.tier for p in s.scalars(select(Product))}
    assert tenants["data-bureau"] == ("City Data Resources Bureau", "operator", None)
    assert tenants["traffic-police"] == ("Traffic Police Bureau", "agency", "traffic")
    assert tenants["hotline-12345"] == ("12345 Citizen Hotline Center", "agency", "city-management")
    assert tenants["xihu-district"][1] == "district" and tenants["parkeasy"][1] == "developer"
    assert len(tenants) == 9 and len(city.keys) == 9
    assert again.keys == {} and again.created_tenants == [] and again.created_products == []
    assert tiers == {"public", "restricted", "confidential", "secret"}


def _run(settings: Settings, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--database-url", settings.database_url, *args])
    return r.exit_code, r.output


def test_cli_seed_prints_keys_on_the_first_run_only(settings: Settings) -> None:
    code, out = _run(settings, "seed")
    assert code == 0, out
    assert len(set(KEY.findall(out))) == 9
    code, out = _run(settings, "seed")
    assert code == 0 and not KEY.findall(out) and "already seeded" in out


def test_cli_keys_create_list_rotate_revoke(city: City, settings: Settings) -> None:
    code, out = _run(
        settings,
        "keys",
        "create",
        "--tenant",
        "parkeasy",
        "--scopes",
        "catalog:read,infer",
        "--expires-in",
        "30d",
    )
    assert code == 0, out
    token = KEY.findall(out)[0]
    key_id = token.split("_")[1]
    me = city.client.get("/api/v1/me", headers={"X-API-Key": token}).json()
    assert me["scopes"] == ["catalog:read", "infer"]
    code, out = _run(settings, "keys", "list", "--tenant", "parkeasy", "--json")
    assert code == 0 and key_id in out and token.split("_", 2)[2] not in out
    code, out = _run(settings, "keys", "rotate", key_id)
    assert code == 0
    new = KEY.findall(out)[0]
    assert city.client.get("/api/v1/me", headers={"X-API-Key": new}).status_code == 200
    assert city.client.get("/api/v1/me", headers={"X-API-Key": token}).status_code == 200  # grace
    code, out = _run(settings, "keys", "revoke", key_id)
    assert code == 0
    assert city.client.get("/api/v1/me", headers={"X-API-Key": new}).status_code == 401


def test_cli_errors_are_clear(city: City, settings: Settings) -> None:
    code, out = _run(settings, "keys", "create", "--tenant", "nobody", "--scopes", "infer")
    assert code == 1 and "tenant 'nobody' not found" in out
    code, out = _run(settings, "keys", "create", "--tenant", "parkeasy", "--scopes", "root")
    assert code == 1 and "unknown scope" in out
    code, out = _run(settings, "keys", "revoke", "0123456789ab")
    assert code == 1 and "not found" in out


def test_serve_freezes_what_startup_built_and_collects_young_objects_less_often() -> None:
    import gc

    from marketplace import cli

    threshold = gc.get_threshold()
    try:
        cli._tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (cli._GC_GEN0_THRESHOLD, *threshold[1:])
        # Cycles made afterwards are still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
