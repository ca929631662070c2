"""What the open-data exports read: the listings a caller may see, with their versions.

The same rule as every catalog read (``catalog.policy.visible_clause``; anonymous callers get
the public catalog), limited to listed products (published or deprecated): an export is the
catalog as others find it, so an owner's drafts stay out of it. A version's data facts
(sha256, rows, bytes, quality score) come from the data-products columns where they exist,
else from the version's stored metadata, else they are left out.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.catalog.policy import LISTED_STATES, visible_clause
from marketplace.context import Caller
from marketplace.tables import Product, ProductVersion, Tenant


@dataclass(frozen=True, slots=True)
class DataFacts:
    """What a version says about its bytes; each ``None`` where it is not known."""

    sha256: str | None
    rows: int | None
    bytes: int | None
    quality_score: float | None


def listed_products(session: Session, caller: Caller) -> list[Product]:
    """Every listed product the caller may see, by handle."""
    stmt = (
        select(Product)
        .join(Tenant)
        .where(visible_clause(caller), Product.state.in_(LISTED_STATES))
        .order_by(Tenant.slug, Product.name)
    )
    return list(session.scalars(stmt))


def versions_of(session: Session, products: list[Product]) -> dict[int, list[ProductVersion]]:
    """The products' versions, oldest first, by product id."""
    out: dict[int, list[ProductVersion]] = defaultdict(list)
    if not products:
        return out
    stmt = (
        select(ProductVersion)
        .where(ProductVersion.product_id.in_([p.id for p in products]))
        .order_by(ProductVersion.product_id, ProductVersion.version)
    )
    for v in session.scalars(stmt):
        out[v.product_id].append(v)
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def data_facts(version: ProductVersion) -> DataFacts:
    meta: dict[str, Any] = dict(version.meta or {})
    digest = getattr(version, "data_digest", None) or meta.get("sha256")
    rows = getattr(version, "data_rows", None)
    size = getattr(version, "data_bytes", None)
    quality = getattr(version, "quality", None) or meta.get("quality") or {}
    score = quality.get("score") if isinstance(quality, dict) else quality
    rows_n = _number(rows if rows is not None else meta.get("rows"))
    size_n = _number(size if size is not None else meta.get("bytes"))
    sha = str(digest).removeprefix("sha256:") if digest else None
    return DataFacts(
        sha256=sha if sha and len(sha) == 64 else None,
        rows=None if rows_n is None else int(rows_n),
        bytes=None if size_n is None else int(size_n),
        quality_score=_number(score),
    )
