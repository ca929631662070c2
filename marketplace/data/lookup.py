"""A read's dataset look-ups, cached: the listing, the data version and the product's key.

What a query needs to know of a dataset before it runs is mostly caller-independent and
changes rarely: the product's owner, kind, tier and state, the data version's snapshot and
schema (immutable once written), the product's pseudonym key. :class:`DatasetCache` keeps
those answers (missing ones included) for a short TTL and is cleared at once by any catalog
write committed in this process (:func:`invalidate_on_catalog_writes`), as the inference
gateway's resolution cache is; writes by other processes are seen after at most the TTL.
Who may read what (visibility, the tier rule, the grant in force and the columns it unmasks)
is decided on every call by ``marketplace.data.service``: grants are never cached, so a
revoked grant stops unmasking on the very next query.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from marketplace.catalog.service import HANDLE_RE
from marketplace.data.schema import ColumnSpec
from marketplace.tables import Product, ProductMaskKey, ProductVersion, Tenant

__all__ = [
    "DataVersionInfo",
    "DatasetCache",
    "ResolvedDataset",
    "invalidate_on_catalog_writes",
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


_MISSING: Any = object()


class DatasetCache:
    """A small TTL cache of :class:`ResolvedDataset` (and of "no such product"), cleared by
    catalog writes. Thread-safe; ``generation`` keeps a look-up that started before a clear
    from storing its stale answer after it."""

    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[tuple[str, int | None], tuple[float, ResolvedDataset | None]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def get(self, key: tuple[str, int | None]) -> Any:
        """The cached answer (None: no such product), or a sentinel when nothing is cached."""
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return _MISSING
        return hit[1]

    def put(
        self, key: tuple[str, int | None], value: ResolvedDataset | None, generation: int
    ) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()


_WATCHED = (Product, ProductVersion, ProductMaskKey, Tenant)


def invalidate_on_catalog_writes(factory: sessionmaker[Session], cache: DatasetCache) -> None:
    """Clear ``cache`` whenever a session from ``factory`` commits a product, version, key or
    tenant change (tier, state, a new version, a deletion...)."""

    def after_flush(session: Session, _ctx: Any) -> None:
        for obj in (*session.new, *session.dirty, *session.deleted):
            if isinstance(obj, _WATCHED):
                session.info["data_catalog_changed"] = True
                return

    def after_commit(session: Session) -> None:
        if session.info.pop("data_catalog_changed", False):
            cache.clear()

    def after_rollback(session: Session, _transaction: Any) -> None:
        session.info.pop("data_catalog_changed", None)

    event.listen(factory, "after_flush", after_flush)
    event.listen(factory, "after_commit", after_commit)
    event.listen(factory, "after_soft_rollback", after_rollback)


def resolve_dataset(
    session: Session, cache: DatasetCache | None, handle: str, version: int | None
) -> ResolvedDataset | None:
    """The product ``handle`` names and its addressed data version (None: no such product).

    The answer says nothing about who may see or read it."""
    if cache is None:
        return _load(session, handle, version)
    key = (handle, version)
    hit = cache.get(key)
    if hit is not _MISSING:
        resolved: ResolvedDataset | None = hit
        return resolved
    generation = cache.generation
    resolved = _load(session, handle, version)
    cache.put(key, resolved, generation)
    return resolved


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
    m = HANDLE_RE.match(handle)
    if not m:
        return None
    slug, name = m.groups()
    found = session.execute(
        select(Product.id, Product.tenant_id, Product.kind, Product.tier, Product.state)
        .join(Tenant, Tenant.id == Product.tenant_id)
        .where(Tenant.slug == slug, Product.name == name)
    ).first()
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
