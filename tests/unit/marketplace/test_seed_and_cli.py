"""The demo city seed and the ``citybrain`` CLI against a real database file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import Engine, event, select
from typer.testing import CliRunner

from marketplace.cli import app as cli
from marketplace.cli._common import GlobalOptions, run_in_transaction
from marketplace.config import Settings
from marketplace.db import make_engine, transaction
from marketplace.seed import seed_demo_city
from marketplace.tables import Product, Tenant
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends

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


def test_the_database_url_flag_overrides_the_environment_for_one_invocation_only(
    city: City, settings: Settings, tmp_path: Path
) -> None:
    # An empty database in the environment: without the flag, the command finds no tables.
    env = {"CITYBRAIN_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    r = CliRunner().invoke(
        cli, ["--database-url", settings.database_url, "tenants", "list"], env=env
    )
    assert r.exit_code == 0, r.output
    assert "traffic-police" in r.output
    r = CliRunner().invoke(cli, ["tenants", "list"], env=env)
    assert r.exit_code == 1
    assert "database error" in r.output and "citybrain db upgrade" in r.output


def test_python_m_passes_the_global_options_to_every_group(
    city: City, settings: Settings, tmp_path: Path
) -> None:
    # `python -m marketplace.cli` once loaded the front twice (as __main__ and as a module), and
    # the groups that imported it back read the second copy's options: empty, so env's database.
    env = {**os.environ, "CITYBRAIN_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    command = [sys.executable, "-m", "marketplace.cli", "--database-url", settings.database_url]
    done = subprocess.run(
        [*command, "access", "grants"],
        cwd=Path(__file__).parents[3],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "expires" in done.stdout


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Engine], list[Engine]]:
    """The engines the CLI makes, and those it disposes of, in order."""
    made: list[Engine] = []
    disposed: list[Engine] = []

    def recording(database_url: str, **kwargs: Any) -> Engine:
        engine = make_engine(database_url, **kwargs)
        event.listen(engine, "engine_disposed", disposed.append)
        made.append(engine)
        return engine

    monkeypatch.setattr("marketplace.db.make_engine", recording)
    return made, disposed


def test_a_command_makes_one_engine_for_all_its_transactions_and_disposes_of_it(
    city: City, settings: Settings, engines: tuple[list[Engine], list[Engine]]
) -> None:
    made, disposed = engines
    probe = typer.Typer()
    seen: list[int] = []

    @probe.command()
    def twice(ctx: typer.Context) -> None:
        for _ in range(2):
            seen.append(run_in_transaction(ctx, lambda s: len(list(s.scalars(select(Tenant))))))
        assert disposed == []  # still open between the transactions

    r = CliRunner().invoke(probe, [], obj=GlobalOptions.given(database_url=settings.database_url))
    assert r.exit_code == 0, r.output
    assert seen == [9, 9]
    assert len(made) == 1 and disposed == made


def test_a_failing_command_disposes_of_its_engine_too(
    city: City, settings: Settings, engines: tuple[list[Engine], list[Engine]]
) -> None:
    made, disposed = engines
    code, out = _run(settings, "keys", "revoke", "0123456789ab")
    assert code == 1 and "not found" in out
    code, out = _run(settings, "keys", "list", "--json")
    assert code == 0, out
    assert len(made) == 2 and disposed == made


def test_serve_freezes_what_startup_built_and_collects_young_objects_less_often() -> None:
    import gc

    from marketplace.cli import server

    threshold = gc.get_threshold()
    try:
        server._tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (server._GC_GEN0_THRESHOLD, *threshold[1:])
        # Cycles made afterwards are still collected.
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
