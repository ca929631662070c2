"""The hash-chained audit log: what is written, who reads it, and tamper detection."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from marketplace.audit.service import verify_chain
from marketplace.cli import app as cli
from marketplace.config import Settings
from marketplace.db import transaction
from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


def _entries(city: City, who: str, **params: str) -> list[dict]:  # type: ignore[type-arg]
    r = city.client.get(
        "/api/v1/audit", params={"per_page": 100, **params}, headers=city.headers(who)
    )
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_writes_and_denials_are_audited_with_request_ids(city: City) -> None:
    handle = city.product("parkeasy", tier="public")
    entries = _entries(city, "parkeasy")
    actions = [e["action"] for e in entries]
    assert "product.create" in actions and "product.publish" in actions
    create = next(e for e in entries if e["action"] == "product.create")
    assert create["target"] == f"product:{handle}" and create["outcome"] == "ok"
    assert create["actor"].startswith("key:") and len(create["request_id"]) >= 8
    # A denial: lowering a tier as the owner.
    city.client.patch(
        f"/api/v1/products/{handle}", json={"tier": "restricted"}, headers=city.headers("parkeasy")
    )
    r = city.client.patch(
        f"/api/v1/products/{handle}", json={"tier": "public"}, headers=city.headers("parkeasy")
    )
    assert r.status_code == 403
    denied = [e for e in _entries(city, "parkeasy") if e["outcome"] == "deny"]
    assert denied and denied[0]["request_id"] == r.headers["x-request-id"]
    # A bad key is audited too (anonymous actor).
    city.client.get("/api/v1/me", headers={"Authorization": "Bearer cbk_000000000000_" + "x" * 43})
    op_view = _entries(city, "data-bureau", action="access.deny")
    assert any(
        e["actor"] == "anonymous" and e["detail"].get("reason") == "unknown" for e in op_view
    )


def test_tenants_read_only_their_own_entries(city: City) -> None:
    city.product("traffic-police", tier="secret", name="secret-plan")
    mine = _entries(city, "parkeasy")
    assert all(e["tenant"] == "parkeasy" for e in mine)
    assert not any("secret-plan" in e["target"] for e in mine)
    assert _entries(city, "parkeasy", tenant="traffic-police") == []
    everyone = _entries(city, "data-bureau")
    assert {e["tenant"] for e in everyone} > {"parkeasy", "traffic-police"}
    only = _entries(city, "data-bureau", tenant="traffic-police")
    assert only and all(e["tenant"] == "traffic-police" for e in only)


def _cli_verify(settings: Settings) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "audit", "verify"])
    return result.exit_code, result.output


def test_verify_passes_on_an_intact_log(city: City, settings: Settings) -> None:
    code, out = _cli_verify(settings)
    assert code == 0, out
    assert "intact" in out


@pytest.mark.parametrize("tamper", ["alter", "delete", "delete-last", "reorder"])
def test_verify_names_the_first_bad_entry(city: City, settings: Settings, tamper: str) -> None:
    with transaction(city.session_factory) as s:
        n = s.execute(text("SELECT max(seq) FROM audit_entry")).scalar_one()
        assert n > 10
        if tamper == "alter":
            s.execute(text("UPDATE audit_entry SET actor = 'mallory' WHERE seq = 5"))
            bad = 5
        elif tamper == "delete":
            s.execute(text("DELETE FROM audit_entry WHERE seq = 7"))
            bad = 7
        elif tamper == "delete-last":
            s.execute(text("DELETE FROM audit_entry WHERE seq = :n"), {"n": n})
            bad = n
        else:
            # Swap the contents of entries 3 and 4 (keeping seq order), as a reordering would.
            cols = (
                "at, request_id, actor, tenant_id, action, target, outcome, detail, prev_hash, hash"
            )
            s.execute(
                text(
                    f"CREATE TEMP TABLE swap AS SELECT seq, {cols} FROM audit_entry WHERE seq IN (3, 4)"
                )
            )
            for col in cols.split(", "):
                s.execute(
                    text(
                        f"UPDATE audit_entry SET {col} = (SELECT {col} FROM swap WHERE swap.seq = 7 - audit_entry.seq) "
                        "WHERE seq IN (3, 4)"
                    )
                )
            s.execute(text("DROP TABLE swap"))
            bad = 3
    with transaction(city.session_factory) as s:
        result = verify_chain(s)
    assert not result.ok and result.bad_seq == bad, result
    code, out = _cli_verify(settings)
    assert code == 1
    assert f"entry {bad}" in out


def test_reading_another_tenants_non_public_listing_is_an_audited_allow(city: City) -> None:
    handle = city.product("health", tier="restricted")
    public = city.product("health", tier="public")
    assert (
        city.client.get(f"/api/v1/products/{handle}", headers=city.headers("parkeasy")).status_code
        == 200
    )
    assert (
        city.client.get(f"/api/v1/products/{public}", headers=city.headers("parkeasy")).status_code
        == 200
    )
    allows = [e for e in _entries(city, "parkeasy") if e["action"] == "access.allow"]
    assert [e["target"] for e in allows] == [f"product:{handle}"]
    assert allows[0]["outcome"] == "allow" and allows[0]["detail"]["tier"] == "restricted"
