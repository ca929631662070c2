"""Full-text search with facets: PostgreSQL tsvector + GIN, SQLite FTS5.

Both index title, tags and description (PostgreSQL: the generated ``product.search_vector``;
SQLite: the external-content table ``product_fts`` kept in step by triggers). Every query term
must match, as a prefix; results are ranked (title above tags above description).

Facet counts are computed over exactly the rows the caller may see and the filters select, so
they never reveal a hidden listing. Without a text query or tag filter they come from
``product_facet`` (counts kept by triggers), so browsing costs the same at any catalog size;
with one, from a single pass over the matches (GROUPING SETS on PostgreSQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    String,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.orm import Session

from marketplace.catalog.policy import visible_clause
from marketplace.catalog.service import ProductFilter, filtered_query
from marketplace.context import Caller
from marketplace.models import Product, Tenant, product_facet

_TERM_RE = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 12
FACETS = ("kind", "domain", "tier")


@dataclass(slots=True)
class SearchResult:
    products: list[Product]
    count: int
    facets: dict[str, dict[str, int]]


def query_terms(q: str | None) -> list[str]:
    return _TERM_RE.findall((q or "").lower())[:MAX_TERMS]


def _fts_match(terms: list[str]) -> str:
    # Each term is \\w+ only, so quoting it makes FTS5 treat it as a plain token prefix.
    return " AND ".join(f'"{t}"*' for t in terms)


def _facets_from_counts(
    session: Session, caller: Caller, flt: ProductFilter
) -> dict[str, dict[str, int]]:
    c = product_facet.c
    stmt = select(c.kind, c.domain, c.tier, func.sum(c.n)).where(visible_clause(caller, c), c.n > 0)
    if flt.kind:
        stmt = stmt.where(c.kind == flt.kind)
    if flt.domain:
        stmt = stmt.where(c.domain == flt.domain)
    if flt.tier:
        stmt = stmt.where(c.tier == flt.tier)
    if flt.state:
        stmt = stmt.where(c.state == flt.state)
    if flt.owner:
        stmt = stmt.where(
            c.tenant_id == select(Tenant.id).where(Tenant.slug == flt.owner).scalar_subquery()
        )
    facets: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    for kind, domain, tier, n in session.execute(stmt.group_by(c.kind, c.domain, c.tier)):
        for name, value in (("kind", kind), ("domain", domain), ("tier", tier)):
            facets[name][value] = facets[name].get(value, 0) + int(n)
    return facets


def _facets_from_matches(session: Session, stmt: Any) -> dict[str, dict[str, int]]:
    sub = stmt.with_only_columns(Product.kind, Product.domain, Product.tier).subquery()
    facets: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    if session.get_bind().dialect.name == "postgresql":
        # One pass over the matches for all three facets.
        grouped = select(sub.c.kind, sub.c.domain, sub.c.tier, func.count()).group_by(
            func.grouping_sets(tuple_(sub.c.kind), tuple_(sub.c.domain), tuple_(sub.c.tier))
        )
        for kind, domain, tier, n in session.execute(grouped):
            name, value = (
                ("kind", kind) if kind else ("domain", domain) if domain else ("tier", tier)
            )
            facets[name][value] = n
        return facets
    for name in FACETS:
        col = sub.c[name]
        for value, n in session.execute(select(col, func.count()).group_by(col)):
            facets[name][value] = n
    return facets


def _pg_ranked_search(
    session: Session, stmt: Any, tsq: Any, *, offset: int, limit: int
) -> tuple[list[Product], dict[str, dict[str, int]]]:
    """One statement, one pass over the matches: facet counts and the ranked page together."""
    vector: Any = literal_column("product.search_vector")
    m = stmt.with_only_columns(
        Product.id, Product.kind, Product.domain, Product.tier, func.ts_rank(vector, tsq).label("r")
    ).cte("m")
    null_text = literal(None, String)
    facet_rows = select(
        m.c.kind,
        m.c.domain,
        m.c.tier,
        func.count().label("n"),
        literal(None, Integer).label("id"),
        literal(None, Float).label("r"),
    ).group_by(func.grouping_sets(tuple_(m.c.kind), tuple_(m.c.domain), tuple_(m.c.tier)))
    page = (
        select(m.c.id, m.c.r).order_by(m.c.r.desc(), m.c.id.desc()).offset(offset).limit(limit)
    ).subquery("page")
    page_rows = select(null_text, null_text, null_text, literal(None, Integer), page.c.id, page.c.r)
    facets: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    ids: list[int] = []
    for kind, domain, tier, n, pid, _rank in session.execute(union_all(facet_rows, page_rows)):
        if pid is not None:
            ids.append(pid)
        elif kind:
            facets["kind"][kind] = n
        elif domain:
            facets["domain"][domain] = n
        elif tier:
            facets["tier"][tier] = n
    if not ids:
        return [], facets
    by_id = {p.id: p for p in session.scalars(select(Product).where(Product.id.in_(ids)))}
    return [by_id[i] for i in ids if i in by_id], facets


def search_products(
    session: Session, caller: Caller, q: str | None, flt: ProductFilter, *, offset: int, limit: int
) -> SearchResult:
    terms = query_terms(q)
    dialect = session.get_bind().dialect.name
    stmt = filtered_query(caller, flt, dialect=dialect)
    order: list[Any] = [Product.updated_at.desc(), Product.id.desc()]
    if terms and dialect == "postgresql":
        tsq = func.to_tsquery("simple", " & ".join(f"{t}:*" for t in terms))
        stmt = stmt.where(literal_column("product.search_vector").op("@@")(tsq))
        products, facets = _pg_ranked_search(session, stmt, tsq, offset=offset, limit=limit)
        return SearchResult(products, sum(facets["kind"].values()), facets)
    if terms:
        ranked = (
            text(
                "SELECT rowid AS id, bm25(product_fts, 5.0, 2.0, 1.0) AS score FROM product_fts "
                "WHERE product_fts MATCH :match"
            )
            .bindparams(match=_fts_match(terms))
            .columns(id=Product.id.type)
            .subquery("fts")
        )
        stmt = stmt.join(ranked, ranked.c.id == Product.id)
        order = [literal_column("fts.score").asc(), Product.id.desc()]
    if terms or flt.tag:
        facets = _facets_from_matches(session, stmt)
    else:
        facets = _facets_from_counts(session, caller, flt)
    total = sum(facets["kind"].values())
    rows = list(session.scalars(stmt.order_by(*order).offset(offset).limit(limit))) if total else []
    return SearchResult(products=rows, count=total, facets=facets)
