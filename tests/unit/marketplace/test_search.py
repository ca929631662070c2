"""Full-text search with facets (SQLite FTS5 here; PostgreSQL tsvector in integration)."""

from __future__ import annotations

import pytest

from tests.utils.city import City

pytestmark = pytest.mark.databases("sqlite", "postgresql")  # the API on both backends


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


# One-word queries (on PostgreSQL: the per-term tables of migration 0009, kept by triggers) must
# agree with the tier table for every caller class, follow every write, rank title above tags
# above description across pages, and count a product once however many of its words a prefix
# stands for.

GOVERNMENT = {"data-bureau", "traffic-police", "xihu-district", "health"}
VIEWERS = [None, "parkeasy", "xihu-district", "data-bureau", "traffic-police"]


def _may_see(viewer: str | None, owner: str, tier: str, state: str) -> bool:
    """The tier table, with drafts (the owner's alone) and submitted listings (also the
    operator's review queue, never secret ones), restated independently."""
    if viewer == owner:
        return True
    if state in ("published", "deprecated"):
        if tier == "public":
            return True
        if tier == "restricted":
            return viewer is not None
        if tier == "confidential":
            return viewer in GOVERNMENT
        return False
    return state == "submitted" and viewer == "data-bureau" and tier != "secret"


def _search(city: City, viewer: str | None, **params: str) -> dict:  # type: ignore[type-arg]
    r = city.client.get(
        "/api/v1/catalog/search", params={"per_page": "100", **params}, headers=city.headers(viewer)
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _facets(rows: list[tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    facets: dict[str, dict[str, int]] = {"kind": {}, "domain": {}, "tier": {}}
    for row in rows:
        for name, value in zip(("kind", "domain", "tier"), row, strict=True):
            facets[name][value] = facets[name].get(value, 0) + 1
    return facets


def test_one_word_counts_and_facets_follow_the_tier_table_for_every_caller(city: City) -> None:
    made: dict[
        str, tuple[str, str, str, str, str]
    ] = {}  # handle → owner, tier, state, kind, domain
    for i, (owner, tier, state, kind, domain, where) in enumerate(
        [
            ("traffic-police", "public", "published", "dataset", "traffic", "title"),
            ("traffic-police", "restricted", "published", "model", "traffic", "tags"),
            ("traffic-police", "confidential", "published", "dataset", "safety", "description"),
            ("traffic-police", "secret", "published", "model", "safety", "title"),
            ("traffic-police", "public", "draft", "dataset", "traffic", "title"),
            ("traffic-police", "restricted", "submitted", "dataset", "health", "title"),
            ("parkeasy", "public", "published", "model", "traffic", "description"),
            ("parkeasy", "secret", "draft", "dataset", "credit", "tags"),
            ("health", "confidential", "published", "model", "health", "title"),
            ("health", "public", "deprecated", "dataset", "health", "tags"),
        ]
    ):
        text_fields = {
            "title": "Quokka census" if where == "title" else f"Listing {i}",
            "description": "counts of quokkas" if where == "description" else "",
            "tags": ["quokka"] if where == "tags" else [],
        }
        handle = city.product(
            owner,
            tier=tier,
            kind=kind,
            domain=domain,
            name=f"quokka-{i}",
            publish=state in ("published", "deprecated"),
            **text_fields,
        )
        if state == "submitted":
            r = city.client.post(f"/api/v1/products/{handle}/submit", headers=city.headers(owner))
            assert r.status_code == 200, r.text
        if state == "deprecated":
            r = city.client.post(
                f"/api/v1/products/{handle}/deprecate", headers=city.headers(owner)
            )
            assert r.status_code == 200, r.text
        made[handle] = (owner, tier, state, kind, domain)
    city.product("tourism", name="other-word", title="Kangaroo census")  # no quokka in it
    filters: list[dict[str, str]] = [
        {},
        {"kind": "model"},
        {"domain": "traffic"},
        {"tier": "confidential"},
        {"owner": "traffic-police"},
        {"owner": "traffic-police", "kind": "dataset", "tier": "public"},
    ]
    for viewer in VIEWERS:
        for flt in filters:
            expected = {
                h: (kind, domain, tier)
                for h, (owner, tier, state, kind, domain) in made.items()
                if _may_see(viewer, owner, tier, state)
                and flt.get("kind", kind) == kind
                and flt.get("domain", domain) == domain
                and flt.get("tier", tier) == tier
                and flt.get("owner", owner) == owner
            }
            for q in ("quokka", "quok", "QUOKKA"):
                body = _search(city, viewer, q=q, **flt)
                assert body["count"] == len(expected), (viewer, flt, q)
                assert _handles(body) == set(expected), (viewer, flt, q)
                assert body["facets"] == _facets(list(expected.values())), (viewer, flt, q)
                # A short page (which the title and tag matches alone may fill) counts the same.
                first = _search(city, viewer, q=q, per_page="1", **flt)
                assert (first["count"], first["facets"]) == (body["count"], body["facets"])
                assert first["data"] == body["data"][:1]


def test_one_word_ranks_title_then_tags_then_description_on_every_page(city: City) -> None:
    title = [
        city.product("tourism", name=f"t{i}", title=f"Platypus sightings {i}") for i in range(3)
    ]
    tags = [city.product("tourism", name=f"g{i}", tags=["platypus"]) for i in range(3)]
    desc = [
        city.product("tourism", name=f"d{i}", description=f"platypus burrows {i}") for i in range(3)
    ]
    # Within each, newest first.
    expected = title[::-1] + tags[::-1] + desc[::-1]
    whole = [p["handle"] for p in _search(city, None, q="platypus")["data"]]
    assert whole == expected
    for per_page in (1, 2, 4):
        pages = []
        for page in range(1, 10 // per_page + 2):
            body = _search(city, None, q="platyp", per_page=str(per_page), page=str(page))
            assert body["count"] == 9
            pages += [p["handle"] for p in body["data"]]
        assert pages == expected, per_page


def test_a_prefix_of_several_words_counts_each_product_once(city: City) -> None:
    both = city.product("environment", name="both", title="Wombat wombats", tags=["wombatology"])
    one = city.product("environment", name="one", title="Burrows", description="wombats asleep")
    tag = city.product("tourism", name="tag", tags=["wombatology"], domain="tourism")
    hidden = city.product("environment", name="hid", tier="secret", title="Wombat wombats")
    for q, found in (
        ("womb", {both, one, tag}),
        ("wombat", {both, one, tag}),
        ("wombats", {both, one}),
    ):
        body = _search(city, None, q=q)
        assert body["count"] == len(found) and _handles(body) == found, q
        assert len(body["data"]) == len(found)
        assert sum(body["facets"]["tier"].values()) == len(found)
        # Page by page (a page the title and tag matches fill is answered from them alone).
        pages = [_search(city, None, q=q, per_page="1", page=str(i)) for i in (1, 2, 3)]
        assert [p["count"] for p in pages] == [len(found)] * 3, q
        assert all(p["facets"] == body["facets"] for p in pages), q
        assert [h for p in pages for h in _handles(p)] == [p["handle"] for p in body["data"]]
        owner = _search(city, "environment", q=q, per_page="1")
        assert owner["count"] == len(found) + 1, q
        assert hidden in _handles(_search(city, "environment", q=q))
    body = _search(city, None, q="womb", domain="tourism", per_page="1")
    assert body["count"] == 1 and body["facets"]["domain"] == {"tourism": 1}


def test_search_follows_edits_tier_and_state_changes_and_deletes(city: City) -> None:
    owner = "traffic-police"
    handle = city.product(owner, name="narwhal", title="Narwhal tracks", tags=["arctic"])
    draft = city.product(owner, name="draft", title="Narwhal draft", publish=False)

    def found(viewer: str | None, q: str) -> tuple[int, set[str], dict[str, int]]:
        body = _search(city, viewer, q=q)
        return body["count"], _handles(body), body["facets"]["tier"]

    assert found(None, "narwhal") == (1, {handle}, {"public": 1})
    assert found(owner, "narwhal") == (2, {handle, draft}, {"public": 2})
    # Raise the tier: out of the anonymous view, still in a developer's.
    r = city.client.patch(
        f"/api/v1/products/{handle}", json={"tier": "restricted"}, headers=city.headers(owner)
    )
    assert r.status_code == 200, r.text
    assert found(None, "narwhal") == (0, set(), {})
    assert found("parkeasy", "narwhal") == (1, {handle}, {"restricted": 1})
    # The operator lowers it again.
    r = city.client.patch(
        f"/api/v1/products/{handle}", json={"tier": "public"}, headers=city.headers("data-bureau")
    )
    assert r.status_code == 200, r.text
    assert found(None, "narwhal") == (1, {handle}, {"public": 1})
    # New text: the old words go, the new ones come (title, then tags).
    r = city.client.patch(
        f"/api/v1/products/{handle}",
        json={"title": "Beluga tracks", "tags": ["narwhal"]},
        headers=city.headers(owner),
    )
    assert r.status_code == 200, r.text
    assert found(None, "beluga") == (1, {handle}, {"public": 1})
    assert found(None, "arctic") == (0, set(), {})
    assert found(None, "narwhal") == (1, {handle}, {"public": 1})  # now by its tag
    # Deprecated listings stay listed; deleted drafts go.
    r = city.client.post(f"/api/v1/products/{handle}/deprecate", headers=city.headers(owner))
    assert r.status_code == 200, r.text
    assert found("parkeasy", "beluga") == (1, {handle}, {"public": 1})
    r = city.client.delete(f"/api/v1/products/{draft}", headers=city.headers(owner))
    assert r.status_code == 204, r.text
    assert found(owner, "narwhal") == (1, {handle}, {"public": 1})
    assert found(owner, "draft") == (0, set(), {})
