"""The search-side tables of migration 0009 on PostgreSQL: kept in step with ``product`` by
its triggers through every kind of write, and out of the tenant role's reach.

``product_facet`` (facet counts), ``product_term_count`` (the same per lexeme) and
``product_term`` (title and tag lexemes, with each product's facet key) must always equal a
recount from ``product`` itself; the API suites check what searches return from them.
"""

from __future__ import annotations

import json
import random

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from marketplace.catalog import search
from marketplace.catalog.service import ProductFilter
from marketplace.context import Caller, Principal
from marketplace.db import set_tenant_context, transaction
from marketplace.tenants.service import get_tenant_by_slug
from tests.utils.city import City

FACET_KEY = "tenant_id, state, tier, kind, domain"
TERMS = (
    "SELECT u.lexeme, CASE WHEN 'A' = ANY (u.weights) THEN 2 ELSE 1 END::smallint AS w,"
    f" p.id, p.{FACET_KEY.replace(', ', ', p.')}"
    " FROM product p, unnest(p.search_vector) u WHERE u.weights && ARRAY['A', 'B']"
)
# (what the table holds, what a recount from product gives)
TABLES = {
    "product_facet": (
        f"SELECT {FACET_KEY}, n FROM product_facet WHERE n <> 0",
        f"SELECT {FACET_KEY}, count(*) FROM product GROUP BY {FACET_KEY}",
    ),
    "product_term_count": (
        f"SELECT lexeme, {FACET_KEY}, n FROM product_term_count WHERE n <> 0",
        f"SELECT l, {FACET_KEY}, count(*)"
        " FROM product, unnest(tsvector_to_array(search_vector)) AS l"
        f" GROUP BY l, {FACET_KEY}",
    ),
    "product_term": (f"SELECT lexeme, w, product_id, {FACET_KEY} FROM product_term", TERMS),
}


def _differences(city: City) -> dict[str, int]:
    """Rows in one of (table, recount) and not in the other, per table."""
    with city.session_factory() as s:
        return {
            table: int(
                s.execute(
                    text(f"SELECT count(*) FROM (({kept}) EXCEPT ({recount})) a")
                ).scalar_one()
                + s.execute(
                    text(f"SELECT count(*) FROM (({recount}) EXCEPT ({kept})) b")
                ).scalar_one()
            )
            for table, (kept, recount) in TABLES.items()
        }


def _rows(city: City, table: str) -> int:
    with city.session_factory() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


NONE = dict.fromkeys(TABLES, 0)


def test_the_search_tables_follow_every_kind_of_write(city: City) -> None:
    owner = "traffic-police"
    for i, tier in enumerate(("public", "restricted", "confidential", "secret")):
        city.product(owner, tier=tier, name=f"t{i}", title=f"Signal timing {tier}", tags=["signal"])
    draft = city.product("parkeasy", name="draft", title="Parking signal", publish=False)
    assert _rows(city, "product_term") > 0 and _differences(city) == NONE
    # Through the API: text, tags, tier (raised by the owner, lowered by the operator), state.
    edits = [
        (owner, "patch", "t0", {"title": "Signal phases", "tags": ["timing", "phase"]}),
        (owner, "patch", "t0", {"description": "every signal phase, hourly"}),
        (owner, "patch", "t1", {"tier": "confidential"}),
        ("data-bureau", "patch", "t1", {"tier": "public"}),
        (owner, "patch", "t2", {"domain": "safety"}),
        (owner, "deprecate", "t0", None),
    ]
    for who, action, name, body in edits:
        handle = f"{owner}.{name}"
        if action == "patch":
            r = city.client.patch(
                f"/api/v1/products/{handle}", json=body, headers=city.headers(who)
            )
        else:
            r = city.client.post(f"/api/v1/products/{handle}/{action}", headers=city.headers(who))
        assert r.status_code == 200, r.text
        assert _differences(city) == NONE, (who, action, name, body)
    r = city.client.delete(f"/api/v1/products/{draft}", headers=city.headers("parkeasy"))
    assert r.status_code == 204, r.text
    assert _differences(city) == NONE
    # Statements that write many products at once (one trigger call each).
    with transaction(city.session_factory) as s:
        tenant = get_tenant_by_slug(s, "health").id
        s.execute(
            text(
                "INSERT INTO product (tenant_id, name, kind, title, description, domain, tags,"
                " tags_text, tier, license, state, created_at, updated_at)"
                " SELECT :t, 'bulk-' || i, 'model', 'Bulk signal ' || i, 'words ' || (i % 3),"
                " 'health', '[\"bulk\"]', 'bulk', 'public', '', 'published', now(), now()"
                " FROM generate_series(1, 40) i"
            ),
            {"t": tenant},
        )
    assert _differences(city) == NONE
    for statement in (
        "UPDATE product SET state = 'draft' WHERE name LIKE 'bulk-1%'",
        "UPDATE product SET tier = 'secret', kind = 'dataset' WHERE name LIKE 'bulk-2%'",
        "UPDATE product SET title = title || ' extra', tags_text = 'bulk more'"
        " WHERE name LIKE 'bulk-3%'",
        "UPDATE product SET updated_at = now()",  # changes nothing the tables hold
        "UPDATE product SET tenant_id = (SELECT id FROM tenant WHERE slug = 'tourism')"
        " WHERE name = 'bulk-5'",
        "DELETE FROM product WHERE name LIKE 'bulk-4%'",
    ):
        with transaction(city.session_factory) as s:
            s.execute(text(statement))
        assert _differences(city) == NONE, statement
    # A rolled-back write leaves them as they were.
    with city.session_factory() as s:
        s.execute(text("DELETE FROM product WHERE name LIKE 'bulk%'"))
        s.rollback()
    assert _differences(city) == NONE and _rows(city, "product_term") > 0
    with transaction(city.session_factory) as s:
        s.execute(text("TRUNCATE product CASCADE"))
    assert [_rows(city, t) for t in TABLES] == [0, 0, 0]


def test_the_tenant_role_cannot_read_the_search_tables(city: City) -> None:
    city.product("traffic-police", tier="secret", name="hidden", title="Covert plates")
    with transaction(city.session_factory) as s:
        tid = get_tenant_by_slug(s, "parkeasy").id
    for table in ("product_term", "product_term_count"):
        with city.session_factory() as s:
            set_tenant_context(s, tenant_id=tid)
            with pytest.raises(ProgrammingError, match="permission denied"):
                s.execute(text(f"SELECT lexeme FROM {table}"))
    # Yet a tenant's own writes keep them in step (the trigger runs as their owner).
    city.product("parkeasy", name="mine", title="Kerbside sensors")
    assert _differences(city) == NONE


WORDS = [
    "bus", "business", "busy", "bus-lane", "traffic", "tram", "trams", "air", "airport",
    "quality", "river", "1e5", "xylophone", "hotel", "hotline", "park", "parking", "flood",
]  # fmt: skip


def _corpus(city: City, n: int = 240) -> None:
    """Products over every tenant, tier, state, kind and domain, their words drawn from a few
    that share prefixes (so a prefix stands for several, some products holding two)."""
    rnd = random.Random(5)
    with transaction(city.session_factory) as s:
        tenants = list(s.execute(text("SELECT id FROM tenant ORDER BY id")).scalars())
        for i in range(n):
            tags = sorted(set(rnd.choices(WORDS, k=rnd.randint(0, 2))))
            s.execute(
                text(
                    "INSERT INTO product (tenant_id, name, kind, title, description, domain, tags,"
                    " tags_text, tier, license, state, created_at, updated_at) VALUES (:t,"
                    " :name, :kind, :title, :desc, :domain, :tags, :tags_text, :tier, '', :state,"
                    " now(), now())"
                ),
                {
                    "t": rnd.choice(tenants),
                    "name": f"c{i}",
                    "kind": rnd.choice(["dataset", "model"]),
                    "title": " ".join(rnd.choices(WORDS, k=2)),
                    "desc": " ".join(rnd.choices(WORDS, k=4)),
                    "domain": rnd.choice(["traffic", "health", "tourism"]),
                    "tags": json.dumps(tags),
                    "tags_text": " ".join(tags),
                    "tier": rnd.choice(
                        ["public", "public", "restricted", "confidential", "secret"]
                    ),
                    "state": rnd.choice(["published"] * 4 + ["draft", "submitted", "deprecated"]),
                },
            )


def test_one_word_answers_equal_those_of_a_pass_over_the_matches(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every one-word query the per-term tables answer, they answer exactly as the general
    path (one pass over the GIN matches) does: the same count, facets and page."""
    _corpus(city)
    with transaction(city.session_factory) as s:
        callers: list[Caller] = [None]
        for slug in ("parkeasy", "xihu-district", "data-bureau", "traffic-police"):
            t = get_tenant_by_slug(s, slug)
            callers.append(Principal(tenant_id=t.id, tenant_slug=t.slug, tenant_kind=t.kind))
    filters = [
        ProductFilter(),
        ProductFilter(kind="model"),
        ProductFilter(domain="tourism", tier="restricted"),
        ProductFilter(owner="traffic-police"),
        ProductFilter(owner="nobody"),
    ]
    queries = ["bus", "busi", "b", "tra", "tram", "air", "hot", "1e5", "1e5x", "zzz", "park"]
    pages = [(0, 5), (5, 5), (0, 40), (30, 20)]
    with city.session_factory() as s:
        answers = [
            search.search_products(s, caller, q, flt, offset=offset, limit=limit)
            for caller in callers
            for flt in filters
            for q in queries
            for offset, limit in pages
        ]
        monkeypatch.setattr(search, "MAX_TERM_PAGE_DEPTH", 0)  # the general path, always
        general = [
            search.search_products(s, caller, q, flt, offset=offset, limit=limit)
            for caller in callers
            for flt in filters
            for q in queries
            for offset, limit in pages
        ]
    assert sum(1 for a in answers if a.count) > len(answers) // 3  # not all empty
    for a, g in zip(answers, general, strict=True):
        assert (a.count, a.facets) == (g.count, g.facets)
        assert [p.id for p in a.products] == [p.id for p in g.products]
    # The parser splits '1e5x' into '1e5' followed by 'x…': no lexeme starts with '1e5x', yet
    # a product with '1e5' then 'xylophone' matches, as it would without the tables.
    with city.session_factory() as s:
        found = search.search_products(s, None, "1e5x", ProductFilter(), offset=0, limit=5)
        phrase = s.execute(
            text(
                "SELECT count(*) FROM product WHERE search_vector @@ to_tsquery('simple', '1e5x:*')"
                " AND state IN ('published', 'deprecated') AND tier = 'public'"
            )
        ).scalar_one()
    assert found.count == phrase


def test_words_matched_as_their_lexemes_answer_as_their_prefixes(
    city: City, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass over the matches looks a plain word up as the catalog's lexemes it is a prefix
    of (exact GIN look-ups, which intersect), not as the prefix itself: the answers must be
    those of the prefix, for several words, one word whose page goes past its title and tag
    matches, a word with no lexeme, one the parser splits ('1e5x') and one whose lexemes are
    not all plain ('bus' holds 'bus-lane', so it stays a prefix)."""
    _corpus(city)
    with transaction(city.session_factory) as s:
        callers: list[Caller] = [None]
        for slug in ("parkeasy", "data-bureau", "traffic-police"):
            t = get_tenant_by_slug(s, slug)
            callers.append(Principal(tenant_id=t.id, tenant_slug=t.slug, tenant_kind=t.kind))
    filters = [ProductFilter(), ProductFilter(domain="tourism", tier="restricted")]
    queries = ["tra air", "tram park", "busi hot", "air 1e5", "1e5x park", "zzz air", "b tra"]
    queries += ["park parking", "hotel", "tra", "bus"]
    pages = [(0, 5), (5, 5), (0, 40)]

    def answers() -> list[tuple[int, object, list[int]]]:
        with city.session_factory() as s:
            return [
                (r.count, r.facets, [p.id for p in r.products])
                for r in (
                    search.search_products(s, caller, q, flt, offset=offset, limit=limit)
                    for caller in callers
                    for flt in filters
                    for q in queries
                    for offset, limit in pages
                )
            ]

    with city.session_factory() as s:
        expanded = search._expand(s, ["tra", "bus", "zzz", "1e5x", "hotel"])
    assert expanded == (("traffic", "tram", "trams"), "bus", ("zzz",), "1e5x", ("hotel",))
    exact = answers()
    monkeypatch.setattr(search, "_exact", lambda term, *_: term)  # every word a prefix
    prefix = answers()
    assert sum(1 for count, _, _ in exact if count) > len(exact) // 3  # not all empty
    assert exact == prefix


def test_a_session_bound_to_a_tenant_searches_without_the_search_tables(city: City) -> None:
    """Under the tenant role (row-level security, as CKAN's actions run) the search-side
    tables cannot be read: one word on a small page, one on a large page and several words
    are answered from ``product`` alone, as an unbound session answers them."""
    _corpus(city)
    with transaction(city.session_factory) as s:
        t = get_tenant_by_slug(s, "parkeasy")
        caller = Principal(tenant_id=t.id, tenant_slug=t.slug, tenant_kind=t.kind)
    for q, limit in (("tra", 5), ("tra", 2000), ("tram park", 5), ("bus", 40)):
        with city.session_factory() as s:
            free = search.search_products(s, caller, q, ProductFilter(), offset=0, limit=limit)
        with city.session_factory() as s:
            set_tenant_context(s, tenant_id=t.id)
            bound = search.search_products(s, caller, q, ProductFilter(), offset=0, limit=limit)
        assert free.count > 0, q
        assert (bound.count, bound.facets) == (free.count, free.facets), q
        assert [p.id for p in bound.products] == [p.id for p in free.products], q
