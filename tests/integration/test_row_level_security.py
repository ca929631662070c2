"""PostgreSQL row-level security: the database hides other tenants' rows even from raw SQL.

The application's checks are the first wall; these tests bypass them entirely and issue raw
SQL in a transaction bound to one tenant, as ``marketplace.db.set_tenant_context`` binds
every API request.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import Session

from billing.tables import usage_event
from marketplace.db import set_tenant_context, transaction
from marketplace.tenants.service import get_tenant_by_slug
from tests.utils.city import City


def _ids(city: City) -> dict[str, int]:
    with transaction(city.session_factory) as s:
        return {slug: get_tenant_by_slug(s, slug).id for slug in city.keys}


def _as(city: City, slug: str, ids: dict[str, int]) -> Session:
    session = city.session_factory()
    set_tenant_context(
        session,
        tenant_id=ids[slug],
        government=slug != "parkeasy",
        operator=slug == "data-bureau",
    )
    return session


@pytest.fixture
def populated(city: City) -> dict[str, int]:
    ids = _ids(city)
    city.product("traffic-police", tier="secret", name="plates-secret")
    city.product("traffic-police", tier="confidential", name="plates-conf")
    city.product("traffic-police", tier="public", name="draft-one", publish=False)
    restricted = city.product("traffic-police", tier="restricted", name="shared-one")
    city.grant("xihu-district", restricted, "traffic-police", purpose="joint ops")
    with transaction(city.session_factory) as s:
        for slug in ("traffic-police", "parkeasy"):
            s.execute(
                insert(usage_event).values(
                    tenant_id=ids[slug],
                    id=f"evt-{slug}",
                    key_id=None,
                    product="x.y",
                    product_id=1,
                    version=1,
                    unit="call",
                    quantity=1,
                    at=datetime.now(UTC),
                    latency_ms=1.0,
                    request_id="r",
                )
            )
    return ids


TENANT_TABLES = ("api_key", "usage_event", "audit_entry", "access_request", "access_grant")


def test_another_tenants_rows_are_invisible_to_raw_sql(
    city: City, populated: dict[str, int]
) -> None:
    a = populated["traffic-police"]
    with _as(city, "parkeasy", populated) as s:
        assert s.execute(text("SELECT current_user")).scalar() == "citybrain_tenant"
        for table in TENANT_TABLES:
            n = s.execute(
                text(f"SELECT count(*) FROM {table} WHERE tenant_id = :a"), {"a": a}
            ).scalar()
            assert n == 0, table
        names = set(
            s.execute(text("SELECT name FROM product WHERE tenant_id = :a"), {"a": a}).scalars()
        )
        assert names and not names & {"plates-secret", "plates-conf", "draft-one"}
        assert "shared-one" in names  # restricted and published: any tenant may see the listing
        # Its own rows are there.
        assert s.execute(text("SELECT count(*) FROM api_key")).scalar() >= 1
        assert s.execute(text("SELECT count(*) FROM usage_event")).scalar() == 1


def test_the_owner_and_a_government_tenant_see_what_the_tiers_allow(
    city: City, populated: dict[str, int]
) -> None:
    a = populated["traffic-police"]
    with _as(city, "traffic-police", populated) as s:
        for table in ("api_key", "usage_event", "audit_entry"):
            n = s.execute(
                text(f"SELECT count(*) FROM {table} WHERE tenant_id = :a"), {"a": a}
            ).scalar()
            assert n and n > 0, table  # the filter really matches rows when they are one's own
        # The request and grant for its product, though they belong to another tenant.
        assert s.execute(text("SELECT count(*) FROM access_request")).scalar() == 1
        assert s.execute(text("SELECT count(*) FROM access_grant")).scalar() == 1
    with _as(city, "xihu-district", populated) as s:
        names = set(
            s.execute(text("SELECT name FROM product WHERE tenant_id = :a"), {"a": a}).scalars()
        )
        assert "plates-conf" in names and "plates-secret" not in names and "draft-one" not in names
    with _as(city, "data-bureau", populated) as s:
        names = set(
            s.execute(text("SELECT name FROM product WHERE tenant_id = :a"), {"a": a}).scalars()
        )
        assert "plates-secret" not in names  # not even the operator
        assert s.execute(text("SELECT count(*) FROM usage_event")).scalar() == 2


def test_writes_into_another_tenant_are_refused(city: City, populated: dict[str, int]) -> None:
    a = populated["traffic-police"]
    with (
        _as(city, "parkeasy", populated) as s,
        pytest.raises(ProgrammingError, match="row-level security"),
    ):
        s.execute(
            text(
                "INSERT INTO api_key (id, tenant_id, name, scopes, secret_hash, created_at)"
                " VALUES ('feedfeedfeed', :a, 'x', '[]', 'h', now())"
            ),
            {"a": a},
        )
    with _as(city, "parkeasy", populated) as s:
        n = s.execute(
            text("UPDATE product SET title = 'mine' WHERE tenant_id = :a"), {"a": a}
        ).rowcount
        assert n == 0
    with _as(city, "traffic-police", populated) as s:
        # The audit log is append-only even for its own tenant.
        assert (
            s.execute(
                text("UPDATE audit_entry SET actor = 'x' WHERE tenant_id = :a"), {"a": a}
            ).rowcount
            == 0
        )
        assert (
            s.execute(text("DELETE FROM audit_entry WHERE tenant_id = :a"), {"a": a}).rowcount == 0
        )


def test_anonymous_sees_public_listings_only(city: City, populated: dict[str, int]) -> None:
    with city.session_factory() as s:
        set_tenant_context(s, tenant_id=0)
        tiers = set(s.execute(text("SELECT DISTINCT tier FROM product")).scalars())
        assert tiers == {"public"}
        assert s.execute(text("SELECT count(*) FROM api_key")).scalar() == 0


def test_a_datasets_pseudonym_key_is_readable_by_its_owner_alone(city: City) -> None:
    from tests.utils.datasets import Datasets

    ids = _ids(city)
    handle = Datasets(city).dataset("traffic-police", tier="public")
    count = "SELECT count(*) FROM product_mask_key k JOIN product p ON p.id = k.product_id"
    name = handle.split(".", 1)[1]
    for slug, expected in (("traffic-police", 1), ("parkeasy", 0), ("data-bureau", 0)):
        with _as(city, slug, ids) as s:
            seen = s.execute(text(f"{count} WHERE p.name = :n"), {"n": name}).scalar_one()
            assert seen == expected, slug
    with _as(city, "parkeasy", ids) as s:
        product_id = s.execute(
            text("SELECT id FROM product WHERE name = :n"), {"n": name}
        ).scalar_one()
        with pytest.raises(ProgrammingError):
            s.execute(
                text(
                    "INSERT INTO product_mask_key (product_id, key, created_at) VALUES (:p, :k, now())"
                ),
                {"p": product_id, "k": b"x" * 32},
            )
