"""Full-text search with facets: PostgreSQL tsvector + GIN, SQLite FTS5.

Both index title, tags and description (PostgreSQL: the generated ``product.search_vector``;
SQLite: the external-content table ``product_fts`` kept in step by triggers). Every query term
must match, as a prefix. Facet counts are computed over exactly the rows the caller may see and
the filters select, so they never reveal a hidden listing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal_column, select, text
from sqlalchemy.orm import Session

from marketplace.catalog.service import ProductFilter, filtered_query
from marketplace.context import Caller
from marketplace.models import Product

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


def _text_filtered(
    session: Session, caller: Caller, flt: ProductFilter, terms: list[str]
) -> tuple[Any, Any]:
    """(statement, rank expression or None) for the visible, filtered, matching products."""
    stmt = filtered_query(caller, flt)
    if not terms:
        return stmt, None
    if session.get_bind().dialect.name == "postgresql":
        tsq = func.to_tsquery("simple", " & ".join(f"{t}:*" for t in terms))
        vector: Any = literal_column("product.search_vector")
        stmt = stmt.where(vector.op("@@")(tsq))
        return stmt, func.ts_rank(vector, tsq)
    match = " AND ".join(f'"{t}"*' for t in terms)
    stmt = stmt.where(
        Product.id.in_(
            text("SELECT rowid FROM product_fts WHERE product_fts MATCH :match").bindparams(
                match=match
            )
        )
    )
    return stmt, None


def search_products(
    session: Session, caller: Caller, q: str | None, flt: ProductFilter, *, offset: int, limit: int
) -> SearchResult:
    terms = query_terms(q)
    stmt, rank = _text_filtered(session, caller, flt, terms)
    sub = stmt.with_only_columns(Product.id, Product.kind, Product.domain, Product.tier).subquery()
    facets: dict[str, dict[str, int]] = {name: {} for name in FACETS}
    total = 0
    for name in FACETS:
        col = sub.c[name]
        for value, n in session.execute(select(col, func.count()).group_by(col)):
            facets[name][value] = n
    total = sum(facets["kind"].values())
    if rank is not None:
        order: list[Any] = [rank.desc(), Product.id.desc()]
    else:
        order = [Product.updated_at.desc(), Product.id.desc()]
    if terms and rank is None:
        # SQLite: order by bm25 via the FTS table.
        match = " AND ".join(f'"{t}"*' for t in terms)
        ranked = (
            text(
                "SELECT rowid AS id, bm25(product_fts, 5.0, 2.0, 1.0) AS score FROM product_fts "
                "WHERE product_fts MATCH :match"
            )
            .bindparams(match=match)
            .columns(id=Product.id.type)
            .subquery("fts")
        )
        stmt = stmt.join(ranked, ranked.c.id == Product.id)
        order = [literal_column("fts.score").asc(), Product.id.desc()]
    rows = list(session.scalars(stmt.order_by(*order).offset(offset).limit(limit)))
    return SearchResult(products=rows, count=total, facets=facets)
