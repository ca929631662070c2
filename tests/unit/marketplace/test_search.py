"""Full-text search with facets (SQLite FTS5 here; PostgreSQL tsvector in integration)."""

from __future__ import annotations

from tests.utils.city import City


def _handles(body: dict) -> set[str]:  # type: ignore[type-arg]
    return {p["handle"] for p in body["data"]}


def test_search_matches_title_description_and_tags_by_prefix(city: City) -> None:
    a = city.product(
        "tourism",
        title="Hotel occupancy",
        description="Nightly occupancy of hotels",
        tags=["lodging"],
        domain="tourism",
    )
    b = city.product(
        "parkeasy",
        title="Charging stations",
        description="EV chargers near hotels",
        tags=["ev"],
        domain="traffic",
    )
    c = city.product(
        "environment",
        title="Noise levels",
        description="Decibels",
        tags=["hotel-zones"],
        domain="environment",
    )
    r = city.client.get("/api/v1/catalog/search?q=hotel").json()
    assert {a, b, c} <= _handles(r)
    r = city.client.get("/api/v1/catalog/search?q=lodg").json()
    assert _handles(r) == {a}
    r = city.client.get("/api/v1/catalog/search?q=hotels%20chargers").json()
    assert _handles(r) == {b}
    # Title matches rank above description matches.
    r = city.client.get("/api/v1/catalog/search?q=occupancy").json()
    assert r["data"][0]["handle"] == a


def test_search_filters_and_facets(city: City) -> None:
    city.product("tourism", title="Museum tickets", domain="tourism", tags=["museum"])
    city.product(
        "tourism", title="Museum crowding model", domain="tourism", kind="model", tags=["museum"]
    )
    city.product(
        "health",
        title="Museum first aid posts",
        domain="health",
        tags=["museum"],
        tier="restricted",
    )
    anon = city.client.get("/api/v1/catalog/search?q=museum").json()
    assert anon["count"] == 2
    assert anon["facets"]["kind"] == {"dataset": 1, "model": 1}
    assert anon["facets"]["domain"] == {"tourism": 2}
    assert anon["facets"]["tier"] == {"public": 2}
    dev = city.client.get(
        "/api/v1/catalog/search?q=museum", headers=city.headers("parkeasy")
    ).json()
    assert dev["count"] == 3 and dev["facets"]["tier"] == {"public": 2, "restricted": 1}
    only_models = city.client.get("/api/v1/catalog/search?q=museum&kind=model").json()
    assert only_models["count"] == 1 and only_models["data"][0]["kind"] == "model"
    by_tag = city.client.get("/api/v1/catalog/search?tag=museum&owner=tourism").json()
    assert by_tag["count"] == 2


def test_search_paginates_and_tolerates_odd_queries(city: City) -> None:
    for i in range(5):
        city.product("parkeasy", title=f"Garage {i}", tags=["garage"])
    page1 = city.client.get("/api/v1/catalog/search?q=garage&per_page=2").json()
    page3 = city.client.get("/api/v1/catalog/search?q=garage&per_page=2&page=3").json()
    assert page1["count"] == 5 and len(page1["data"]) == 2 and len(page3["data"]) == 1
    for q in ('"', "AND OR NOT", "*", "garage:*", "(", "' OR 1=1 --", "停车"):
        r = city.client.get("/api/v1/catalog/search", params={"q": q})
        assert r.status_code == 200, (q, r.text)


def test_seeded_catalog_is_searchable(city: City) -> None:
    r = city.client.get("/api/v1/catalog/search?q=air").json()
    assert "environment.air-quality" in _handles(r)
