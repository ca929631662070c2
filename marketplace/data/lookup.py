"""A read's dataset look-ups, cached: the listing, the data version and the product's key.

What a query needs to know of a dataset before it runs is mostly caller-independent and
changes rarely: the product's owner, kind, tier and state, the data version's snapshot and
schema (immutable once written), the product's pseudonym key. A :data:`DatasetCache` keeps
those answers (missing ones included) for a short TTL and is cleared at once by any catalog
write committed in this process (``marketplace.catalog.cache``, the inference gateway's
resolution cache's class); writes by other processes are seen after at most the TTL.
Who may read what (visibility, the tier rule, the grant in force and the columns it unmasks)
is decided on every call by ``marketplace.data.service``: grants are never cached, so a
revoked grant stops unmasking on the very next query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeAlias

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.catalog.cache import CatalogCache
from marketplace.catalog.service import by_handle
from marketplace.data.schema import ColumnSpec
from marketplace.tables import Product, ProductMaskKey, ProductVersion, Tenant

__all__ = [
    "WATCHED",
    "DataVersionInfo",
    "DatasetCache",
    "ResolvedDataset",
    "resolve_dataset",
]


@dataclass(frozen=True, slots=True)
class DataVersionInfo:
    """A data version as a read needs it (immutable once written).

    Attributes:
        version: Its number.
        digest: ``sha256:<hex>`` of its Parquet snapshot.
        rows: Rows in the snapshot.
        bytes: The snapshot's size.
        blocked: A blocking quality rule failed: only the owner reads it.
        columns: Its columns as stored.
        signature: The stored schema, canonical JSON: with the digest, everything a compiled
            query over this version depends on besides the plan and the caller's view.
    """

    version: int
    digest: str
    rows: int
    bytes: int
    blocked: bool
    columns: tuple[ColumnSpec, ...]
    signature: str


@dataclass(frozen=True, slots=True)
class ResolvedDataset:
    """A product by handle and the data version a read addresses.

    Attributes:
        listing: A detached ``Product`` (id, tenant_id, kind, tier, state) for the policy.
        row: The addressed version: the newest unblocked data version when none is named;
            None when there is no such data version.
        mask_key: The product's pseudonym key (None before its first data version).
    """

    listing: Product
    row: DataVersionInfo | None
    mask_key: bytes | None


DatasetCache: TypeAlias = CatalogCache[tuple[str, int | None], ResolvedDataset | None]
"""Look-ups by (handle, version number or None for the newest), negative ones included."""

WATCHED = (Product, ProductVersion, ProductMaskKey, Tenant)
"""The tables whose committed changes clear a :data:`DatasetCache`."""


def resolve_dataset(
    session: Session, cache: DatasetCache | None, handle: str, version: int | None
) -> ResolvedDataset | None:
    """The product ``handle`` names and its addressed data version (None: no such product).

    The answer says nothing about who may see or read it."""
    if cache is None:
        return _load(session, handle, version)
    return cache.lookup((handle, version), lambda: _load(session, handle, version))


def _info(row: ProductVersion) -> DataVersionInfo:
    assert row.data_digest is not None
    raw = (row.data_schema or {}).get("columns", [])
    return DataVersionInfo(
        version=row.version,
        digest=row.data_digest,
        rows=int(row.data_rows or 0),
        bytes=int(row.data_bytes or 0),
        blocked=bool(row.blocked),
        columns=tuple(ColumnSpec.model_validate(c) for c in raw),
        signature=json.dumps(raw, sort_keys=True, ensure_ascii=True),
    )


def _load(session: Session, handle: str, version: int | None) -> ResolvedDataset | None:
    query = by_handle(
        handle, Product.id, Product.tenant_id, Product.kind, Product.tier, Product.state
    )
    found = session.execute(query).first() if query is not None else None
    if found is None:
        return None
    listing = Product(
        id=found.id, tenant_id=found.tenant_id, kind=found.kind, tier=found.tier, state=found.state
    )
    stmt = select(ProductVersion).where(
        ProductVersion.product_id == found.id, ProductVersion.data_digest.is_not(None)
    )
    if version is None:
        stmt = (
            stmt.where(ProductVersion.blocked.is_(False))
            .order_by(ProductVersion.version.desc())
            .limit(1)
        )
    else:
        stmt = stmt.where(ProductVersion.version == version)
    row = session.scalar(stmt)
    key = session.get(ProductMaskKey, found.id)
    return ResolvedDataset(
        listing=listing,
        row=_info(row) if row is not None else None,
        mask_key=bytes(key.key) if key is not None else None,
    )
