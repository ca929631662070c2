"""The one catalog look-up cache (model resolution and dataset look-ups share it): answers are
kept for the TTL, a committed change to a watched table clears it at once, a rolled-back one
or one to another table does not, and a look-up that raced a clear never stores its answer."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session, sessionmaker

from marketplace.catalog.cache import MISSING, CatalogCache, invalidate_on_catalog_writes
from marketplace.tables import FederationState, Product, Tenant


def test_answers_are_kept_and_negative_ones_too() -> None:
    cache: CatalogCache[str, int | None] = CatalogCache(ttl_s=60)
    loads: list[str] = []

    def load(key: str, value: int | None) -> int | None:
        loads.append(key)
        return value

    assert cache.lookup("a", lambda: load("a", 1)) == 1
    assert cache.lookup("a", lambda: load("a", 2)) == 1
    assert cache.lookup("gone", lambda: load("gone", None)) is None
    assert cache.lookup("gone", lambda: load("gone", 3)) is None
    assert loads == ["a", "gone"]
    assert cache.get("a") == 1 and cache.get("never") is MISSING


def test_a_zero_ttl_caches_nothing() -> None:
    cache: CatalogCache[str, int] = CatalogCache(ttl_s=0)
    answers = iter([1, 2])
    assert cache.lookup("a", lambda: next(answers)) == 1
    assert cache.lookup("a", lambda: next(answers)) == 2


def test_a_lookup_that_raced_a_clear_does_not_store_its_stale_answer() -> None:
    cache: CatalogCache[str, str] = CatalogCache(ttl_s=60)

    def stale_load() -> str:
        cache.clear()  # a catalog write commits while this look-up reads the old state
        return "stale"

    assert cache.lookup("a", stale_load) == "stale"
    assert cache.get("a") is MISSING
    assert cache.lookup("a", lambda: "fresh") == "fresh"
    assert cache.get("a") == "fresh"


def test_the_cache_is_bounded() -> None:
    cache: CatalogCache[int, int] = CatalogCache(ttl_s=60, max_entries=3)
    for i in range(5):
        cache.lookup(i, lambda i=i: i)  # type: ignore[misc]
    assert sum(cache.get(i) is not MISSING for i in range(5)) <= 3


@pytest.mark.databases("sqlite", "postgresql")
def test_committed_writes_to_watched_tables_clear_it_and_nothing_else_does(
    session_factory: sessionmaker[Session],
) -> None:
    models: CatalogCache[str, str] = CatalogCache(ttl_s=3600)
    datasets: CatalogCache[str, str] = CatalogCache(ttl_s=3600)
    invalidate_on_catalog_writes(session_factory, models, (Product, Tenant))
    invalidate_on_catalog_writes(session_factory, datasets, (Product,))

    def fill() -> None:
        models.lookup("k", lambda: "v")
        datasets.lookup("k", lambda: "v")

    with session_factory() as session:
        tenant = Tenant(slug="cache-probe", name="Cache probe", kind="enterprise")
        session.add(tenant)
        session.commit()
        fill()
        # A change to a table neither watches: both keep their answers.
        session.add(FederationState(name="probe", value={"n": 1}))
        session.commit()
        assert models.get("k") == datasets.get("k") == "v"
        # A rolled-back change to a watched table clears nothing.
        tenant.name = tenant.name + " (renamed)"
        session.flush()
        session.rollback()
        assert models.get("k") == datasets.get("k") == "v"
        # A committed tenant change clears the cache that watches tenants, only that one.
        tenant.name = tenant.name + " (renamed)"
        session.commit()
        assert models.get("k") is MISSING
        assert datasets.get("k") == "v"
        # A committed product change clears both, each by its own flag.
        fill()
        session.add(
            Product(
                tenant_id=tenant.id,
                kind="dataset",
                name="probe-cache",
                title="Probe",
                domain="traffic",
                tier="public",
                state="draft",
            )
        )
        session.commit()
        assert models.get("k") is MISSING and datasets.get("k") is MISSING
